"""Transparency and masks, in one place: every front end and the engine read an image's alpha the same way.

Pillow keeps transparency in several forms: an alpha band (RGBA, LA, PA) or a ``transparency`` entry in the image's
info (a palette or grey PNG with one transparent colour, a GIF). Each function here accepts all of them, so a
palette PNG with a transparent colour means the same thing to the inpaint tab, the native API, OpenAI's edits and
Stability's inpaint. Sfumato's masks are ``L`` images, white where the picture is to be repainted.
"""

from __future__ import annotations

from PIL import Image, ImageOps

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# Modes a PNG holds as they are (anything else is converted before writing).
PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")


def carries_alpha(image: Image.Image) -> bool:
    """Whether the image has an alpha band or a transparent colour at all (opaque or not)."""
    return image.mode in ALPHA_MODES or "transparency" in image.info


def alpha_of(image: Image.Image) -> Image.Image:
    """The image's opacity as ``L`` (255 = opaque), whichever way it stores transparency."""
    if not carries_alpha(image):
        return Image.new("L", image.size, 255)
    return image.convert("RGBA").getchannel("A")


def has_transparency(image: Image.Image | None) -> bool:
    """Whether any pixel is less than fully opaque."""
    if image is None or not carries_alpha(image):
        return False
    return alpha_of(image).getextrema()[0] < 255


def mask_from_transparency(image: Image.Image) -> Image.Image:
    """The repaint mask a transparent image implies: its transparent pixels (OpenAI's and A1111's convention)."""
    return ImageOps.invert(alpha_of(image))


def binary_mask(mask: Image.Image, threshold: int = 128) -> Image.Image:
    """Any mask image as black/white ``L`` (white = repaint). A mask with transparent parts (a drawn layer, a mask
    on a transparent background) is its opaque part; an opaque one is its brightness."""
    grey = alpha_of(mask) if has_transparency(mask) else mask.convert("L")
    return grey.point(lambda value: 255 if value >= threshold else 0)


def flatten(image: Image.Image, background: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """RGB, with transparent pixels over ``background`` (black, as A1111 does for init images)."""
    if image.mode == "RGB":
        return image
    if not carries_alpha(image):
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, background)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def storable(image: Image.Image, fmt: str = "png") -> Image.Image:
    """The image in a mode ``fmt`` can hold, keeping transparency where the format can (PNG, WEBP)."""
    if fmt == "png":
        if image.mode in PNG_MODES:
            return image
        return image.convert("RGBA" if carries_alpha(image) else "RGB")
    if fmt == "webp":
        return image if image.mode in ("RGB", "RGBA") else image.convert("RGBA" if carries_alpha(image) else "RGB")
    return image if image.mode in ("RGB", "L", "CMYK") else image.convert("RGB")  # JPEG
