"""How much better than classical resampling an upscaler is, measured on photographs it never saw.

The standard super-resolution protocol: each held-out photograph (``tools/upscaler/photos.py``) is cropped to a
multiple of the scale, reduced with an anti-aliased bicubic filter, enlarged back by each method, and compared
with the original by PSNR on luma (Y of BT.601 YCbCr, as MATLAB's ``rgb2ycbcr``) with ``scale`` border pixels
shaved. Baselines measured in the same run: nearest, bicubic and Lanczos (PIL). The model is run whole and in
tiles smaller than the picture with overlap, and the gap between the two is reported, since tiles are what large
pictures get. Usage:

    python bench/eval_upscaler.py MODEL_FILE [MODEL_FILE ...] [--tile 64] [--overlap 16] [--threads 2] [--card]
                                  [--runner auto|engine|own]

``--card`` writes each model's table into its card (``MODEL_FILE`` with ``.md``) between the benchmark markers.

The model rows go through the engine's ``modules.upscaling.upscale`` (what users get: spandrel loading, reflection
margin, cosine-blended tiles); "whole" is the same call with tiling off. ``--runner own`` (or an engine that cannot
be imported) uses this script's minimal runner instead, which keeps only each tile's centre.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BASELINES = ("nearest", "bicubic", "lanczos")


def luma(pixels: Any) -> Any:
    """BT.601 luma on the 16-235 scale from uint8 RGB, as in MATLAB's rgb2ycbcr (the SR literature's convention)."""
    import numpy as np

    rgb = pixels.astype(np.float64) / 255.0
    return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def psnr_y(result: Any, reference: Any, shave: int) -> float:
    """PSNR in dB on luma, ignoring ``shave`` pixels at every border (where no method has full context)."""
    import numpy as np

    a, b = luma(result), luma(reference)
    if shave:
        a, b = a[shave:-shave, shave:-shave], b[shave:-shave, shave:-shave]
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def run_model(model: Any, pixels: Any) -> Any:
    """Upscale HxWx3 uint8 with a spandrel model in float32; the result is rounded to uint8 as a user's file is."""
    import numpy as np
    import torch

    with torch.inference_mode():
        tensor = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float().div(255.0)
        output = model(tensor).clamp(0.0, 1.0).mul(255.0).round().byte()
    return output[0].permute(1, 2, 0).numpy()


class EngineRunner:
    """The model as users get it: ``modules.upscaling.upscale`` (spandrel loading, reflection margin, cosine-blended
    tiles). Whole = one tile covering the picture."""

    label = "modules.upscaling.upscale"

    def __init__(self, model_file: Path) -> None:
        from modules.upscaling import UpscalerInfo, UpscalerModels, scale_from_name

        self.info = UpscalerInfo(name=model_file.stem, path=model_file, folder="ESRGAN",
                                 scale=scale_from_name(model_file.stem), display_path=model_file.name)
        self.models = UpscalerModels(device="cpu")
        loaded = self.models.get(self.info)
        self.scale, self.architecture = loaded.scale, loaded.architecture

    def _upscale(self, pixels: Any, tile_size: int, overlap: int) -> Any:
        import numpy as np
        from PIL import Image

        from modules.upscaling import TileOptions, upscale

        result = upscale(Image.fromarray(pixels), self.info, models=self.models, scale=float(self.scale),
                         tile=TileOptions(tile_size=tile_size, overlap=overlap))
        return np.asarray(result)

    def whole(self, pixels: Any, overlap: int) -> Any:
        return self._upscale(pixels, 0, overlap)

    def tiled(self, pixels: Any, tile: int, overlap: int) -> Any:
        return self._upscale(pixels, tile, overlap)


class OwnRunner:
    """A minimal stand-in for when the engine's upscaling package is missing or broken: spandrel's model run
    whole, or tile by tile with ``overlap`` pixels of context on each side and only each tile's centre kept."""

    label = "this script's own tiled runner"

    def __init__(self, model_file: Path) -> None:
        from spandrel import ModelLoader

        descriptor = ModelLoader().load_from_file(str(model_file))
        self.model = descriptor.model.eval()
        self.scale, self.architecture = descriptor.scale, descriptor.architecture.name

    def whole(self, pixels: Any, overlap: int) -> Any:
        return run_model(self.model, pixels)

    def tiled(self, pixels: Any, tile: int, overlap: int) -> Any:
        import numpy as np

        scale = self.scale
        height, width = pixels.shape[:2]
        output = np.zeros((height * scale, width * scale, 3), np.uint8)
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                bottom, right = min(top + tile, height), min(left + tile, width)
                y0, x0 = max(0, top - overlap), max(0, left - overlap)
                y1, x1 = min(height, bottom + overlap), min(width, right + overlap)
                result = run_model(self.model, pixels[y0:y1, x0:x1])
                output[top * scale:bottom * scale, left * scale:right * scale] = result[
                    (top - y0) * scale:(bottom - y0) * scale, (left - x0) * scale:(right - x0) * scale]
        return output


def make_runner(model_file: Path, choice: str) -> EngineRunner | OwnRunner:
    """The engine's runner unless asked otherwise or unimportable (it is developed alongside this script)."""
    if choice == "own":
        return OwnRunner(model_file)
    try:
        return EngineRunner(model_file)
    except ImportError:
        if choice == "engine":
            raise
        return OwnRunner(model_file)


@dataclass
class Row:
    """One photograph's scores for one model."""

    image: str
    size: tuple[int, int]
    psnr: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    gap_max: int = 0
    gap_mean: float = 0.0


