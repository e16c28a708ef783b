"""The photographs the upscalers learn from and are judged on: files shipped inside pip packages, so no download.

scikit-image's wheel carries a few dozen sample images under ``skimage/data`` (only those listed here are in the
wheel itself; the others ``skimage.data`` offers are fetched from the network) and scikit-learn's carries two
photographs under ``sklearn/datasets/images``. The files are read straight from the installed packages, located
with ``importlib.util.find_spec`` so that neither package's (slow) import runs.

Four colour photographs are never trained on: they are the held-out set of ``bench/eval_upscaler.py`` and of the
model cards. Keep this list the one place that says which they are.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Photo:
    """One photograph: the package that ships it and its path inside that package."""

    package: str
    path: str

    @property
    def name(self) -> str:
        return Path(self.path).stem

    def file(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"{self.package} is not installed (pip install scikit-image scikit-learn)")
        return Path(next(iter(spec.submodule_search_locations))) / self.path


def _skimage(name: str) -> Photo:
    return Photo("skimage", f"data/{name}")


def _sklearn(name: str) -> Photo:
    return Photo("sklearn", f"datasets/images/{name}")


# Colour photographs, then greyscale ones (tinted at random when sampled, so they also teach colour edges).
TRAIN_PHOTOS: tuple[Photo, ...] = tuple(_skimage(name) for name in (
    "astronaut.png", "motorcycle_left.png", "rocket.jpg", "ihc.png", "hubble_deep_field.jpg", "retina.jpg",
    "color.png", "logo.png",
    "camera.png", "brick.png", "grass.png", "gravel.png", "moon.png", "coins.png", "cell.png", "page.png",
    "text.png",
))

HELD_OUT_PHOTOS: tuple[Photo, ...] = (
    _sklearn("china.jpg"), _sklearn("flower.jpg"), _skimage("chelsea.png"), _skimage("coffee.png"),
)


def load_rgb(photo: Photo) -> np.ndarray:
    """The photograph as HxWx3 uint8; transparency is laid over white, as a viewer would show it."""
    from PIL import Image

    with Image.open(photo.file()) as image:
        if image.mode in ("RGBA", "LA", "P"):
            rgba = image.convert("RGBA")
            flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            flat.alpha_composite(rgba)
            return np.asarray(flat.convert("RGB")).copy()
        return np.asarray(image.convert("RGB")).copy()


def is_grey(pixels: np.ndarray) -> bool:
    return bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())
