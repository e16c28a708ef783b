"""Training pairs: random high-resolution patches from photographs and drawn pictures, and their small versions.

Every batch is a pure function of (seed, step): its generator is seeded with both, so a run resumed from a
checkpoint draws exactly the batches an uninterrupted run would, and the data needs no state of its own.

Patches are augmented where it costs nothing and cannot mislead: the eight flips and quarter turns, a random
reduction of the source before cropping (more scales of the same textures, and cleaner targets where the source is
a JPEG), channel swaps on colour photographs and random two-colour tints on greyscale ones. Nearly flat patches are
redrawn a few times, so the batches are spent on detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.upscaler.degrade import Degradations, degrade, resize
from tools.upscaler.photos import TRAIN_PHOTOS, is_grey, load_rgb
from tools.upscaler.procedural import draw_pictures

FLAT_STD = 4.0  # a patch whose pixels vary less than this (0-255 scale) is redrawn, up to FLAT_RETRIES times
FLAT_RETRIES = 3


@dataclass(frozen=True)
class Sources:
    """The images patches are cut from, kept in memory as uint8 HxWx3 arrays."""

    photos: tuple[np.ndarray, ...]
    grey: tuple[bool, ...]
    pictures: tuple[np.ndarray, ...]


def load_sources(seed: int, pictures: int, picture_size: int = 256, photos: bool = True) -> Sources:
    """The training photographs (unless ``photos`` is False) and ``pictures`` drawn ones."""
    loaded = tuple(load_rgb(photo) for photo in TRAIN_PHOTOS) if photos else ()
    return Sources(photos=loaded, grey=tuple(is_grey(p) for p in loaded),
                   pictures=tuple(draw_pictures(seed, pictures, picture_size)))


def _crop(source: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` square, sometimes cut larger and reduced (scale augmentation)."""
    height, width = source.shape[:2]
    side = min(size, height, width)
    if rng.random() < 0.5:
        side = min(int(round(size / rng.uniform(0.5, 1.0))), height, width)
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    patch = source[top:top + side, left:left + side]
    if side != size:
        patch = resize(np.ascontiguousarray(patch), size, size, "lanczos" if side > size else "bicubic")
    return patch


def _recolour(patch: np.ndarray, grey: bool, rng: np.random.Generator) -> np.ndarray:
    if grey and rng.random() < 0.7:
        low, high = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
        mixed = low + (high - low) * (patch[..., :1].astype(np.float32) / 255.0)
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    if not grey and rng.random() < 0.3:
        return patch[..., rng.permutation(3)]
    return patch


def sample_patch(sources: Sources, size: int, rng: np.random.Generator, photo_share: float) -> np.ndarray:
    """One augmented high-resolution patch, uint8 size x size x 3."""
    use_photo = bool(sources.photos) and (not sources.pictures or rng.random() < photo_share)
    for _ in range(FLAT_RETRIES + 1):
        if use_photo:
            index = int(rng.integers(0, len(sources.photos)))
            patch = _recolour(_crop(sources.photos[index], size, rng), sources.grey[index], rng)
        else:
            patch = _crop(sources.pictures[int(rng.integers(0, len(sources.pictures)))], size, rng)
        if patch.std() >= FLAT_STD:
            break
    patch = np.rot90(patch, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch)


def make_batch(sources: Sources, *, seed: int, step: int, batch: int, hr_size: int, scale: int, photo_share: float,
               degradations: Degradations | None, clean_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(low-resolution, high-resolution) uint8 arrays of shape Bx(h)x(w)x3 for one training step.

    A share ``clean_share`` of the pairs are clean bicubic reductions; the rest go through ``degradations``.
    """
    rng = np.random.default_rng([seed, 104729, step])
    highs, lows = [], []
    for _ in range(batch):
        hr = sample_patch(sources, hr_size, rng, photo_share)
        clean = degradations is None or rng.random() < clean_share
        lows.append(degrade(hr, scale, rng, None if clean else degradations))
        highs.append(hr)
    return np.stack(lows), np.stack(highs)
