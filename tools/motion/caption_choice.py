"""Does a motion model read the motion words? A held-out clip, noised, is denoised under each motion's caption; the
model "chooses" the caption whose prediction is nearest the truth (a diffusion classifier).

This is a quicker and finer signal than generating clips: a short training run that has not yet learnt to make a
clear motion can already show whether its prediction depends on the motion words the right way (choice accuracy
above chance, and the gap between the right caption's error and the others'). The clips are the evaluator's held-out
combinations, drawn by the dataset's own code; the noise and timesteps are fixed by a seed. Usage::

    python -m tools.motion.caption_choice MOTION_MODEL_DIR [--motions up,down] [--clips 32] [--frames 16]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tools.motion.clips import FRAMES, MOTIONS, heldout_specs, render_clip

TIMESTEPS: tuple[int, ...] = (500, 700, 900)  # where the motion is laid out


@dataclass
class Choices:
    """Per asked motion: [chosen right, asked]; and the mean of (other captions' error - right caption's error)."""

    by_motion: dict[str, list[int]] = field(default_factory=dict)
    gaps: list[float] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        right = sum(r for r, _ in self.by_motion.values())
        total = sum(n for _, n in self.by_motion.values())
        return right / total if total else 0.0

    @property
    def mean_gap(self) -> float:
        return sum(self.gaps) / len(self.gaps) if self.gaps else 0.0

    def render(self) -> str:
        parts = ", ".join(f"{m} {r}/{n}" for m, (r, n) in self.by_motion.items())
        return (f"caption choice: {100 * self.accuracy:.1f} % right (chance {100 / len(self.by_motion):.0f} %; "
                f"{parts}); error gap others - right: {self.mean_gap:+.5f}")


def load_motion_unet(base, adapter: Path):
    """The frozen parts of ``base`` (``read_base``'s) and its UNet inflated with the adapter (and the LoRA the
    adapter's folder ships)."""
    import torch
    from diffusers import MotionAdapter, UNetMotionModel

    from modules.video.pipelines import MOTION_LORA_FILE
    from tools.shapes_controlnet.train import load_base_parts

    vae, text_encoder, tokenizer, unet2d = load_base_parts(base)
    motion = MotionAdapter.from_pretrained(str(adapter), torch_dtype=torch.float32, local_files_only=True)
    unet = UNetMotionModel.from_unet2d(unet2d, motion).eval()
    if (Path(adapter) / MOTION_LORA_FILE).is_file():
        unet.load_lora_adapter(str(adapter), weight_name=MOTION_LORA_FILE, prefix="unet", adapter_name="motion")
    return vae, text_encoder, tokenizer, unet


def choose(base_path: Path, adapter: Path, motions: tuple[str, ...] = MOTIONS, clips: int = 28,
           frames: int = FRAMES, seed: int = 4321) -> Choices:
    """Caption choice on ``clips`` held-out clips of ``motions`` (taking turns), each at every ``TIMESTEPS``."""
    import numpy as np
    import torch

    from tools.shapes_controlnet.train import noise_schedule, read_base

    base = read_base(base_path)
    vae, text_encoder, tokenizer, unet = load_motion_unet(base, adapter)
    schedule = noise_schedule(base)
    rng = np.random.default_rng(seed)
    pools = {m: [s for s in heldout_specs() if s.motion == m] for m in motions}
    result = Choices({m: [0, 0] for m in motions})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in range(clips):
            pool = pools[motions[i % len(motions)]]
            spec = pool[int(rng.integers(len(pool)))]
            images, _ = render_clip(spec, rng, frames)
            pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
            candidates = [type(spec)(spec.shape, spec.colour, spec.background, m) for m in motions]
            ids = tokenizer([c.caption() for c in candidates], padding="max_length", max_length=77,
                            truncation=True, return_tensors="pt").input_ids
            hidden = text_encoder(ids)[0]
            errors = torch.zeros(len(motions))
            for t in TIMESTEPS:
                noise = torch.randn(latents.shape, generator=generator)
                steps = torch.full((frames,), t)
                noisy = schedule.add_noise(latents, noise, steps)
                target = schedule.get_velocity(latents, noise, steps) if base.prediction_type == "v_prediction" \
                    else noise
                sample = noisy.permute(1, 0, 2, 3)[None].expand(len(motions), -1, -1, -1, -1)
                prediction = unet(sample, torch.full((len(motions),), t),
                                  hidden.repeat_interleave(frames, dim=0)).sample
                errors += (prediction.permute(0, 2, 1, 3, 4) - target[None]).square().mean(dim=(1, 2, 3, 4))
            asked = motions.index(spec.motion)
            result.by_motion[spec.motion][1] += 1
            result.by_motion[spec.motion][0] += int(int(errors.argmin()) == asked)
            others = torch.cat([errors[:asked], errors[asked + 1:]])
            result.gaps.append(float(others.mean() - errors[asked]) / len(TIMESTEPS))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("adapter", type=Path)
    parser.add_argument("--base", type=Path, default=Path("models/Stable-diffusion/sfumato-shapes"))
    parser.add_argument("--motions", default=",".join(MOTIONS))
    parser.add_argument("--clips", type=int, default=28)
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    motions = tuple(m.strip() for m in args.motions.split(",") if m.strip())
    if not motions or set(motions) - set(MOTIONS):
        parser.error(f"--motions: choose from {', '.join(MOTIONS)}")
    print(choose(args.base, args.adapter, motions, args.clips, args.frames).render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
