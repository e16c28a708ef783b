"""Train one of Sfumato's embedded upscalers from nothing, on this machine, in minutes.

    python -m tools.upscaler.train --scale 2 --out models/ESRGAN/sfumato-compact-2x.safetensors --threads 2 --seed 0
    python -m tools.upscaler.train --scale 4 --out models/ESRGAN/sfumato-compact-4x.safetensors --threads 2 --seed 0

The same seed, thread count, machine and PyTorch give the same weights: the initial weights come from the seed
and every batch from (seed, step). A checkpoint is written every ``--checkpoint-every`` steps (by default to
``.train-state/upscaler/<name>.pt``); rerunning a killed command with the same arguments resumes from it and ends
with the weights an uninterrupted run would have (``--restart`` throws it away instead).

Why bfloat16 autocast and channels-last: on CPUs with AMX or AVX-512 BF16 the convolutions run 10-30 times faster
than in float32, which is what makes a few minutes enough; the weights stay float32 and the pixel-shuffle, the
skip connection and the loss are computed in float32, so the small residual is not rounded to bfloat16's 8 bits.
Why L1 and a final clean phase: the model is meant to be PSNR-oriented (faithful, not hallucinating), and the last
part of training sees only the standard bicubic reductions after having learnt robustness from degraded ones.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.upscaler.checkpoint import differing_settings, load_checkpoint, save_checkpoint
from tools.upscaler.degrade import Degradations

STATE_FOLDER = Path(".train-state") / "upscaler"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (the command line sets a few; the rest is the recipe)."""

    scale: int = 2
    seed: int = 0
    features: int = 48
    convs: int = 12
    steps: int = 4000
    batch: int = 16
    hr_size: int = 96  # side of the high-resolution patch; a multiple of the scale
    lr: float = 1e-3
    warmup: int = 100
    final_lr: float = 1e-5
    photo_share: float = 0.7  # the rest of the patches come from drawn pictures
    pictures: int = 160
    picture_size: int = 256
    clean_share: float = 0.5  # share of clean bicubic pairs before the final phase
    clean_phase: float = 0.25  # the last quarter of the steps sees clean bicubic pairs only
    degradations: Degradations = field(default_factory=Degradations)
    bf16: bool = True
    use_photos: bool = True  # False only in tests, which must not need scikit-image / scikit-learn

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[int, dict[str, Any]] = {
    2: {"features": 48, "convs": 12, "steps": 4000, "batch": 16, "hr_size": 96},
    # At 4x a degraded input hides more of what the clean benchmark input shows, so fewer pairs are degraded.
    4: {"features": 48, "convs": 12, "steps": 5000, "batch": 16, "hr_size": 128, "clean_share": 0.7},
}


def make_config(scale: int, seed: int = 0, **overrides: Any) -> TrainConfig:
    """The recipe for ``scale`` with the given settings replaced (None means: keep the preset's)."""
    if scale not in PRESETS:
        raise ValueError(f"scale must be one of {sorted(PRESETS)}")
    settings = {**PRESETS[scale], **{k: v for k, v in overrides.items() if v is not None}}
    config = TrainConfig(scale=scale, seed=seed, **settings)
    if config.hr_size % scale:
        raise ValueError("hr_size must be a multiple of the scale")
    return config


def default_state_path(out: Path) -> Path:
    return STATE_FOLDER / f"{out.stem}.pt"


def set_determinism(threads: int) -> None:
    """Fix the thread count (the float sums, hence the weights, depend on it) and ask for deterministic kernels."""
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # can only be set once per process (tests train more than once)
        torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``final_lr``."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return config.final_lr + (config.lr - config.final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def forward(model: Any, lr: Any, bf16: bool) -> Any:
    """The Compact network's own forward pass, with only the convolutions under bfloat16 autocast."""
    import torch
    import torch.nn.functional as F

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        features = lr
        for layer in model.body:
            features = layer(features)
    return model.upsampler(features.float()) + F.interpolate(lr, scale_factor=model.upscale, mode="nearest")


def _to_tensor(pixels: Any) -> Any:
    import torch

    tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    return tensor.contiguous(memory_format=torch.channels_last)


@dataclass
class TrainResult:
    """What the card reports: the trained model, where its checkpoint is, and the time the training took."""

    model: Any
    config: TrainConfig
    train_seconds: float
    final_loss: float
    finished: bool
    resumed_from: int
    load_average: float | None = None  # the machine's 15-minute load average when the last step ran


