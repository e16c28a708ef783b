"""Applying the filter to a finished image: check it, hide it when flagged, and say so in its infotext.

Called by the generation function on each image after decoding and before anything saves it, so a flagged image
never reaches the outputs folder, the job store or an API answer in the clear.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from PIL import Image, ImageFilter

from modules.errors import RequestError

if TYPE_CHECKING:
    from modules.image.results import GeneratedImage
    from modules.safety.checker import SafetyCheckers

INFOTEXT_KEY = "NSFW"


def obscure(image: Image.Image, mode: str) -> Image.Image:
    """``black``: every pixel black; ``blur``: a Gaussian blur wide enough (an eighth of the longer side) that
    only colour blotches remain."""
    if mode == "black":
        return Image.new(image.mode, image.size, "black")
    radius = max(4.0, max(image.size) / 8)
    return image.filter(ImageFilter.GaussianBlur(radius))


def marked(infotext: str, mode: str) -> str:
    """The infotext with ``NSFW: filtered (<mode>)`` on its parameter line, before ``Version`` (kept last, as
    A1111 does); appended when there is no parameter line to extend."""
    entry = f"{INFOTEXT_KEY}: filtered ({mode})"
    head, newline, line = infotext.rpartition("\n")
    if not line.startswith("Steps: "):
        return f"{infotext}\n{entry}" if infotext else entry
    version = line.rfind(", Version: ")
    line = f"{line[:version]}, {entry}{line[version:]}" if version >= 0 else f"{line}, {entry}"
    return f"{head}{newline}{line}"


def screen_images(items: list[GeneratedImage], mode: str | None, checkers: SafetyCheckers | None
                  ) -> list[GeneratedImage]:
    """Each image checked when ``mode`` asks for filtering (``nsfw`` set to the verdict), flagged ones blurred or
    blacked out and marked in their infotext; with ``off`` (or None) the images come back untouched."""
    if mode in (None, "off") or not items:
        return items
    if checkers is None:
        raise RequestError("safety", "NSFW filtering was asked for but this studio has no safety checker service")
    verdicts = checkers.flags([item.image for item in items])
    return [replace(item, image=obscure(item.image, mode), infotext=marked(item.infotext, mode), nsfw=True)
            if flagged else replace(item, nsfw=False) for item, flagged in zip(items, verdicts, strict=True)]


def screen_image(item: GeneratedImage, mode: str | None, checkers: SafetyCheckers | None) -> GeneratedImage:
    """``screen_images`` for one image."""
    return screen_images([item], mode, checkers)[0]
