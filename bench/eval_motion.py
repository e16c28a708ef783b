"""How well a motion adapter animates the shapes world, measured from the pixels of every frame on held-out prompts.

Builds diffusers' ``AnimateDiffPipeline`` from the base model's folder and the adapter's (offline; with the LoRA
the adapter's folder ships, loaded as the studio loads it), generates one clip per held-out prompt (a (shape, colour,
background, motion) combination training never drew; see ``tools/motion/clips.py``) with a fixed seed each, follows
the shape through the frames (``tools/motion/track.py``) and reports: motion right, colours right (foreground and
background), shape right, and the shape keeping its colour in every frame; then the time of one clip. Usage:

    python bench/eval_motion.py ADAPTER_DIR [--base models/Stable-diffusion/sfumato-shapes] [--prompts 112]
                                [--frames 16] [--steps 20] [--guidance 4.5] [--sampler Euler] [--motion-end 0.65]
                                [--no-full-motion-row] [--batch-size 4]
                                [--motions left,right,up,down,growing,shrinking,still]
                                [--card] [--write-into README.md] [--markdown FILE] [--grid FILE.png] [--threads 2]

Sampler, steps and CFG default to the base model's recorded defaults, ``--motion-end`` (the share of the steps the
motion adapter acts in, ``modules/video/motion_end.py``) to the adapter's recommended one; below 1, a second row
shows the same prompts with the adapter acting in every step. ``--card`` writes the table into the adapter's
README.md between its markers; ``--write-into`` into another file's (e.g. the repository README).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.motion import clips, track  # noqa: E402  (after the path insert; numpy only, no torch)
from tools.motion.card import replace_between  # noqa: E402
from tools.motion.train import EVAL_END, EVAL_START  # noqa: E402


def load_pipeline(base: Path, adapter: Path, sampler: str | None = None):
    """AnimateDiffPipeline of the base model's parts and the adapter (float32, CPU), the sampler as the app names
    it (None: the base's saved scheduler)."""
    import torch
    from diffusers import AnimateDiffPipeline, AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from diffusers.schedulers import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from modules.video.pipelines import load_motion_lora

    def part(cls, name):
        return cls.from_pretrained(str(base), subfolder=name, torch_dtype=torch.float32, local_files_only=True)

    scheduler = EulerDiscreteScheduler.from_pretrained(str(base), subfolder="scheduler", local_files_only=True)
    if sampler is not None:
        from modules.image.samplers import make_scheduler, resolve_sampler

        scheduler = make_scheduler(resolve_sampler(sampler), dict(scheduler.config))
    motion = MotionAdapter.from_pretrained(str(adapter), torch_dtype=torch.float32, local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(str(base), subfolder="tokenizer", local_files_only=True)
    pipe = AnimateDiffPipeline(vae=part(AutoencoderKL, "vae"), text_encoder=part(CLIPTextModel, "text_encoder"),
                               tokenizer=tokenizer, unet=part(UNet2DConditionModel, "unet"), motion_adapter=motion,
                               scheduler=scheduler)
    load_motion_lora(pipe, adapter)  # the studio's video path does the same
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, cases, *, frames: int, steps: int, guidance: float, batch_size: int = 4,
             motion_end: float = 1.0) -> list:
    """Clips (uint8 F x H x W x 3 arrays) for (spec, seed) cases, each from its own seeded generator; the motion
    adapter acts in the first ``motion_end`` of the steps (the studio's ``MotionSwitch``)."""
    import numpy as np
    import torch

    from modules.video.motion_end import MotionSwitch
    from modules.video.pipelines import MOTION_LORA_NAME

    switch = MotionSwitch(pipe, MOTION_LORA_NAME)  # as the studio's video path makes it

    def after_step(pipeline, step, _timestep, tensors):
        switch.after_step(step + 1, pipeline.num_timesteps)
        return tensors

    result = []
    for start in range(0, len(cases), batch_size):
        chunk = cases[start:start + batch_size]
        generators = [torch.Generator("cpu").manual_seed(seed) for _, seed in chunk]
        with switch.run(motion_end):
            output = pipe([spec.caption() for spec, _ in chunk], num_frames=frames, num_inference_steps=steps,
                          guidance_scale=guidance, generator=generators, height=64, width=64, output_type="np",
                          callback_on_step_end=after_step)
        videos = np.asarray(output.frames)
        result += [np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8) for v in videos]
    return result


def tally(videos, cases) -> track.ClipTally:
    counts = track.ClipTally()
    for video, (spec, _) in zip(videos, cases, strict=True):
        counts.add(track.score_clip(video, spec), spec)
    return counts


def dataset_clips(cases, frames: int) -> list:
    """The dataset's own drawing of the same held-out cases (the metric's check: it must read them all right)."""
    import numpy as np

    return [clips.render_clip(spec, np.random.default_rng(seed), frames)[0] for spec, seed in cases]


