"""How well a shapes-world model follows prompts, measured from the pixels on held-out prompts.

Loads a model folder offline with ``StableDiffusionPipeline.from_pretrained``, generates held-out prompts
(attribute combinations the training never drew; see ``tools/shapes/dataset.py``) with fixed seeds, and scores
background colour, foreground colour, shape, size and position with ``tools/shapes/metrics.py``. Usage:

    python bench/eval_shapes.py MODEL_DIR [--prompts 256] [--steps 20] [--guidance 5 7.5] [--sampler Euler "DPM++ 2M"]
                                [--card] [--markdown FILE] [--grid FILE.png] [--device cpu|cuda] [--threads 2]
                                [--dtype float32|bfloat16]

Without ``--sampler`` / ``--steps`` / ``--guidance`` it uses the defaults recorded in the model's
``training_config.json``. ``--card`` replaces the accuracy table in the model's README.md with this run's.

``--forms`` reports every prompt form separately instead (full, no size, no position, no background, colour +
shape + background, bare colour + shape, reordered, "center"; ``tools.shapes.dataset.EVALUATION_FORMS``), each on
combinations held out for that form, at the card's default CFG and at CFG 7, scored only on what the form names,
with the issue's targets marked; ``--per-form`` sets the prompts per form and CFG (200; lower for a quick look),
``--form`` picks forms by name. With ``--card`` the table goes between the card's forms-table markers::

    python bench/eval_shapes.py MODEL_DIR --forms [--per-form 200] [--guidance 4.5 7] [--form "reordered"] [--card]
                                [--write-into README.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TABLE_START = "| | background |"
from tools.shapes import metrics  # noqa: E402  (after the path insert; numpy only, no torch)
from tools.shapes.train import FORMS_END, FORMS_START  # noqa: E402


def recorded_defaults(model: Path) -> dict:
    """Sampler, steps and guidance the model's card recommends (the trainer records them)."""
    path = model / "training_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    recommended = config.get("recommended", {})
    return {"sampler": recommended.get("sampler", "Euler"), "steps": recommended.get("steps", 20),
            "guidance": recommended.get("guidance", 3.0), "rows": config.get("rows", 3)}


def replace_table(card: Path, table: str) -> None:
    """Swap the first accuracy table of a model card (or append one) for ``table``."""
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith(TABLE_START)), None)
    if start is None:
        card.write_text(text.rstrip("\n") + "\n\n" + table + "\n", encoding="utf-8")
        return
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    card.write_text("\n".join(lines[:start] + table.split("\n") + lines[end:]), encoding="utf-8")


def replace_forms_table(card: Path, table: str) -> None:
    """Put ``table`` between the card's forms-table markers (appended with its markers when there are none)."""
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    block = f"{FORMS_START}\n{table}\n{FORMS_END}"
    if FORMS_START in text and FORMS_END in text:
        before, rest = text.split(FORMS_START, 1)
        after = rest.split(FORMS_END, 1)[1]
        card.write_text(before + block + after, encoding="utf-8")
    else:
        card.write_text(text.rstrip("\n") + "\n\n" + block + "\n", encoding="utf-8")


def print_form_result(result: metrics.FormResult, seconds_per_image: float) -> None:
    """One line per (form, CFG) while the forms run (the whole table comes at the end)."""
    acc = result.tally.accuracy()
    scores = ", ".join(f"{a} {100 * acc[a]:.1f}" for a in (*metrics.ATTRIBUTES, "all") if result.tally.is_scored(a))
    print(f"{result.form.name}, CFG {result.guidance:g}: {scores} ({seconds_per_image * 1000:.0f} ms per image)",
          flush=True)


