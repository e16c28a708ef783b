"""Make the low-resolution input of a training pair from its high-resolution patch.

A model trained only on clean bicubic reductions scores best on the benchmark and worst on a user's picture,
whose small version came from some other resampler, a soft lens, a noisy sensor or a JPEG encoder: it sharpens
that noise and those block edges. So part of the pairs are made the way real small images are: a mild blur, a
reduction with one of four resamplers, mild Gaussian noise, JPEG at a random quality. The rest, and every pair of
the final phase, are clean bicubic reductions (the standard protocol the evaluator measures), which keeps the model
PSNR-oriented. All of it is mild on purpose: this is an upscaler, not a restorer.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

RESAMPLERS = ("bicubic", "bilinear", "area", "lanczos")


@dataclass(frozen=True)
class Degradations:
    """How often, and how strongly, each real-world degradation is applied to a degraded pair."""

    blur_chance: float = 0.3
    blur_sigma: tuple[float, float] = (0.2, 0.5)  # in low-resolution pixels (times the scale on the patch)
    noise_chance: float = 0.3
    noise_sigma: tuple[float, float] = (1.0, 5.0)  # on the 0-255 scale
    jpeg_chance: float = 0.3
    jpeg_quality: tuple[int, int] = (60, 95)


def _pil_filter(name: str) -> int:
    from PIL import Image

    return {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "area": Image.BOX,
            "lanczos": Image.LANCZOS, "nearest": Image.NEAREST}[name]


def resize(pixels: np.ndarray, width: int, height: int, resampler: str = "bicubic") -> np.ndarray:
    """HxWx3 uint8 resized with one of PIL's resamplers (reductions are anti-aliased, as in MATLAB's imresize)."""
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((width, height), _pil_filter(resampler)))


def bicubic_reduce(pixels: np.ndarray, scale: int) -> np.ndarray:
    """The standard super-resolution input: an anti-aliased bicubic reduction by ``scale``."""
    height, width = pixels.shape[:2]
    return resize(pixels, width // scale, height // scale, "bicubic")


def degrade(hr: np.ndarray, scale: int, rng: np.random.Generator, degradations: Degradations | None) -> np.ndarray:
    """The low-resolution uint8 input for ``hr`` (whose sides are multiples of ``scale``); clean if no degradations."""
    from PIL import Image, ImageFilter

    if degradations is None:
        return bicubic_reduce(hr, scale)
    image = Image.fromarray(hr)
    if rng.random() < degradations.blur_chance:
        sigma = rng.uniform(*degradations.blur_sigma) * scale
        image = image.filter(ImageFilter.GaussianBlur(radius=float(sigma)))
    resampler = RESAMPLERS[int(rng.integers(0, len(RESAMPLERS)))]
    image = image.resize((hr.shape[1] // scale, hr.shape[0] // scale), _pil_filter(resampler))
    if rng.random() < degradations.noise_chance:
        sigma = rng.uniform(*degradations.noise_sigma)
        shape = (image.height, image.width, 1 if rng.random() < 0.3 else 3)  # grey (luma-only) or colour noise
        noisy = np.asarray(image, np.float32) + rng.normal(0.0, sigma, shape).astype(np.float32)
        image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    if rng.random() < degradations.jpeg_chance:
        buffer = io.BytesIO()
        low, high = degradations.jpeg_quality
        image.save(buffer, format="JPEG", quality=int(rng.integers(low, high + 1)))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            image = decoded.convert("RGB")
    return np.asarray(image)
