"""How well the embedded ControlNet hands shape, size and position to the control image and colours to the prompt.

Builds diffusers' ``StableDiffusionControlNetPipeline`` from a base model folder and a ControlNet folder (local
files only) and generates held-out cases (combinations the training never drew, for the control image and for the
prompt; ``tools/shapes/dataset.py``) with one fixed seed each, at the base model's recommended sampler, steps and
CFG and at CFG 7. Each case's control image is a clean 2 px scribbled outline of the held-out shape; the prompt
(a) agrees with it, or (b) names another held-out combination's shape, size and/or position with the same
colours. ``tools/shapes/metrics.py`` reads the result from the pixels: shape, size and position are scored against
the control image, the two colours against the prompt. Extra rows (no targets) try hand-drawn scribbles, the
studio's canny preprocessor (on the image at 64 px, and at 512 px resized to 64) and silhouettes with the
disagreeing prompt, and the base model alone (control weight 0) as the baseline; a sanity line checks that
weight 0 gives the base model's pixels. The control mode column is the sd-webui-controlnet extension's, applied by
the studio's own hooks (``modules/controlnet/apply.py``): "ControlNet is more important" is the mode an A1111 user
picks when the prompt and the control image disagree at a high CFG, so its rows are held to the targets too. Usage::

    python bench/eval_controlnet.py MODEL_CONTROLNET --base models/Stable-diffusion/sfumato-shapes [--cases 200]
                                    [--card] [--markdown FILE] [--threads 2] [--batch-size 16]

``--card`` writes the tables between the markers of MODEL_CONTROLNET/README.md and saves samples.png beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402  (after the path insert)

from bench.eval_shapes import recorded_defaults  # noqa: E402
from tools.shapes import dataset as world  # noqa: E402
from tools.shapes import metrics  # noqa: E402
from tools.shapes_controlnet import control as ctl  # noqa: E402
from tools.shapes_controlnet.data import heldout_conflict  # noqa: E402

# What the issue asks (percent): shape, size and position follow the control image, colours the prompt.
TARGETS: dict[str, float] = {"position": 95.0, "size": 95.0, "shape": 90.0, "foreground": 97.0,
                             "background": 97.0}
HIGH_CFG = 7.0
BALANCED = "Balanced"
CONTROL_WINS = "ControlNet is more important"
COLUMNS = ("background", "foreground", "shape", "size", "position", "all")


@dataclass(frozen=True)
class Case:
    """One held-out case: the control image's combination and exact box, the prompt's combination, a seed."""

    control_spec: world.ShapeSpec
    box: tuple[float, float, float, float]
    prompt_spec: world.ShapeSpec
    seed: int

    @property
    def truth(self) -> np.ndarray:
        """The dataset's image of the control combination in its box (what canny runs on)."""
        return ctl.render_in_box(self.control_spec, self.box)


def make_cases(count: int, seed: int, rows: int, conflict: bool) -> list[Case]:
    """``count`` held-out cases; with ``conflict`` the prompt names another combination than the control image."""
    cases = []
    for spec, case_seed in world.evaluation_cases(count, seed, rows):
        box = ctl.draw_box(spec, np.random.default_rng(case_seed))
        prompt = heldout_conflict(spec, case_seed, rows) if conflict else spec
        cases.append(Case(spec, box, prompt, case_seed))
    return cases


EXTRA_KINDS: tuple[str, ...] = ("hand-drawn", "canny", "canny 512 px", "silhouette")


def control_image(case: Case, kind: str):
    """The case's control image (PIL RGB, 64 px unless said): a clean scribble, a hand-drawn one, the studio's
    canny preprocessor on the image at 64 px, or at 512 px resized to 64 by the studio's "Crop and Resize", or
    a filled silhouette."""
    from PIL import Image

    if kind == "hand-drawn":
        rng = np.random.default_rng([case.seed, 5])
        stroke = ctl.Stroke(width=float(rng.uniform(1.0, 3.0)), wobble=float(rng.uniform(0.5, 1.5)))
        return Image.fromarray(ctl.to_rgb(ctl.scribble(case.control_spec.shape, case.box, stroke, rng)))
    if kind.startswith("canny"):
        from modules.controlnet.apply import fit
        from modules.controlnet.preprocessors import run

        size = 512 if kind == "canny 512 px" else world.IMAGE_SIZE
        picture = world.render(case.control_spec, np.random.default_rng(case.seed), image_size=size)
        edges = run("canny", Image.fromarray(picture), resolution=size).convert("RGB")
        return fit(edges, (world.IMAGE_SIZE, world.IMAGE_SIZE), "Crop and Resize")
    return Image.fromarray(ctl.to_rgb(ctl.control_for(kind, case.control_spec, case.box, case.truth)))


