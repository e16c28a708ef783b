"""Upscaling a picture the way A1111's Extras tab does: one upscaler, optionally a second one blended in.

The picture is resized to exactly the asked size. A model runs at its own scale (again while the picture is still
smaller than asked, as A1111 does), then Lanczos makes the exact size; "Lanczos" and "Nearest" are plain Pillow
resizes; "None" means "no upscaling" as in A1111's Extras: the picture comes back unchanged, at its own size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from modules.image.masks import alpha_of, carries_alpha
from modules.upscaling.loading import LoadedUpscaler, UpscalerModels
from modules.upscaling.registry import LANCZOS, NEAREST, NONE, UpscalerInfo
from modules.upscaling.sizes import DEFAULT_MAX_SIDE, ModelPass, check_visibility, output_size, plan_passes
from modules.upscaling.tiling import TileOptions, UpscaleInterrupted, count_tiles, default_tile_options, run_tiled

if TYPE_CHECKING:
    import torch

ProgressCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]
_RESAMPLE = MappingProxyType({LANCZOS: Image.Resampling.LANCZOS, NEAREST: Image.Resampling.NEAREST})
# Before a model's scale is known (it is not loaded yet), progress assumes the most common one.
_ASSUMED_SCALE = 4


@dataclass
class _Progress:
    """Counts steps (model tiles; a built-in resize is one step) across every stage of one upscale."""

    callback: ProgressCallback | None
    planned: dict[str, int] = field(default_factory=dict)
    done: int = 0

    def plan(self, stage: str, steps: int) -> None:
        self.planned[stage] = steps

    def step(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, max(sum(self.planned.values()), self.done))


def _normalised(image: Image.Image) -> Image.Image:
    """RGB, or RGBA when the picture has transparency: the two modes the models and blends work in."""
    if image.mode in ("RGB", "RGBA"):
        return image
    return image.convert("RGBA" if carries_alpha(image) else "RGB")


def _to_tensor(image: Image.Image) -> torch.Tensor:
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def _to_image(tensor: torch.Tensor) -> Image.Image:
    import torch

    array = tensor[0].clamp(0, 1).mul(255).round().to(dtype=torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def _tile_options(loaded: LoadedUpscaler, tile: TileOptions) -> TileOptions:
    """Models that tile internally (spandrel says so) get the whole picture; the reflection margin stays."""
    return tile if loaded.tiling_allowed else TileOptions(tile_size=0, overlap=tile.overlap)


def _count_steps(passes: tuple[ModelPass, ...], tile: TileOptions) -> int:
    return sum(count_tiles(*model_pass.input_size, tile) for model_pass in passes)


def _run_model(rgb: Image.Image, loaded: LoadedUpscaler, target: tuple[int, int], *, tile: TileOptions,
               max_pixels: int | None, progress: _Progress, stage: str, should_stop: StopCheck | None) -> Image.Image:
    """The model's passes over an RGB picture, then Lanczos to ``target``."""
    import torch

    options = _tile_options(loaded, tile)
    passes = plan_passes(rgb.size, target, loaded.scale, max_pixels=max_pixels)
    progress.plan(stage, _count_steps(passes, options))
    tensor = _to_tensor(rgb)
    with torch.inference_mode():
        for model_pass in passes:
            if model_pass.shrunk_from is not None:
                tensor = _to_tensor(_to_image(tensor).resize(model_pass.input_size, Image.Resampling.LANCZOS))
            tensor = run_tiled(tensor, loaded, scale=loaded.scale, options=options, device=loaded.device,
                               dtype=loaded.dtype, on_tile=progress.step, should_stop=should_stop)
    result = _to_image(tensor)
    del tensor
    return result if result.size == target else result.resize(target, Image.Resampling.LANCZOS)


