"""A1111's "SD upscale" (Stability's conservative upscale): enlarge, then redraw in overlapping img2img tiles.

An upscaler alone only sharpens what is there; a low-denoise img2img pass over the enlarged picture lets the
checkpoint add detail at the new size. The picture is too large for one pass, so it is cut into tiles of the
model's own size that overlap by ``overlap`` pixels; each tile is redrawn with the request's prompt and seed, and
the tiles are blended back with linear ramps across the overlaps so no seam shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from PIL import Image

from modules.errors import RequestError
from modules.image.masks import flatten
from modules.image.request import GenerationRequest
from modules.image.results import GeneratedImage, GenerationResult
from modules.jobs.control import JobControl, Progress

Generate = Callable[[GenerationRequest, JobControl], GenerationResult]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of ``tile`` pixels start along ``length`` so that neighbours overlap by at least ``overlap``."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    count = -(-(length - tile) // stride) + 1
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def _ramp(size: int, start: int, tile: int, overlap: int, starts: list[int]) -> np.ndarray:
    """A tile's weight along one axis: 1 inside, rising linearly over the part it shares with a neighbour."""
    weight = np.ones(tile, dtype=np.float32)
    index = starts.index(start)
    if index > 0:
        shared = starts[index - 1] + tile - start
        if shared > 0:
            weight[:shared] = np.linspace(0, 1, shared + 2, dtype=np.float32)[1:-1]
    if index < len(starts) - 1:
        shared = start + tile - starts[index + 1]
        if shared > 0:
            weight[tile - shared:] = np.linspace(1, 0, shared + 2, dtype=np.float32)[1:-1]
    return weight


def sd_upscale(request: GenerationRequest, tile_size: tuple[int, int], enlarge: Callable[[Image.Image, tuple[int, int]],
               Image.Image], generate: Generate, control: JobControl, save: Callable[[GeneratedImage], GeneratedImage]
               ) -> GenerationResult:
    """Run ``request`` (img2img with ``sd_upscale``): ``enlarge`` the init image, redraw each tile with
    ``generate`` (the ordinary generation on the tile), blend, and ``save`` the result."""
    settings = request.sd_upscale
    assert settings is not None and request.init_image is not None
    source = flatten(request.init_image)
    target = (round(source.width * settings.scale), round(source.height * settings.scale))
    enlarged = enlarge(source, target)
    tile_w, tile_h = min(tile_size[0], target[0]) // 8 * 8 or 8, min(tile_size[1], target[1]) // 8 * 8 or 8
    # An overlap of more than a quarter of a tile buys no quality and multiplies the tiles (A1111's 64 px default is
    # meant for 512 px tiles): capped there.
    overlap = min(settings.overlap, min(tile_w, tile_h) // 4)
    xs, ys = tile_starts(target[0], tile_w, overlap), tile_starts(target[1], tile_h, overlap)
    total = len(xs) * len(ys)
    canvas = np.zeros((target[1], target[0], 3), dtype=np.float32)
    weights = np.zeros((target[1], target[0], 1), dtype=np.float32)
    first: GeneratedImage | None = None
    interrupted = False
    progress = Progress(job_count=total, steps=1)
    for number, (top, left) in enumerate((top, left) for top in ys for left in xs):
        if control.interrupted.is_set():
            interrupted = True
            break
        tile = enlarged.crop((left, top, left + tile_w, top + tile_h))
        sub = dataclasses.replace(request, init_image=tile, sd_upscale=None, width=tile_w, height=tile_h,
                                  batch_size=1, n_iter=1, save_images=False, make_grid=False, resize_mode=0,
                                  safety="off")  # the blended picture is checked whole, by ``save``
        result = generate(sub, _tile_control(control, progress, number))
        if not result.images:
            interrupted = True
            break
        first = first or result.images[0]
        pixels = np.asarray(result.images[0].image.convert("RGB"), dtype=np.float32)
        weight = np.outer(_ramp(target[1], top, tile_h, overlap, ys),
                          _ramp(target[0], left, tile_w, overlap, xs))[..., None]
        canvas[top:top + tile_h, left:left + tile_w] += pixels * weight
        weights[top:top + tile_h, left:left + tile_w] += weight
    if first is None:
        raise RequestError("init_image", "SD upscale was interrupted before its first tile")
    covered = weights > 0
    blended = np.where(covered, canvas / np.maximum(weights, 1e-6), np.asarray(enlarged, dtype=np.float32))
    picture = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
    extra = (f"SD upscale overlap: {overlap}, SD upscale upscaler: {settings.upscaler}, "
             f"SD upscale tiles: {total}")
    infotext = _with_size_and_extras(first.infotext, picture.size, extra)
    item = save(GeneratedImage(picture, first.seed, first.subseed, first.prompt, first.negative_prompt, infotext))
    summary = dataclasses.replace(result.summary, width=picture.width, height=picture.height)
    return GenerationResult(images=[item], summary=summary, interrupted=interrupted)


def _tile_control(control: JobControl, progress: Progress, number: int) -> JobControl:
    """The job's stop flags for one tile; its step progress reported as tile ``number`` of the whole job."""
    def report(tile_progress: Progress) -> None:
        progress.job_no, progress.step, progress.steps = number, tile_progress.step, max(1, tile_progress.steps)
        progress.preview = tile_progress.preview
        if tile_progress.has_preview:
            progress.offer_preview(tile_progress.current_preview)
        progress.text = f"Tile {number + 1} of {progress.job_count}"
        control.report(progress)

    return JobControl(interrupted=control.interrupted, skipped=control.skipped, on_progress=report,
                      preview_interval=control.preview_interval, preview_method=control.preview_method)


def _with_size_and_extras(infotext: str, size: tuple[int, int], extra: str) -> str:
    """The tile's infotext made the picture's: its ``Size`` replaced, the SD upscale settings added before
    ``Version`` (which A1111 keeps last)."""
    head, newline, line = infotext.rpartition("\n")
    parts = [part for part in line.split(", ") if not part.startswith("Size: ")]
    version = [part for part in parts if part.startswith("Version: ")]
    rest = [part for part in parts if not part.startswith("Version: ")]
    line = ", ".join([*rest, f"Size: {size[0]}x{size[1]}", extra, *version])
    return f"{head}{newline}{line}"
