"""How well a sound-world model follows prompts, measured from the waveforms on held-out prompts.

Loads a model folder offline with ``DiffusionPipeline.from_pretrained``, generates 2-second clips for prompts of
the held-out combinations (never drawn in training; see ``tools/sound/world.py``) with fixed seeds, and measures
pitch, timbre, count of events and pitch contour back from each waveform with ``tools/sound/measures.py`` (pitch and
contour only where the prompt names them: not for noise). Usage::

    python bench/eval_sound.py MODEL_DIR [--prompts 240] [--steps 20] [--guidance 4 7] [--card]
                               [--write-into README.md] [--markdown FILE] [--threads 2]
    python bench/eval_sound.py --ground-truth [--prompts 240]   # the measures on the synthesised clips themselves
    python bench/eval_sound.py MODEL_DIR --reconstruct            # the clips through the model's autoencoder only
    python bench/eval_sound.py MODEL_DIR --card --with-reconstruction  # both rows, as in the card

Without ``--steps`` / ``--guidance`` it uses the defaults recorded in the model's ``training_config.json``.
``--card`` puts the table between the markers of the model's README.md, ``--write-into`` into other files too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.sound import measures, world  # noqa: E402  (after the path insert; numpy only, no torch)
from tools.sound.train import EVAL_END, EVAL_START  # noqa: E402

PROPERTIES = ("pitch", "timbre", "count", "contour")
TARGETS = {"pitch": 0.90, "timbre": 0.90, "count": 0.85, "contour": 0.85}
SECONDS_TARGET = 2.0


@dataclass
class Tally:
    """Right and scored counts per property (pitch and contour are not scored for noise)."""

    right: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*PROPERTIES, "all"), 0))
    scored: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*PROPERTIES, "all"), 0))

    def add(self, spec: world.SoundSpec, found: measures.Measured) -> None:
        every = True
        for name in PROPERTIES:
            if name in ("pitch", "contour") and spec.timbre == "noise":
                continue
            hit = getattr(found, name) == getattr(spec, name)
            self.right[name] += hit
            self.scored[name] += 1
            every &= hit
        self.right["all"] += every
        self.scored["all"] += 1

    def accuracy(self, name: str) -> float:
        return self.right[name] / max(1, self.scored[name])


def held_out_prompts(count: int, seed: int) -> list[tuple[world.SoundSpec, str, int]]:
    """``count`` held-out sounds with a caption drawn from the grammar and a generation seed each."""
    import numpy as np

    rng = np.random.default_rng([seed, 16])
    prompts = []
    for _ in range(count):
        spec = world.draw_spec(rng, held_out=True)
        prompts.append((spec, world.caption(spec, rng), int(rng.integers(2**31))))
    return prompts


def recorded_defaults(model: Path) -> dict:
    path = model / "training_config.json"
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    recommended = record.get("recommended", {})
    return {"steps": recommended.get("steps", 20), "guidance": recommended.get("guidance", 4.0)}


def evaluate_ground_truth(prompts) -> Tally:
    tally = Tally()
    for spec, _, seed in prompts:
        tally.add(spec, measures.measure(world.render(spec, seed)))
    return tally


def evaluate_reconstruction(pipe, prompts, batch_size: int) -> Tally:
    """The synthesised clips encoded and decoded by the pipeline's autoencoder (stage 1 of the trainer alone)."""
    import numpy as np
    import torch

    tally = Tally()
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            clips = torch.from_numpy(np.stack([world.render(spec, seed) for spec, _, seed in batch]))[:, None]
            decoded = pipe.vae.decode(pipe.vae.encode(clips).latent_dist.mean).sample
            for (spec, _, _), clip in zip(batch, decoded.float().numpy(), strict=True):
                tally.add(spec, measures.measure(clip[0]))
    return tally


def evaluate_model(pipe, prompts, steps: int, guidance: float, batch_size: int) -> Tally:
    import torch

    tally = Tally()
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        generators = [torch.Generator("cpu").manual_seed(seed) for _, _, seed in batch]
        audio = pipe([caption for _, caption, _ in batch], audio_end_in_s=world.SOUND_SECONDS,
                     num_inference_steps=steps, guidance_scale=guidance, generator=generators).audios
        for (spec, _, _), clip in zip(batch, audio.float().numpy(), strict=True):
            tally.add(spec, measures.measure(clip[0]))
    return tally