def _run_stage(image: Image.Image, upscaler: UpscalerInfo, target: tuple[int, int], *, models: UpscalerModels,
               tile: TileOptions, max_pixels: int | None, progress: _Progress, stage: str,
               should_stop: StopCheck | None) -> Image.Image:
    """One upscaler's result at ``target``, in the (normalised) picture's mode."""
    if upscaler.builtin:
        if upscaler.name not in _RESAMPLE:
            raise ValueError(f"{upscaler.name!r} is not a resize this engine knows")
        result = image.resize(target, _RESAMPLE[upscaler.name])
        progress.step()
        return result
    if should_stop is not None and should_stop():
        raise UpscaleInterrupted(progress.done, sum(progress.planned.values()))
    loaded = models.get(upscaler)
    result = _run_model(image.convert("RGB") if image.mode != "RGB" else image, loaded, target, tile=tile,
                        max_pixels=max_pixels, progress=progress, stage=stage, should_stop=should_stop)
    if image.mode == "RGBA":  # models see colour only; transparency is resized like Lanczos would
        result.putalpha(alpha_of(image).resize(target, Image.Resampling.LANCZOS))
    return result


def _planned_steps(image: Image.Image, upscaler: UpscalerInfo, target: tuple[int, int], models: UpscalerModels,
                   tile: TileOptions, max_pixels: int | None) -> int:
    if upscaler.builtin:
        return 1
    scale = models.known_scale(upscaler) or _ASSUMED_SCALE
    return _count_steps(plan_passes(image.size, target, scale, max_pixels=max_pixels), tile)


def upscale_blended(
    image: Image.Image,
    first: UpscalerInfo,
    second: UpscalerInfo | None,
    visibility: float,
    *,
    models: UpscalerModels,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    tile: TileOptions | None = None,
    max_pixels: int | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> Image.Image:
    """A1111 Extras: ``first``'s result with ``second``'s blended over it (``Image.blend``, ``visibility`` 0..1).

    Give ``scale`` or ``size``. Limits are checked before any model loads. As in A1111, a first upscaler "None"
    returns the picture unchanged, and a second one "None" (or visibility 0) is not run; at visibility 1 the first
    is not run either, since it would not show. ``on_progress(done, total)`` counts model tiles (a built-in resize
    is one step); ``total`` may be corrected once a model whose scale was unknown is loaded. ``should_stop`` is
    checked between tiles and raises ``UpscaleInterrupted``. ``tile`` defaults to ``default_tile_options`` for the
    models' device type (the composition root should pass options built with the device's memory).
    """
    target = output_size(image.size, scale=scale, size=size, max_side=max_side, max_pixels=max_pixels)
    visibility = check_visibility(visibility)
    if first.name == NONE and first.builtin:
        return image.copy()
    if second is not None and second.name == NONE and second.builtin:
        second = None
    tile = tile if tile is not None else default_tile_options(models.device_type, None)
    picture = _normalised(image)
    stages = [("first", first)] if second is None or visibility == 0 else (
        [("second", second)] if visibility == 1 else [("first", first), ("second", second)])
    progress = _Progress(on_progress)
    for stage, upscaler in stages:
        progress.plan(stage, _planned_steps(picture, upscaler, target, models, tile, max_pixels))
    results = [_run_stage(picture, upscaler, target, models=models, tile=tile, max_pixels=max_pixels,
                          progress=progress, stage=stage, should_stop=should_stop) for stage, upscaler in stages]
    return results[0] if len(results) == 1 else Image.blend(results[0], results[1], visibility)


def upscale(
    image: Image.Image,
    upscaler: UpscalerInfo,
    *,
    models: UpscalerModels,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    tile: TileOptions | None = None,
    max_pixels: int | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> Image.Image:
    """``image`` upscaled by ``upscaler`` to ``scale`` times its size or to exactly ``size`` (width, height).

    RGB and RGBA pictures keep their mode (a model upscales the colour, Lanczos the transparency); grayscale and
    palette pictures come back RGB. See ``upscale_blended`` for progress, stopping and limits.
    """
    return upscale_blended(image, upscaler, None, 0.0, models=models, scale=scale, size=size, tile=tile,
                           max_pixels=max_pixels, max_side=max_side, on_progress=on_progress, should_stop=should_stop)
