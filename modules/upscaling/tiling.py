"""Running an image-to-image model over a large picture in overlapping tiles.

An upscaler's memory use grows with the area it sees at once (transformer models such as SwinIR, HAT and DAT
quadratically per window, all of them linearly in activations), so a 2048x2048 picture at 4x does not fit on most
GPUs in one go. Cutting it into tiles bounds memory, but a model sees no context past a tile's edge, so its output
there differs from what it would produce with the neighbouring pixels in view. Two measures hide that:

* neighbouring tiles overlap, and their outputs are mixed with a smooth window whose weight is zero near each tile's
  own edge and rises along a cosine to one, so every output pixel comes mostly from a tile that saw context around it
  and no hard seam is left where one tile ends;
* the whole picture is first padded by reflection (half the overlap on each side), so tiles on the picture's border
  also see plausible context, and the untiled run gets the same padding, which keeps tiled and untiled results alike.

Nothing here knows about model files: the model is any callable from a (1, C, h, w) tensor to a (1, C, h*s, w*s) one.

Measured (tests/test_upscaling.py's random-weight ESRGAN, Compact and SPAN models, 40x24 picture, float output in
0..255 units): 20 px tiles overlapping by 8 differ from the untiled run by at most 0.62 (mean 0.015 or less); 16 px
tiles by 6, at most 6.0 (mean 0.05); at the default 256/32 on a 600x400 picture, 0.000. For comparison, a cosine
over the whole overlap (no dead zone) gave up to 7.4 (mean 0.48), and plain averaging of overlaps as A1111 does up to
62 after rounding to 8 bits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modules.errors import RequestError

if TYPE_CHECKING:
    import torch

# Weight kept for pixels in a tile's dead zone: tiny, so the division below never meets a zero total weight.
_MIN_WEIGHT = 1e-6
_SMALLEST_TILE = 8


class UpscaleInterrupted(Exception):
    """The user stopped an upscale between two tiles; ``done`` of ``total`` tiles had run."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"upscale interrupted after {done} of {total} tiles")
        self.done = done
        self.total = total