def markdown(rows: dict[str, track.ClipTally], marked: str, settings: str, seconds: float | None,
             threads: int) -> str:
    """The card's table: one row per run, the targets marked on ``marked``; then motion by motion; then timing."""
    header = "| | " + " | ".join(track.SCORES) + " | clips |"
    lines = [f"{settings}; targets: " + ", ".join(f"{k} ≥ {v:g} %" for k, v in track.TARGETS.items()) + ".", "",
             header, "|---|" + "---:|" * (len(track.SCORES) + 1)]
    for name, counts in rows.items():
        acc = counts.accuracy()
        cells = []
        for score in track.SCORES:
            mark = ""
            if name == marked:
                mark = " ✓" if 100 * acc[score] >= track.TARGETS[score] - 1e-9 else " ✗"
            cells.append(f"{100 * acc[score]:.1f} %{mark}")
        lines.append(f"| {name} | {' | '.join(cells)} | {counts.total} |")
    generated = rows[marked]
    lines += ["", "Motion right, by the motion the prompt asked (" + marked + "):", "",
              "| " + " | ".join(clips.MOTION_PHRASES[m] for m in clips.MOTIONS) + " |",
              "|" + "---:|" * len(clips.MOTIONS),
              "| " + " | ".join(f"{100 * r / n:.0f} % ({n})" if n else "—"
                                for r, n in (generated.by_motion[m] for m in clips.MOTIONS)) + " |"]
    if seconds is not None:
        verdict = "✓" if seconds < 10 else "✗"
        lines += ["", f"One 16-frame clip (batch 1, CFG) takes {seconds:.1f} s on the CPU with {threads} thread(s) "
                      f"(target < 10 s {verdict})."]
    return "\n".join(lines)


def save_grid(videos, path: Path, count: int = 8) -> None:
    """The first clips' frames, one clip per row."""
    import numpy as np
    from PIL import Image

    rows = [np.concatenate(list(v), axis=1) for v in videos[:count]]
    if rows:
        Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("adapter", type=Path)
    parser.add_argument("--base", type=Path, default=Path("models/Stable-diffusion/sfumato-shapes"))
    parser.add_argument("--prompts", type=int, default=112)
    parser.add_argument("--frames", type=int, default=clips.FRAMES)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--sampler")
    parser.add_argument("--motion-end", type=float, help="default: the adapter's recommended motion_end, else 1")
    parser.add_argument("--no-full-motion-row", action="store_true",
                        help="skip the comparison row with the adapter acting in every step")
    parser.add_argument("--seed", type=int, default=1234, help="picks the prompts and their seeds")
    parser.add_argument("--motions", default=",".join(clips.MOTIONS),
                        help="comma-separated motions to ask for (a model trained on a reduced problem)")
    parser.add_argument("--batch-size", type=int, default=4, help="clips per pipeline call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-timing", action="store_true", help="skip timing one clip")
    parser.add_argument("--card", action="store_true", help="write the table into ADAPTER/README.md")
    parser.add_argument("--write-into", type=Path, action="append", default=[],
                        help="also replace the table between the markers in this file (repeatable)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--grid", type=Path, help="save the first clips' frames as one PNG")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from bench.eval_shapes import recorded_defaults

    torch.set_num_threads(args.threads)
    defaults = recorded_defaults(args.base)
    sampler = args.sampler or defaults["sampler"]
    steps = args.steps or defaults["steps"]
    guidance = args.guidance if args.guidance is not None else defaults["guidance"]
    if args.motion_end is None:
        from modules.video.defaults import adapter_folder_defaults

        motion_end = adapter_folder_defaults(args.adapter).motion_end
    else:
        motion_end = args.motion_end
    if not 0.0 <= motion_end <= 1.0:
        parser.error(f"--motion-end must be between 0 and 1, got {motion_end:g}")
    pipe = load_pipeline(args.base, args.adapter, sampler)
    motions = tuple(m.strip() for m in args.motions.split(",") if m.strip())
    unknown = sorted(set(motions) - set(clips.MOTIONS))
    if unknown or not motions:
        parser.error(f"--motions: unknown {unknown}; known: {', '.join(clips.MOTIONS)}")
    cases = clips.evaluation_cases(args.prompts, args.seed, motions)
    started = time.perf_counter()
    videos = generate(pipe, cases, frames=args.frames, steps=steps, guidance=guidance, batch_size=args.batch_size,
                      motion_end=motion_end)
    print(f"generated {len(videos)} clips in {time.perf_counter() - started:.0f} s", flush=True)
    ending = f", motion end {motion_end:g}" if motion_end < 1 else ""
    settings = f"{sampler}, {steps} steps, CFG {guidance:g}{ending}, {args.frames} frames of 64 x 64"
    name = f"generated ({sampler}, {steps} steps, CFG {guidance:g}{ending})"
    rows = {name: tally(videos, cases)}
    if motion_end < 1 and not args.no_full_motion_row:
        full = generate(pipe, cases, frames=args.frames, steps=steps, guidance=guidance, batch_size=args.batch_size)
        rows["the same, motion adapter in every step (motion end 1)"] = tally(full, cases)
    rows["dataset clips (metric check)"] = tally(dataset_clips(cases, args.frames), cases)
    seconds = None
    if not args.no_timing:
        one = cases[:1]
        started = time.perf_counter()
        generate(pipe, one, frames=clips.FRAMES, steps=steps, guidance=guidance, batch_size=1, motion_end=motion_end)
        seconds = time.perf_counter() - started
    table = markdown(rows, name, settings, seconds, args.threads)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    for path in [args.adapter / "README.md"] * args.card + args.write_into:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        path.write_text(replace_between(text, EVAL_START, EVAL_END, table), encoding="utf-8")
    if args.grid:
        save_grid(videos, args.grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
