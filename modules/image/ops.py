"""Pixel-space preparation for img2img, inpaint and outpaint, with Pillow and NumPy.

Kept apart from generation so each rule A1111 users rely on (resize modes, mask blur, "only masked",
fill modes, outpaint canvas) is a small function with its own test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from modules.image.masks import binary_mask, flatten, mask_from_transparency

RESAMPLE = Image.Resampling.LANCZOS


def to_rgb(image: Image.Image) -> Image.Image:
    """Flatten transparency onto black, as A1111 does for init images."""
    return flatten(image)


def resize_image(image: Image.Image, width: int, height: int, mode: int) -> Image.Image:
    """A1111's resize modes: 0 just resize (stretch), 1 crop and resize (cover), 2 resize and fill (contain)."""
    if image.size == (width, height):
        return image
    if mode == 0:
        return image.resize((width, height), RESAMPLE)
    if mode == 1:
        return ImageOps.fit(image, (width, height), RESAMPLE)
    ratio = min(width / image.width, height / image.height)
    inner = image.resize((max(1, round(image.width * ratio)), max(1, round(image.height * ratio))), RESAMPLE)
    canvas = Image.new(image.mode, (width, height))
    left, top = (width - inner.width) // 2, (height - inner.height) // 2
    canvas.paste(inner, (left, top))
    # Fill the bands by stretching the image's edge rows/columns, so no hard black border is left to denoise.
    if inner.width < width:
        canvas.paste(inner.crop((0, 0, 1, inner.height)).resize((left, inner.height)), (0, top))
        right = width - left - inner.width
        canvas.paste(inner.crop((inner.width - 1, 0, inner.width, inner.height)).resize((right, inner.height)),
                     (left + inner.width, top))
    if inner.height < height:
        canvas.paste(canvas.crop((0, top, width, top + 1)).resize((width, top)), (0, 0))
        bottom = height - top - inner.height
        canvas.paste(canvas.crop((0, top + inner.height - 1, width, top + inner.height)).resize((width, bottom)),
                     (0, top + inner.height))
    return canvas


def mask_from_image(image: Image.Image) -> Image.Image:
    """A mask from an image's transparency: transparent pixels are the ones to repaint."""
    return mask_from_transparency(image)


def prepare_mask(mask: Image.Image, invert: bool) -> Image.Image:
    """Binary L mask (255 = repaint). Any drawn or uploaded mask is thresholded so stray antialiasing is not noise."""
    # A drawn layer: painted strokes are opaque; an uploaded mask image with full alpha uses its brightness.
    binary = binary_mask(mask)
    return ImageOps.invert(binary) if invert else binary


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


@dataclass(frozen=True)
class Crop:
    """The region "only masked" inpainting works on, in the original image's coordinates."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)


def masked_region(mask: Image.Image, padding: int, width: int, height: int) -> Crop:
    """Bounding box of the mask grown by ``padding``, widened to the working aspect ratio and kept inside the image."""
    box = mask.getbbox()
    if box is None:
        return Crop(0, 0, mask.width, mask.height)
    left, top, right, bottom = box
    left, top = max(0, left - padding), max(0, top - padding)
    right, bottom = min(mask.width, right + padding), min(mask.height, bottom + padding)
    target = width / height
    cw, ch = right - left, bottom - top
    if cw / ch < target:
        grow = min(mask.width, round(ch * target)) - cw
        left, right = left - grow // 2, right + grow - grow // 2
    else:
        grow = min(mask.height, round(cw / target)) - ch
        top, bottom = top - grow // 2, bottom + grow - grow // 2
    shift_x = -left if left < 0 else min(0, mask.width - right)
    shift_y = -top if top < 0 else min(0, mask.height - bottom)
    return Crop(max(0, left + shift_x), max(0, top + shift_y),
                min(mask.width, right + shift_x), min(mask.height, bottom + shift_y))


def fill_masked(image: Image.Image, mask: Image.Image, mode: int, seed: int) -> Image.Image:
    """Pre-fill the area to repaint. 0 fill: colours of the surroundings; 1 original: untouched;
    2 latent noise: random pixels; 3 latent nothing: flat grey (what a zero latent decodes to)."""
    if mode == 1:
        return image
    if mode == 0:
        filled = _surrounding_colours(image, mask)
    elif mode == 2:
        noise = np.random.default_rng(seed).integers(0, 256, (image.height, image.width, 3), dtype=np.uint8)
        filled = Image.fromarray(noise, "RGB")
    else:
        filled = Image.new("RGB", image.size, (127, 127, 127))
    result = image.copy()
    result.paste(filled, mask=mask)
    return result


def _surrounding_colours(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Spread the kept colours into the hole (A1111's "fill"): normalised box blurs, coarse to fine, where each
    finer pass overwrites the coarser estimate wherever it has enough kept pixels in reach."""
    keep = 1.0 - np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    colour = np.asarray(image.convert("RGB"), dtype=np.float32)
    estimate = np.broadcast_to(colour.reshape(-1, 3).mean(0) if keep.sum() == 0 else
                               (colour * keep).reshape(-1, 3).sum(0) / keep.sum(), colour.shape).copy()
    for radius in (64, 16, 4, 1):
        weight = _box_blur(keep, radius)
        blurred = _box_blur(colour * keep, radius)
        support = weight > 0.05
        estimate = np.where(support, blurred / np.maximum(weight, 1e-6), estimate)
    result = np.where(keep > 0.5, colour, estimate)
    return Image.fromarray(np.clip(result, 0, 255).astype(np.uint8), "RGB")


def _box_blur(array: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window with edge clamping, via cumulative sums (no SciPy needed)."""
    out = array
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius + 1, radius)
        padded = np.pad(out, pad, mode="edge")
        summed = np.cumsum(padded, axis=axis, dtype=np.float64)
        size = out.shape[axis]
        upper = np.take(summed, np.arange(2 * radius + 1, 2 * radius + 1 + size), axis=axis)
        lower = np.take(summed, np.arange(0, size), axis=axis)
        out = ((upper - lower) / (2 * radius + 1)).astype(np.float32)
    return out


def outpaint_canvas(
    image: Image.Image, left: int, right: int, top: int, bottom: int
) -> tuple[Image.Image, Image.Image]:
    """Enlarge the canvas, rounding the added margins up so the new size is a multiple of 8.

    Returns the canvas (new area pre-filled by stretching the edge pixels) and the mask of the new area."""
    width = image.width + left + right
    height = image.height + top + bottom
    extra_w, extra_h = (-width) % 8, (-height) % 8
    right += extra_w
    bottom += extra_h
    width, height = width + extra_w, height + extra_h
    canvas = _edge_extend(image, left, right, top, bottom)
    mask = Image.new("L", (width, height), 255)
    mask.paste(0, (left, top, left + image.width, top + image.height))
    return canvas, mask


def _edge_extend(image: Image.Image, left: int, right: int, top: int, bottom: int) -> Image.Image:
    array = np.asarray(image.convert("RGB"))
    padded = np.pad(array, ((top, bottom), (left, right), (0, 0)), mode="edge")
    return Image.fromarray(padded, "RGB")


def composite_unmasked(original: Image.Image, generated: Image.Image, soft_mask: Image.Image) -> Image.Image:
    """Put the original pixels back wherever the (blurred) mask is 0, so untouched areas come back byte-identical."""
    generated = generated.convert("RGB")
    if generated.size != original.size:
        generated = generated.resize(original.size, RESAMPLE)
    return Image.composite(generated, original.convert("RGB"), soft_mask)
