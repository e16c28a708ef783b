"""The upscaling engine behind A1111's Extras tab: upscaler models found in A1111's folders, loaded with spandrel,
run in overlapping tiles, optionally blended with a second upscaler.

Front ends use only the names below; the job queue's runner calls ``upscale_blended`` from its worker thread with
the worker's ``UpscalerModels``. Nothing is loaded and torch is not imported until an upscale runs.
"""

from modules.upscaling.loading import LoadedUpscaler, UpscalerLoadError, UpscalerModels, load_upscaler, pick_dtype
from modules.upscaling.registry import (
    BUILTIN_UPSCALERS,
    LANCZOS,
    MODEL_SUFFIXES,
    NEAREST,
    NONE,
    UPSCALER_FOLDERS,
    UpscalerInfo,
    UpscalerRegistry,
    scale_from_name,
)
from modules.upscaling.sizes import (
    DEFAULT_MAX_SIDE,
    MAX_SCALE,
    ModelPass,
    check_pixels,
    check_scale,
    check_side,
    check_visibility,
    output_size,
    plan_passes,
)
from modules.upscaling.tiling import TileOptions, UpscaleInterrupted, default_tile_options, run_tiled
from modules.upscaling.upscale import upscale, upscale_blended

__all__ = [
    "BUILTIN_UPSCALERS",
    "DEFAULT_MAX_SIDE",
    "LANCZOS",
    "MAX_SCALE",
    "MODEL_SUFFIXES",
    "NEAREST",
    "NONE",
    "UPSCALER_FOLDERS",
    "LoadedUpscaler",
    "ModelPass",
    "TileOptions",
    "UpscaleInterrupted",
    "UpscalerInfo",
    "UpscalerLoadError",
    "UpscalerModels",
    "UpscalerRegistry",
    "check_pixels",
    "check_scale",
    "check_side",
    "check_visibility",
    "default_tile_options",
    "load_upscaler",
    "output_size",
    "pick_dtype",
    "plan_passes",
    "run_tiled",
    "scale_from_name",
    "upscale",
    "upscale_blended",
]