def generate(pipe, cases: Sequence[Case], kind: str, *, steps: int, guidance: float, weight: float = 1.0,
             batch_size: int = 16, mode: str = BALANCED) -> list:
    """Images (PIL) for the cases, each from its own seeded generator, in the given control mode."""
    import torch

    from modules.controlnet.apply import mode_hook

    images = []
    for start in range(0, len(cases), batch_size):
        chunk = cases[start:start + batch_size]
        hook = pipe.controlnet.register_forward_hook(mode_hook([mode], len(chunk)))
        try:
            output = pipe([c.prompt_spec.caption() for c in chunk], image=[control_image(c, kind) for c in chunk],
                          num_inference_steps=steps, guidance_scale=guidance, controlnet_conditioning_scale=weight,
                          generator=[torch.Generator("cpu").manual_seed(c.seed) for c in chunk],
                          height=world.IMAGE_SIZE, width=world.IMAGE_SIZE, output_type="pil")
        finally:
            hook.remove()
        images += output.images
    return images


def box_iou(a: tuple[float, float, float, float] | None, b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes (0 when ``a`` is None)."""
    if a is None:
        return 0.0
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Row:
    """One (prompt group, control kind, CFG, control mode) run: its tally, mean box IoU with the control,
    targets, timing."""

    group: str
    kind: str
    guidance: float
    tally: metrics.Tally
    iou: float
    targets: dict[str, float]
    seconds_per_image: float
    mode: str = BALANCED

    def failures(self) -> list[str]:
        acc = self.tally.accuracy()
        return [a for a, t in self.targets.items() if 100 * acc[a] < t - 1e-9]


def score(images: list, cases: Sequence[Case]) -> tuple[metrics.Tally, float]:
    """Shape, size and position against the control image; colours against the prompt; mean box IoU."""
    tally, ious = metrics.Tally(), []
    for image, case in zip(images, cases, strict=True):
        reading = metrics.measure(image)
        result = {
            "background": reading.background == case.prompt_spec.background,
            "foreground": reading.foreground == case.prompt_spec.colour,
            "shape": reading.shape == case.control_spec.shape,
            "size": reading.size == case.control_spec.size,
            "position": reading.position == case.control_spec.position,
        }
        result["all"] = all(result.values())
        tally.add(result)
        ious.append(box_iou(reading.box, case.box))
    return tally, float(np.mean(ious)) if ious else 0.0


def table(rows: Sequence[Row], sampler: str, steps: int) -> str:
    """The markdown table, one line per run; ✓ / ✗ against the targets where a run is held to them."""
    targets = ", ".join(f"{a} ≥ {t:g} %" for a, t in TARGETS.items())
    lines = [f"{sampler}, {steps} steps. Shape, size and position are scored against the control image, "
             f"background and foreground against the prompt. Targets (issue 13, rows marked ✓ / ✗): {targets}.", "",
             "| prompt | control image | control mode | CFG | background | foreground | shape | size | position "
             "| all five | box IoU | images | targets |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        acc = row.tally.accuracy()
        cells = []
        for name in COLUMNS:
            mark = (" ✗" if name in row.failures() else " ✓") if name in row.targets else ""
            cells.append(f"{100 * acc[name]:.1f} %{mark}")
        verdict = ("met" if not row.failures() else "missed: " + ", ".join(
            f"{a} by {row.targets[a] - 100 * acc[a]:.1f} pt" for a in row.failures())) if row.targets else "—"
        lines.append(f"| {row.group} | {row.kind} | {row.mode} | {row.guidance:g} | {' | '.join(cells)} | "
                     f"{row.iou:.2f} | {row.tally.total} | {verdict} |")
    return "\n".join(lines)


def weight_zero_check(pipe, cases: Sequence[Case], *, steps: int, guidance: float) -> tuple[int, int]:
    """(largest pixel difference, images) between control weight 0 and the base model without a ControlNet."""
    import torch
    from diffusers import StableDiffusionPipeline

    base = StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                   unet=pipe.unet, scheduler=pipe.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    base.set_progress_bar_config(disable=True)
    prompts = [c.prompt_spec.caption() for c in cases]
    plain = base(prompts, num_inference_steps=steps, guidance_scale=guidance, height=world.IMAGE_SIZE,
                 width=world.IMAGE_SIZE, generator=[torch.Generator("cpu").manual_seed(c.seed) for c in cases],
                 output_type="np").images
    zero = pipe(prompts, image=[control_image(c, "scribble") for c in cases], num_inference_steps=steps,
                guidance_scale=guidance, controlnet_conditioning_scale=0.0, height=world.IMAGE_SIZE,
                width=world.IMAGE_SIZE, generator=[torch.Generator("cpu").manual_seed(c.seed) for c in cases],
                output_type="np").images
    difference = np.abs(np.rint(plain * 255).astype(int) - np.rint(zero * 255).astype(int)).max()
    return int(difference), len(cases)


def save_samples(path: Path, cases: Sequence[Case], agree: list, conflict: list, columns: int = 8) -> None:
    """Control image / agreeing prompt / disagreeing prompt, one column per case, for a look by eye."""
    from PIL import Image

    strips = []
    for start in range(0, min(len(cases), 2 * columns), columns):
        chunk = range(start, min(start + columns, len(cases)))
        strips.append(np.concatenate([
            np.concatenate([np.asarray(control_image(cases[i], "scribble")) for i in chunk], axis=1),
            np.concatenate([np.asarray(agree[i]) for i in chunk], axis=1),
            np.concatenate([np.asarray(conflict[i]) for i in chunk], axis=1)], axis=0))
    Image.fromarray(np.concatenate(strips, axis=0)).save(path)


def load_pipeline(model: Path, base: Path, sampler: str):
    """The base model with the ControlNet, offline, float32, the recommended sampler as the A1111 name resolves."""
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    from modules.image.samplers import make_scheduler, resolve_sampler

    controlnet = ControlNetModel.from_pretrained(str(model), torch_dtype=torch.float32, local_files_only=True)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        str(base), controlnet=controlnet, torch_dtype=torch.float32, local_files_only=True, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler = make_scheduler(resolve_sampler(sampler), dict(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="the ControlNet folder")
    parser.add_argument("--base", type=Path, default=Path("models/Stable-diffusion/sfumato-shapes"))
    parser.add_argument("--cases", type=int, default=200, help="held-out cases per row")
    parser.add_argument("--seed", type=int, default=1234, help="picks the cases and their seeds")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-extras", action="store_true", help="only the rows held to the targets")
    parser.add_argument("--card", action="store_true", help="write the tables into MODEL/README.md")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    defaults = recorded_defaults(args.base)
    sampler, steps, guidance = defaults["sampler"], defaults["steps"], defaults["guidance"]
    pipe = load_pipeline(args.model, args.base, sampler)
    agree = make_cases(args.cases, args.seed, defaults["rows"], conflict=False)
    conflict = make_cases(args.cases, args.seed, defaults["rows"], conflict=True)
    changed = {a: sum(getattr(c.prompt_spec, a) != getattr(c.control_spec, a) for c in conflict)
               for a in ("shape", "size", "position")}
    cfgs = list(dict.fromkeys([guidance, HIGH_CFG]))
    runs = [(group, cases, "scribble", g, 1.0, True, mode) for mode in (BALANCED, CONTROL_WINS)
            for group, cases in (("(a) agrees", agree), ("(b) disagrees", conflict)) for g in cfgs]
    if not args.no_extras:
        runs += [("(b) disagrees", conflict, kind, guidance, 1.0, False, BALANCED) for kind in EXTRA_KINDS]
        runs.append(("(b) disagrees", conflict, "none (weight 0: the base model)", guidance, 0.0, False, BALANCED))
    rows, kept = [], {}
    for group, cases, kind, cfg, weight, held, mode in runs:
        clock = time.perf_counter()
        images = generate(pipe, cases, "scribble" if weight == 0 else kind, steps=steps, guidance=cfg,
                          weight=weight, batch_size=args.batch_size, mode=mode)
        tally, iou = score(images, cases)
        row = Row(group, kind, cfg, tally, iou, dict(TARGETS) if held else {},
                  (time.perf_counter() - clock) / max(1, len(cases)), mode)
        rows.append(row)
        kept.setdefault((group, kind), images)
        acc = tally.accuracy()
        print(f"{group}, {kind}, {mode}, CFG {cfg:g}: " + ", ".join(f"{a} {100 * acc[a]:.1f}" for a in COLUMNS) +
              f", box IoU {iou:.2f} ({row.seconds_per_image * 1000:.0f} ms per image)", flush=True)
    difference, checked = weight_zero_check(pipe, agree[:8], steps=steps, guidance=guidance)
    minutes = (time.perf_counter() - started) / 60
    sanity = (f"Weight 0 against the base model alone (`StableDiffusionPipeline`, same seeds, {checked} prompts): "
              f"largest pixel difference {difference} of 255"
              f"{' (identical)' if difference == 0 else ''}.")
    text = "\n".join([
        f"`python bench/eval_controlnet.py MODEL --base {args.base} --cases {args.cases}`: {args.cases} held-out "
        f"cases per row (combinations training never drew, for the control image and the prompt alike; one "
        f"fixed seed each). In (b) the prompt names another held-out combination with the same colours: a "
        f"different shape in {changed['shape']}, size in {changed['size']} and position in "
        f"{changed['position']} of the {len(conflict)} cases. Box IoU: the measured shape's bounding box against "
        f"the control image's. The evaluation took {minutes:.1f} minutes ({args.threads} CPU thread(s)).", "",
        table(rows, sampler, steps), "", sanity])
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    if args.card:
        from tools.shapes_controlnet.card import replace_between
        from tools.shapes_controlnet.train import EVAL_END, EVAL_START

        card = args.model / "README.md"
        save_samples(args.model / "samples.png", agree, kept[("(a) agrees", "scribble")],
                     kept[("(b) disagrees", "scribble")])
        body = text + ("\n\nSamples (control image; prompt agrees; prompt disagrees):\n\n![samples](samples.png)")
        card.write_text(replace_between(card.read_text(encoding="utf-8") if card.is_file() else "", EVAL_START,
                                        EVAL_END, body), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
