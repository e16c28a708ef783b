"""The sizes an upscale goes through: the asked output (validated before any model runs) and the model passes.

Front ends call ``output_size`` when a request arrives, so a bad scale or an output too large for the server is
refused with the A1111 field it came from before the job is queued; ``upscale`` calls it again as a guard.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from modules.errors import RequestError

MAX_SCALE = 8.0
DEFAULT_MAX_SIDE = 16384
# A1111 runs a model at most three times in a row (e.g. a 2x model three times for 8x).
MAX_MODEL_PASSES = 3


def _number(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RequestError(field, f"must be a number, got {value!r}")
    return float(value)


def check_scale(scale: float) -> float:
    """The "upscale by" factor: more than 0 (downscaling is allowed, as in A1111) and at most 8."""
    value = _number("upscaling_resize", scale)
    if not (0 < value <= MAX_SCALE):  # written so that NaN fails too
        raise RequestError("upscaling_resize", f"must be more than 0 and at most {MAX_SCALE:g}, got {scale!r}")
    return value


def check_side(field: str, value: int, max_side: int = DEFAULT_MAX_SIDE) -> int:
    """A target width or height in pixels: a whole number from 1 to ``max_side``."""
    number = _number(field, value)
    if not number.is_integer() or not (1 <= number <= max_side):
        raise RequestError(field, f"must be a whole number of pixels from 1 to {max_side}, got {value!r}")
    return int(number)


def check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    """Refuse an output larger than the server allows (field "upscaling_resize": it is what the user changes)."""
    if max_pixels is not None and width * height > max_pixels:
        raise RequestError("upscaling_resize", f"the result would be {width}x{height} = {width * height:,} pixels, "
                                               f"more than the {max_pixels:,} this server allows")


def check_visibility(visibility: float) -> float:
    """How much of the second upscaler shows in the result, from 0 (none) to 1 (only it)."""
    value = _number("extras_upscaler_2_visibility", visibility)
    if not (0.0 <= value <= 1.0):
        raise RequestError("extras_upscaler_2_visibility", f"must be between 0 and 1, got {visibility!r}")
    return value


def output_size(image_size: tuple[int, int], *, scale: float | None = None, size: tuple[int, int] | None = None,
                max_side: int = DEFAULT_MAX_SIDE, max_pixels: int | None = None) -> tuple[int, int]:
    """The (width, height) an upscale of an ``image_size`` picture produces, after checking every limit.

    Give ``scale`` (A1111's "upscale by") or ``size`` (its "upscale to"), not both. A scaled side is rounded to the
    nearest pixel, never below 1. (A1111 also rounds down to a multiple of 8; a front end that wants that exact
    behaviour computes the size itself and passes ``size``.)
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    width, height = image_size
    if size is not None:
        target = (check_side("upscaling_resize_w", size[0], max_side),
                  check_side("upscaling_resize_h", size[1], max_side))
    else:
        factor = check_scale(scale)  # type: ignore[arg-type]
        target = (max(1, round(width * factor)), max(1, round(height * factor)))
        if max(target) > max_side:
            raise RequestError("upscaling_resize", f"the result would be {target[0]}x{target[1]}; a side may be at "
                                                   f"most {max_side} pixels")
    check_pixels(target[0], target[1], max_pixels)
    return target


@dataclass(frozen=True)
class ModelPass:
    """One run of the model: its input size, and the size the picture is shrunk from first (None when it is not)."""

    input_size: tuple[int, int]
    scale: int
    shrunk_from: tuple[int, int] | None = None

    @property
    def output_size(self) -> tuple[int, int]:
        return self.input_size[0] * self.scale, self.input_size[1] * self.scale


def plan_passes(image_size: tuple[int, int], target: tuple[int, int], model_scale: int, *,
                max_pixels: int | None = None) -> tuple[ModelPass, ...]:
    """How often the model runs, as A1111 does it: at least once, again while the picture is smaller than the
    target, at most three times; a Lanczos resize then gives the exact target.

    Running at the model's own scale keeps its quality, but overshooting can be huge (a 4x model asked for 4.1x runs
    twice: 16x). With ``max_pixels`` no pass may produce more than that many pixels: the pass's input is first
    shrunk (Lanczos) to the largest size whose output fits, and that pass is the last.
    """
    width, height = image_size
    passes: list[ModelPass] = []
    for _ in range(MAX_MODEL_PASSES):
        shrunk_from = None
        if max_pixels is not None and width * height * model_scale**2 > max_pixels:
            factor = math.sqrt(max_pixels / (width * height * model_scale**2))
            shrunk_from = (width, height)
            width, height = max(1, math.floor(width * factor)), max(1, math.floor(height * factor))
        passes.append(ModelPass((width, height), model_scale, shrunk_from))
        width, height = width * model_scale, height * model_scale
        if model_scale == 1 or shrunk_from is not None or (width >= target[0] and height >= target[1]):
            break
    return tuple(passes)