@dataclass(frozen=True)
class TileOptions:
    """How to cut the model's input into tiles, in input pixels.

    ``tile_size`` bounds the side of what the model sees at once (0 runs the whole picture in one go); ``overlap`` is
    how many pixels neighbouring tiles share: more overlap hides seams better and costs more compute.
    """

    tile_size: int = 256
    overlap: int = 32

    def __post_init__(self) -> None:
        for name, value in (("tile_size", self.tile_size), ("tile_overlap", self.overlap)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RequestError(name, f"must be a whole number of pixels, 0 or more; got {value!r}")
        if self.tile_size and self.tile_size < _SMALLEST_TILE:
            raise RequestError("tile_size", f"must be 0 (no tiling) or at least {_SMALLEST_TILE}; got {self.tile_size}")
        if self.tile_size and 2 * self.overlap >= self.tile_size:
            raise RequestError("tile_overlap", f"must be less than half the tile size ({self.tile_size}); "
                                               f"got {self.overlap}")

    @property
    def margin(self) -> int:
        """Reflection padding around the whole picture: half an overlap of context for the border tiles."""
        return self.overlap // 2


def default_tile_options(device_type: str, total_memory: int | None) -> TileOptions:
    """Tile options that fit the device: big tiles where memory allows, since each tile costs its overlap again.

    Sizes follow what the large transformer upscalers (HAT-L, DAT) need per tile at 4x in fp16: about 2 GiB at 256,
    6 GiB at 512; convolutional ones (ESRGAN, Compact, SPAN) need far less. On the CPU memory is rarely the limit, but
    tiles still keep a 4x upscale of a big picture from allocating gigabytes of activations at once.
    """
    gib = 1024**3
    if device_type in ("cuda", "rocm", "xpu") and total_memory:
        if total_memory >= 16 * gib:
            return TileOptions(tile_size=512, overlap=32)
        if total_memory >= 8 * gib:
            return TileOptions(tile_size=384, overlap=32)
    return TileOptions(tile_size=256, overlap=32)


def tile_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Where tiles of ``tile_size`` start along one side of ``length``, sharing at least ``overlap`` pixels.

    Tiles are spread evenly over the side (rather than stepping by a fixed stride and leaving a sliver at the end),
    so every tile has the full size and every overlap is about the same.
    """
    if tile_size <= 0 or length <= tile_size:
        return [0]
    stride = tile_size - overlap
    count = math.ceil((length - overlap) / stride)
    return [round(index * (length - tile_size) / (count - 1)) for index in range(count)]


def count_tiles(width: int, height: int, options: TileOptions) -> int:
    """How many model calls one pass over a ``width`` x ``height`` picture takes (progress needs it up front)."""
    margin = options.margin
    return (len(tile_starts(width + 2 * margin, options.tile_size, options.overlap))
            * len(tile_starts(height + 2 * margin, options.tile_size, options.overlap)))


def _cosine_ramp(length: int, overlap: int) -> list[float]:
    """Weight of each of the first ``length`` pixels of a tile whose first ``overlap`` pixels are shared.

    The first quarter of the overlap is a dead zone (the tile saw almost no context there), then the weight rises
    along half a cosine to one at three quarters. Two neighbours' ramps over the same overlap add up to one.
    """
    dead = overlap / 4
    rise = max(overlap - 2 * dead, 1e-9)
    weights = []
    for position in range(length):
        t = min(max((position + 0.5 - dead) / rise, 0.0), 1.0)
        weights.append(max(0.5 - 0.5 * math.cos(math.pi * t), _MIN_WEIGHT) if position < overlap else 1.0)
    return weights


def _axis_windows(starts: list[int], span: int, scale: int) -> list[torch.Tensor]:
    """Per-tile weights along one axis, at output resolution, normalised so the tiles' weights sum to one."""
    import torch

    windows = []
    out_span = span * scale
    for index, start in enumerate(starts):
        left = (starts[index - 1] + span - start) * scale if index > 0 else 0
        right = (start + span - starts[index + 1]) * scale if index + 1 < len(starts) else 0
        weight = torch.ones(out_span, dtype=torch.float32)
        if left:
            weight *= torch.tensor(_cosine_ramp(out_span, left))
        if right:
            weight *= torch.tensor(_cosine_ramp(out_span, right)).flip(0)
        windows.append(weight)
    total = torch.zeros((starts[-1] + span) * scale, dtype=torch.float32)
    for start, weight in zip(starts, windows, strict=True):
        total[start * scale:start * scale + out_span] += weight
    return [weight / total[start * scale:start * scale + out_span]
            for start, weight in zip(starts, windows, strict=True)]


def reflect_pad(image: torch.Tensor, margin: int) -> torch.Tensor:
    """Pad a (1, C, H, W) tensor by ``margin`` on every side, mirroring the picture (replicating past its size)."""
    import torch.nn.functional as F

    if margin <= 0:
        return image
    height, width = image.shape[-2:]
    reflect_w, reflect_h = min(margin, width - 1), min(margin, height - 1)
    if reflect_w or reflect_h:
        image = F.pad(image, (reflect_w, reflect_w, reflect_h, reflect_h), mode="reflect")
    rest_w, rest_h = margin - reflect_w, margin - reflect_h
    if rest_w or rest_h:
        image = F.pad(image, (rest_w, rest_w, rest_h, rest_h), mode="replicate")
    return image


def run_tiled(
    image: torch.Tensor,
    model: Callable[[torch.Tensor], torch.Tensor],
    *,
    scale: int,
    options: TileOptions,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    on_tile: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Run ``model`` over ``image`` (a (1, C, H, W) float tensor on the CPU) tile by tile; return (1, C, H*s, W*s).

    Tiles go to ``device`` in ``dtype`` one at a time and their outputs come back to the CPU in float32, so the
    accelerator only ever holds one tile. ``should_stop`` is asked before each tile and raises ``UpscaleInterrupted``;
    ``on_tile`` is called after each one.
    """
    import torch

    margin = options.margin
    padded = reflect_pad(image, margin)
    channels, height, width = padded.shape[1:]
    span_y, span_x = (min(options.tile_size, height), min(options.tile_size, width)) if options.tile_size else (
        height, width)
    starts_y = tile_starts(height, options.tile_size, options.overlap)
    starts_x = tile_starts(width, options.tile_size, options.overlap)
    windows_y = _axis_windows(starts_y, span_y, scale)
    windows_x = _axis_windows(starts_x, span_x, scale)
    total = len(starts_y) * len(starts_x)
    output = torch.zeros((1, channels, height * scale, width * scale), dtype=torch.float32)
    done = 0
    for y, window_y in zip(starts_y, windows_y, strict=True):
        for x, window_x in zip(starts_x, windows_x, strict=True):
            if should_stop is not None and should_stop():
                raise UpscaleInterrupted(done, total)
            tile = padded[..., y:y + span_y, x:x + span_x].to(device=device, dtype=dtype or padded.dtype)
            result = model(tile)
            expected = (span_y * scale, span_x * scale)
            if tuple(result.shape[-2:]) != expected:
                raise RuntimeError(f"the model turned a {span_x}x{span_y} tile into {result.shape[-1]}x"
                                   f"{result.shape[-2]}, not the {expected[1]}x{expected[0]} its scale {scale} means")
            weight = window_y[:, None] * window_x[None, :]
            output[..., y * scale:(y + span_y) * scale, x * scale:(x + span_x) * scale] += (
                result.to(device="cpu", dtype=torch.float32) * weight)
            del tile, result
            done += 1
            if on_tile is not None:
                on_tile()
    edge = margin * scale
    return output[..., edge:output.shape[-2] - edge, edge:output.shape[-1] - edge]