def seconds_per_clip(pipe, steps: int, guidance: float, repeats: int = 5) -> float:
    """Wall time of one 2-second clip on its own (after one warm-up), the median of ``repeats``."""
    import statistics

    import torch

    times = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        pipe("three short high beeps", audio_end_in_s=world.SOUND_SECONDS, num_inference_steps=steps,
             guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(i))
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def markdown_table(rows: dict[str, tuple[Tally, float | None]], prompts: int) -> str:
    header = "| | pitch | timbre | count | contour | all four | seconds per 2-s clip |"
    lines = [header, "|---|---|---|---|---|---|---|",
             "| target | >= 90 % | >= 90 % | >= 85 % | >= 85 % | | < 2 |"]
    for name, (tally, seconds) in rows.items():
        cells = [f"{100 * tally.accuracy(p):.1f} %" for p in (*PROPERTIES, "all")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'' if seconds is None else f'{seconds:.2f}'} |")
    lines.append("")
    lines.append(f"{prompts} held-out prompts (combinations never drawn in training; pitch and contour scored on "
                 f"the {next(iter(rows.values()))[0].scored['pitch']} tonal ones), one seed each, measured from the "
                 "waveform by `tools/sound/measures.py`; `python bench/eval_sound.py MODEL --card`.")
    return "\n".join(lines)


def replace_between_markers(path: Path, table: str) -> None:
    """Put ``table`` between the evaluation markers of ``path`` (appended with its markers when there are none)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{EVAL_START}\n{table}\n{EVAL_END}"
    if EVAL_START in text and EVAL_END in text:
        before, rest = text.split(EVAL_START, 1)
        text = before + block + rest.split(EVAL_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--prompts", type=int, default=240)
    parser.add_argument("--steps", type=int, nargs="+")
    parser.add_argument("--guidance", type=float, nargs="+")
    parser.add_argument("--seed", type=int, default=1234, help="picks the prompts and their seeds")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ground-truth", action="store_true", help="measure the synthesised clips instead")
    parser.add_argument("--reconstruct", action="store_true",
                        help="measure the synthesised clips after the model's autoencoder instead of generating")
    parser.add_argument("--with-reconstruction", action="store_true",
                        help="add the autoencoder's row to the generated ones (the card's table)")
    parser.add_argument("--card", action="store_true", help="write the table into MODEL/README.md")
    parser.add_argument("--write-into", type=Path, action="append", default=[],
                        help="also put the table between the markers of this file (repeatable)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    prompts = held_out_prompts(args.prompts, args.seed)
    rows: dict[str, tuple[Tally, float | None]] = {}
    if args.ground_truth:
        rows["synthesised clips"] = (evaluate_ground_truth(prompts), None)
    else:
        if args.model is None:
            parser.error("MODEL is required without --ground-truth")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from diffusers import DiffusionPipeline

        torch.set_num_threads(args.threads)
        defaults = recorded_defaults(args.model)
        pipe = DiffusionPipeline.from_pretrained(str(args.model), torch_dtype=torch.float32, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        for steps in [] if args.reconstruct else args.steps or [defaults["steps"]]:
            for guidance in args.guidance or [defaults["guidance"]]:
                started = time.perf_counter()
                tally = evaluate_model(pipe, prompts, steps, guidance, args.batch_size)
                seconds = seconds_per_clip(pipe, steps, guidance)
                name = f"{steps} steps, CFG {guidance:g}"
                rows[name] = (tally, seconds)
                print(f"{name}: " + ", ".join(f"{p} {100 * tally.accuracy(p):.1f}" for p in (*PROPERTIES, "all"))
                      + f" ({time.perf_counter() - started:.0f} s)", flush=True)
        if args.reconstruct or args.with_reconstruction:
            rows["autoencoder reconstruction"] = (evaluate_reconstruction(pipe, prompts, args.batch_size), None)
    table = markdown_table(rows, len(prompts))
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    targets = ([args.model / "README.md"] if args.card and args.model is not None else []) + args.write_into
    for path in targets:
        replace_between_markers(path, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