def save_grid(images: list, path: Path, columns: int = 16) -> None:
    """The first rows of generated images side by side, for a look by eye."""
    import numpy as np
    from PIL import Image

    rows = [np.concatenate([np.asarray(im) for im in images[r:r + columns]], axis=1)
            for r in range(0, len(images) - columns + 1, columns)][:8]
    if rows:
        Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--steps", type=int, nargs="+")
    parser.add_argument("--guidance", type=float, nargs="+")
    parser.add_argument("--sampler", nargs="+")
    parser.add_argument("--seed", type=int, default=1234, help="picks the prompts' order and their seeds")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="weights and compute of the UNet and text encoder (the VAE stays float32 with "
                             "bfloat16, as in the studio)")
    parser.add_argument("--card", action="store_true", help="write the table into MODEL/README.md")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--grid", type=Path, help="save the first run's images as one PNG")
    parser.add_argument("--by-kind", action="store_true",
                        help="also tabulate the first run's shapes by asked size and shape (what the checker read)")
    parser.add_argument("--forms", action="store_true", help="report every prompt form separately")
    parser.add_argument("--per-form", type=int, default=200, help="prompts per form and CFG with --forms")
    parser.add_argument("--form", action="append", help="with --forms: only this form (repeatable)")
    parser.add_argument("--write-into", type=Path, action="append", default=[],
                        help="with --forms: also replace the forms table between the markers in this file "
                             "(e.g. README.md; repeatable)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(args.threads)
    defaults = recorded_defaults(args.model)
    from modules.runtime.memory import MemoryOptions, apply_memory_options

    pipe = StableDiffusionPipeline.from_pretrained(str(args.model), torch_dtype=torch.float32,
                                                   local_files_only=True)
    apply_memory_options(pipe, MemoryOptions(), args.device, getattr(torch, args.dtype))  # as the studio does
    pipe.set_progress_bar_config(disable=True)
    if args.forms:
        from tools.shapes import dataset as world

        forms = [world.form_by_name(name) for name in args.form] if args.form else list(world.EVALUATION_FORMS)
        guidances = args.guidance or [defaults["guidance"], metrics.HIGH_CFG]
        sampler, steps = (args.sampler or [defaults["sampler"]])[0], (args.steps or [defaults["steps"]])[0]
        results, images = metrics.evaluate_forms(
            pipe, forms, args.per_form, steps=steps, guidances=list(dict.fromkeys(guidances)),
            default_guidance=defaults["guidance"], sampler=sampler, batch_size=args.batch_size, seed=args.seed,
            rows=defaults["rows"], report=print_form_result)
        table = metrics.forms_table(results, sampler, steps)
        print(table)
        if args.markdown:
            args.markdown.write_text(table + "\n", encoding="utf-8")
        for path in [args.model / "README.md"] * args.card + args.write_into:
            replace_forms_table(path, table)
        if args.grid and images:
            save_grid(images, args.grid)
        return 0
    rows, first_images = {}, None
    for sampler in args.sampler or [defaults["sampler"]]:
        for steps in args.steps or [defaults["steps"]]:
            for guidance in args.guidance or [defaults["guidance"]]:
                started = time.perf_counter()
                result, images = metrics.evaluate(pipe, args.prompts, steps=steps, guidance=guidance,
                                                  sampler=sampler, batch_size=args.batch_size, seed=args.seed,
                                                  rows=defaults["rows"])
                seconds = time.perf_counter() - started
                name = f"{sampler}, {steps} steps, CFG {guidance:g}"
                rows[name] = result
                first_images = first_images or images
                print(f"{name}: {seconds / args.prompts * 1000:.0f} ms per image (batches of {args.batch_size})",
                      flush=True)
    table = metrics.markdown_table(rows)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    if args.card:
        replace_table(args.model / "README.md", table)
    if args.by_kind and first_images:
        from tools.shapes import dataset as world

        # the cases metrics.evaluate drew for the first run (the same count, seed and rows every run)
        cases = world.evaluation_cases(args.prompts, args.seed, defaults["rows"])
        print(metrics.readings_table(metrics.shape_readings(first_images, [spec for spec, _ in cases])))
    if args.grid and first_images:
        save_grid(first_images, args.grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