def _timed(function: Any, *args: Any) -> tuple[Any, float]:
    began = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - began


def evaluate(runner: EngineRunner | OwnRunner, tile: int, overlap: int) -> list[Row]:
    """Score one model on every held-out photograph."""
    import numpy as np

    from tools.upscaler.degrade import bicubic_reduce, resize
    from tools.upscaler.photos import HELD_OUT_PHOTOS, load_rgb

    scale = runner.scale
    runner.whole(np.zeros((16, 16, 3), np.uint8), overlap)  # warm-up, so the first photograph's time is fair
    rows = []
    for photo in HELD_OUT_PHOTOS:
        original = load_rgb(photo)
        height, width = (side - side % scale for side in original.shape[:2])
        original = original[:height, :width]
        small = bicubic_reduce(original, scale)
        row = Row(image=photo.name, size=(width, height))
        for method in BASELINES:
            enlarged, row.seconds[method] = _timed(resize, small, width, height, method)
            row.psnr[method] = psnr_y(enlarged, original, scale)
        whole, row.seconds["model"] = _timed(runner.whole, small, overlap)
        tiled, row.seconds["tiled"] = _timed(runner.tiled, small, tile, overlap)
        row.psnr["model"] = psnr_y(whole, original, scale)
        row.psnr["tiled"] = psnr_y(tiled, original, scale)
        difference = np.abs(whole.astype(np.int16) - tiled.astype(np.int16))
        row.gap_max, row.gap_mean = int(difference.max()), float(difference.mean())
        rows.append(row)
    return rows


def table(rows: list[Row], scale: int) -> str:
    """The markdown table: PSNR per method, the model's gain over Lanczos, the tiling gap and the time."""
    header = ("| image (HR size) | nearest | bicubic | Lanczos | model | model tiled | model - Lanczos "
              "| tiled vs whole: max / mean abs | time: Lanczos / model / tiled |")
    lines = [f"PSNR (dB) on luma, {scale}x, bicubic-reduced input, {scale} px shaved:", "", header,
             "|" + "---|" * 9]
    for row in rows:
        p, s = row.psnr, row.seconds
        lines.append(f"| {row.image} ({row.size[0]}x{row.size[1]}) | {p['nearest']:.2f} | {p['bicubic']:.2f} "
                     f"| {p['lanczos']:.2f} | {p['model']:.2f} | {p['tiled']:.2f} "
                     f"| {p['model'] - p['lanczos']:+.2f} | {row.gap_max} / {row.gap_mean:.4f} "
                     f"| {s['lanczos'] * 1000:.0f} / {s['model'] * 1000:.0f} / {s['tiled'] * 1000:.0f} ms |")
    mean = {key: sum(row.psnr[key] for row in rows) / len(rows) for key in rows[0].psnr}
    seconds = {key: sum(row.seconds[key] for row in rows) / len(rows) for key in rows[0].seconds}
    lines.append(f"| **mean** | {mean['nearest']:.2f} | {mean['bicubic']:.2f} | {mean['lanczos']:.2f} "
                 f"| **{mean['model']:.2f}** | {mean['tiled']:.2f} | **{mean['model'] - mean['lanczos']:+.2f}** "
                 f"| {max(r.gap_max for r in rows)} / {sum(r.gap_mean for r in rows) / len(rows):.4f} "
                 f"| {seconds['lanczos'] * 1000:.0f} / {seconds['model'] * 1000:.0f} / "
                 f"{seconds['tiled'] * 1000:.0f} ms |")
    lines += ["", "Against Lanczos in the same run (mean over the photographs): "
              + ", ".join(f"{name} {mean[key] - mean['lanczos']:+.2f} dB" for key, name in
                          (("nearest", "nearest"), ("bicubic", "bicubic"), ("model", "model"),
                           ("tiled", "model tiled")))
              + f"; model time {seconds['model'] / max(seconds['lanczos'], 1e-9):.0f}x Lanczos's."]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="upscaler files spandrel can load")
    parser.add_argument("--tile", type=int, default=64, help="tile side in input pixels (smaller than the photos)")
    parser.add_argument("--overlap", type=int, default=16, help="context pixels around each tile")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runner", choices=("auto", "engine", "own"), default="auto",
                        help="engine: modules.upscaling (what users get); own: this script's; auto: engine if present")
    parser.add_argument("--card", action="store_true", help="write each table into the model's card")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from tools.upscaler.train import passive_waiting

    passive_waiting()  # before torch's OpenMP starts: spinning threads distort times on a shared machine
    import torch

    from tools.upscaler.card import card_path, replace_benchmark

    torch.set_num_threads(args.threads)
    for model_file in args.models:
        runner = make_runner(model_file, args.runner)
        rows = evaluate(runner, args.tile, args.overlap)
        command = (f"python bench/eval_upscaler.py {model_file.as_posix()} --tile {args.tile} "
                   f"--overlap {args.overlap} --threads {args.threads}")
        text = (f"`{command}`\n\n{runner.architecture}, {runner.scale}x, run by {runner.label} on the CPU with "
                f"{args.threads} thread(s); tiles of {args.tile} input px overlapping by {args.overlap} px.\n\n"
                + table(rows, runner.scale))
        print(f"## {model_file.name}\n\n{text}\n", flush=True)
        if args.card:
            replace_benchmark(card_path(model_file), text)
            print(f"(written into {card_path(model_file)})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
