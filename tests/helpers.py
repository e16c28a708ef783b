"""Small helpers several test modules share (not tests themselves)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from modules.request import GenerationRequest


def pixels(image: Image.Image) -> np.ndarray:
    """An image as signed integers, so differences between two images do not wrap around."""
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def txt2img(**fields) -> GenerationRequest:
    """A quick 64x64 request on the tiny models; ``fields`` override the defaults."""
    base = dict(prompt="a red circle on a blue background", steps=4, width=64, height=64, seed=1234)
    base.update(fields)
    return GenerationRequest(**base)