def train(config: TrainConfig, state_path: Path, *, threads: int = 2, checkpoint_every: int = 250,
          restart: bool = False, stop_after: int | None = None, progress: bool = True) -> TrainResult:
    """Run (or resume) training; ``stop_after`` ends early after that many steps with a checkpoint, like a kill."""
    import torch
    from tqdm import tqdm

    from tools.upscaler.data import load_sources, make_batch
    from tools.upscaler.model import build_model

    set_determinism(threads)
    model = build_model(config.scale, config.features, config.convs, config.seed)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.99))
    start, seconds, loss_average, load = 0, 0.0, float("nan"), None
    saved = None if restart else load_checkpoint(state_path)
    if saved is not None:
        differing = differing_settings(saved["config"], config.to_json())
        if differing:
            raise SystemExit(f"{state_path} was made with other settings ({', '.join(differing)}); "
                             "rerun with the same ones, or with --restart to start over")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start, seconds, loss_average = int(saved["step"]), float(saved["seconds"]), float(saved["loss"])
        load = saved.get("load")

    def checkpoint(step: int) -> None:
        save_checkpoint(state_path, {"config": config.to_json(), "step": step, "model": model.state_dict(),
                                     "optimizer": optimizer.state_dict(), "seconds": seconds,
                                     "loss": loss_average, "load": load})

    began = time.perf_counter()
    sources = load_sources(config.seed, config.pictures, config.picture_size, photos=config.use_photos) \
        if start < config.steps else None
    seconds += time.perf_counter() - began
    end = config.steps if stop_after is None else min(config.steps, start + stop_after)
    clean_from = int(config.steps * (1.0 - config.clean_phase))
    bar = tqdm(total=config.steps, initial=start, desc=f"x{config.scale}", disable=not progress, dynamic_ncols=True)
    for step in range(start, end):
        began = time.perf_counter()
        lows, highs = make_batch(sources, seed=config.seed, step=step, batch=config.batch, hr_size=config.hr_size,
                                 scale=config.scale, photo_share=config.photo_share,
                                 degradations=config.degradations,
                                 clean_share=1.0 if step >= clean_from else config.clean_share)
        lr_pixels, hr_pixels = _to_tensor(lows), _to_tensor(highs)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        loss = (forward(model, lr_pixels, config.bf16) - hr_pixels).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        loss_average = value if math.isnan(loss_average) else 0.98 * loss_average + 0.02 * value
        seconds += time.perf_counter() - began
        bar.update(1)
        bar.set_postfix(loss=f"{loss_average:.4f}", refresh=False)
        done = step + 1
        if done == config.steps and hasattr(os, "getloadavg"):
            load = os.getloadavg()[2]  # how busy the machine was while this run trained (15-minute average)
        if done == end or (checkpoint_every and done % checkpoint_every == 0):
            checkpoint(done)
    bar.close()
    finished = end >= config.steps
    model.eval()
    return TrainResult(model=model, config=config, train_seconds=seconds, final_loss=loss_average,
                       finished=finished, resumed_from=start, load_average=load)


def command_line(config: TrainConfig, out: Path, threads: int) -> str:
    """The command that reproduces ``config`` (settings left at the preset are not spelled out)."""
    parts = ["python -m tools.upscaler.train", f"--scale {config.scale}", f"--out {out.as_posix()}",
             f"--threads {threads}", f"--seed {config.seed}"]
    preset = make_config(config.scale, config.seed)
    for name in ("steps", "batch", "features", "convs"):
        if getattr(config, name) != getattr(preset, name):
            parts.append(f"--{name} {getattr(config, name)}")
    return " ".join(parts)


def machine_description(threads: int, load_average: float | None) -> str:
    """CPU model, threads, PyTorch and the load average: others' processes on a shared machine slow training."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = "" if load_average is None else f", 15-minute load average at the end of training {load_average:.1f}"
    return f"{cpu}, {os.cpu_count()} cores, {threads} thread(s), PyTorch {_torch_version()}{load}"


def _torch_version() -> str:
    import torch

    return torch.__version__


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.upscaler.train", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, choices=sorted(PRESETS), required=True)
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (part of what decides the weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="training steps (the time budget; default: the preset's)")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--features", type=int)
    parser.add_argument("--convs", type=int)
    parser.add_argument("--state", type=Path, help="checkpoint file (default: .train-state/upscaler/<name>.pt)")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints")
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("--float32", action="store_true", help="save float32 weights (default: float16, half size)")
    parser.add_argument("--no-card", action="store_true", help="do not write the model card next to the file")
    return parser.parse_args(argv)


def passive_waiting() -> None:
    """Let idle OpenMP threads sleep instead of spinning; call before torch is first imported.

    On a shared 2-core machine a spinning thread burns the core its partner needs: measured with another
    process busy, a step took 5x longer with spinning than without. It changes no result, only the waiting.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    passive_waiting()
    from tools.upscaler.card import write_card
    from tools.upscaler.model import load_with_spandrel, parameter_count, save_model

    config = make_config(args.scale, args.seed, steps=args.steps, batch=args.batch, features=args.features,
                         convs=args.convs)
    state_path = args.state or default_state_path(args.out)
    result = train(config, state_path, threads=args.threads, checkpoint_every=args.checkpoint_every,
                   restart=args.restart)
    command = command_line(config, args.out, args.threads)
    timing = {"train_seconds": round(result.train_seconds, 1),
              "machine": machine_description(args.threads, result.load_average)}
    save_model(result.model, args.out, half=not args.float32,
               metadata={"sfumato_recipe": config.to_json(), "sfumato_command": command})  # no timing: same bytes
    descriptor = load_with_spandrel(args.out, expected_scale=config.scale)
    size = args.out.stat().st_size
    print(f"saved {args.out} ({size / 1e6:.2f} MB, {parameter_count(result.model)} parameters); spandrel sees "
          f"{descriptor.architecture.name} x{descriptor.scale}; trained {result.train_seconds / 60:.1f} min "
          f"(final L1 {result.final_loss:.4f})")
    if not args.no_card:
        card = write_card(args.out, config, command=command, timing=timing, size_bytes=size,
                          parameters=parameter_count(result.model), half=not args.float32)
        print(f"wrote {card}; fill in its benchmark with: python bench/eval_upscaler.py {args.out.as_posix()} --card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
