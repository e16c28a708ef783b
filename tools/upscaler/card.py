"""The model card written next to each trained file (``sfumato-compact-2x.md`` beside ``...-2x.safetensors``).

The trainer writes what it knows (command, recipe, data, measured time); the benchmark section between the two
markers belongs to ``bench/eval_upscaler.py --card``, which replaces it with its own printed table, so the card
never shows numbers that the evaluator did not produce. Retraining keeps a previous benchmark section but marks it
stale, because it describes other weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.upscaler.photos import HELD_OUT_PHOTOS, TRAIN_PHOTOS

BENCH_START = "<!-- benchmark:start (written by bench/eval_upscaler.py --card) -->"
BENCH_END = "<!-- benchmark:end -->"
STALE = "*(Stale: these numbers are from earlier weights; rerun the evaluator with --card.)*"


def card_path(model_file: Path) -> Path:
    return model_file.with_suffix(".md")


def _photo_list(photos: tuple[Any, ...]) -> str:
    by_package: dict[str, list[str]] = {}
    for photo in photos:
        by_package.setdefault(photo.package, []).append(Path(photo.path).name)
    names = {"skimage": "scikit-image (`skimage/data/`)", "sklearn": "scikit-learn (`sklearn/datasets/images/`)"}
    return "; ".join(f"{names.get(package, package)}: {', '.join(files)}" for package, files in by_package.items())


def benchmark_section(text: str) -> str | None:
    """The benchmark block of an existing card, markers included, or None."""
    start, end = text.find(BENCH_START), text.find(BENCH_END)
    if start < 0 or end < start:
        return None
    return text[start:end + len(BENCH_END)]


def replace_benchmark(card: Path, body: str) -> None:
    """Put ``body`` between the card's benchmark markers (appending the block if the card has none)."""
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    block = f"{BENCH_START}\n{body.strip()}\n{BENCH_END}"
    old = benchmark_section(text)
    text = text.replace(old, block) if old else text.rstrip("\n") + "\n\n" + block + "\n"
    card.write_text(text, encoding="utf-8")


def write_card(model_file: Path, config: Any, *, command: str, timing: dict[str, Any], size_bytes: int,
               parameters: int, half: bool) -> Path:
    """Write (or rewrite) the card of ``model_file``; returns its path."""
    card = card_path(model_file)
    previous = benchmark_section(card.read_text(encoding="utf-8")) if card.is_file() else None
    if previous:
        body = previous[len(BENCH_START):-len(BENCH_END)].strip()
        bench = previous if body.startswith(STALE) else f"{BENCH_START}\n{STALE}\n\n{body}\n{BENCH_END}"
    else:
        bench = f"{BENCH_START}\n(not measured yet: `python bench/eval_upscaler.py {model_file.as_posix()} --card`)\n" \
                f"{BENCH_END}"
    d = config.degradations
    minutes = timing["train_seconds"] / 60
    lr_side = config.hr_size // config.scale
    precision = "float16" if half else "float32"
    autocast = "bfloat16 autocast for the convolutions" if config.bf16 else "float32 throughout"
    text = f"""# Sfumato Compact {config.scale}x

A {config.scale}x photo upscaler that ships with Sfumato, trained from nothing by the project's own script on
images that come inside pip packages plus procedurally drawn pictures: no third-party weights, no download.

- Architecture: Real-ESRGAN's SRVGGNetCompact ({config.features} features, {config.convs} body convolutions, PReLU;
  {parameters:,} parameters), {precision} safetensors, {size_bytes / 1e6:.2f} MB.
- spandrel detects it from the weights alone (`Compact`, scale {config.scale}), so it loads from `models/ESRGAN/`
  like any user's upscaler.
- PSNR-oriented (L1 loss): faithful and a little soft rather than inventing texture.

## Reproduce

```
{command}
```

The same seed, thread count, machine and PyTorch give the same weights (the file is byte-identical). A checkpoint
is written every 250 steps to `.train-state/upscaler/{model_file.stem}.pt`; rerunning the same command after an
interruption resumes from it and ends with the same weights. Needs scikit-image and scikit-learn installed.

- Training time, measured: **{minutes:.1f} min** wall clock, {config.steps / timing["train_seconds"]:.1f} steps/s
  ({timing["machine"]}).
- {config.steps} steps of {config.batch} patches of {config.hr_size}x{config.hr_size} px (inputs {lr_side}x{lr_side});
  Adam, learning rate {config.lr:g} with {config.warmup} warm-up steps, then cosine decay to {config.final_lr:g};
  L1 loss on RGB; {autocast}.

## Data

- Photographs ({round(config.photo_share * 100)} % of patches): {_photo_list(TRAIN_PHOTOS)}. Greyscale ones are
  tinted with random two-colour ramps; colour ones sometimes have their channels swapped.
- Drawn pictures (the rest): {config.pictures} procedurally drawn {config.picture_size} px pictures: anti-aliased
  and hard-edged shapes, lines and arcs, gradients, fractal and marble textures, gratings, rings, grids, grain; no
  text (`tools/upscaler/procedural.py`).
- Augmentation: random crops, random reduction of the source by up to 2x before cropping, flips and quarter turns;
  nearly flat patches are redrawn.
- Inputs: {round(config.clean_share * 100)} % clean bicubic reductions; the rest degraded like real small images:
  Gaussian blur (chance {d.blur_chance:g}, sigma {d.blur_sigma[0]:g}-{d.blur_sigma[1]:g} input px), reduction with
  bicubic / bilinear / area / Lanczos, Gaussian noise (chance {d.noise_chance:g}, sigma
  {d.noise_sigma[0]:g}-{d.noise_sigma[1]:g} of 255), JPEG (chance {d.jpeg_chance:g}, quality
  {d.jpeg_quality[0]}-{d.jpeg_quality[1]}). The last {round(config.clean_phase * 100)} % of the steps see clean
  bicubic reductions only.
- Held out (never trained on; the benchmark below): {_photo_list(HELD_OUT_PHOTOS)}.
- Licences of the photographs: scikit-image's are given in the docstrings of `skimage.data`; scikit-learn's
  (held out, not trained on) are CC BY 2.0 (`sklearn/datasets/images/README.txt`).

## Benchmark (held-out photographs)

{bench}

## Limits

Trained for minutes on a CPU on a few dozen photographs: it beats classical resampling on photographs but stays well
below large upscalers trained for days on thousands of images. Its robustness to blur, noise and JPEG is mild by
design; it does not restore faces or remove heavy compression.
"""
    card.write_text(text, encoding="utf-8")
    return card
