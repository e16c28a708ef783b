"""Follow the shape through a clip from its pixels, and score a clip against what its caption asked.

Each frame is read by the image world's own measurement (``tools/shapes/metrics.py``: background, foreground
colour, shape); the shape's centroid and area come from its colour mask: the largest connected region of pixels
nearer the clip's foreground colour than its background colour. The motion is then read from how the centroid and
the area change between the first and the last frames. Plain measurement, no learnt judge: on the dataset's own
clips every motion is read back correctly (the tests check this).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tools.motion.clips import MOTIONS, ClipSpec
from tools.shapes import dataset as world
from tools.shapes import metrics

ENDS = 4  # frames averaged at each end of a clip
MIN_TRAVEL = 8.0  # px at 64: the centroid must move at least this far for a moving clip
MAX_STILL_TRAVEL = 4.0  # px: a still clip's centroid moves less than this
AREA_CHANGE = 1.6  # area ratio (last / first) beyond which a clip grows or shrinks
STILL_AREA_CHANGE = 1.25  # a still or moving clip's area changes by less than this ratio


@dataclass(frozen=True)
class Track:
    """What a clip was measured to show: per-frame readings and the shape's centroid (x, y) and area (px)."""

    readings: tuple[metrics.Reading, ...]
    centroids: np.ndarray  # F x 2, NaN where the shape was not found
    areas: np.ndarray  # F
    foreground: str | None
    background: str
    shape: str | None
    motion: str  # one of MOTIONS, or "unclear"
    extra: dict = field(default_factory=dict)

    @property
    def found_everywhere(self) -> bool:
        return bool(np.all(self.areas > 0))

    @property
    def keeps_colour(self) -> bool:
        """The shape is found in every frame and has the same colour in all of them."""
        return self.found_everywhere and all(r.foreground == self.foreground for r in self.readings)


def _majority(values: Sequence[str | None]) -> str | None:
    counted = Counter(v for v in values if v is not None)
    return counted.most_common(1)[0][0] if counted else None


def _mask(pixels: np.ndarray, foreground: str, background: str) -> np.ndarray:
    """The largest connected region of pixels nearer ``foreground`` than ``background`` (palette colours)."""
    from scipy import ndimage

    fg = np.asarray(world.PALETTE[foreground], dtype=np.float32)
    bg = np.asarray(world.PALETTE[background], dtype=np.float32)
    nearer = np.linalg.norm(pixels - fg, axis=-1) < np.linalg.norm(pixels - bg, axis=-1)
    labels, count = ndimage.label(nearer)
    if count <= 1:
        return nearer
    sizes = ndimage.sum(nearer, labels, index=np.arange(1, count + 1))
    return labels == (1 + int(np.argmax(sizes)))


def classify_motion(centroids: np.ndarray, areas: np.ndarray, ends: int = ENDS) -> str:
    """The motion a centroid / area track shows (one of ``MOTIONS``), or "unclear"."""
    if np.any(areas <= 0) or len(areas) < 2 * ends:
        return "unclear"
    first, last = centroids[:ends].mean(axis=0), centroids[-ends:].mean(axis=0)
    dx, dy = (last - first).tolist()
    growth = float(areas[-ends:].mean() / areas[:ends].mean())
    travel = max(abs(dx), abs(dy))
    if travel >= MIN_TRAVEL and 1 / STILL_AREA_CHANGE <= growth <= STILL_AREA_CHANGE:
        if abs(dx) >= abs(dy):
            return "right" if dx > 0 else "left"
        return "down" if dy > 0 else "up"
    if travel < MIN_TRAVEL:
        if growth >= AREA_CHANGE:
            return "growing"
        if growth <= 1 / AREA_CHANGE:
            return "shrinking"
        if travel < MAX_STILL_TRAVEL and 1 / STILL_AREA_CHANGE <= growth <= STILL_AREA_CHANGE:
            return "still"
    return "unclear"


def track(frames) -> Track:
    """Measure a clip (a sequence of PIL images or H x W x 3 arrays, or an F x H x W x 3 array)."""
    arrays = [np.asarray(f.convert("RGB") if hasattr(f, "convert") else f) for f in frames]
    readings = tuple(metrics.measure(a) for a in arrays)
    background = _majority([r.background for r in readings])
    foreground = _majority([r.foreground for r in readings])
    shape = _majority([r.shape for r in readings])
    scale = world.IMAGE_SIZE / arrays[0].shape[1]
    centroids = np.full((len(arrays), 2), np.nan)
    areas = np.zeros(len(arrays))
    if foreground is not None and foreground != background:
        for i, pixels in enumerate(arrays):
            mask = _mask(pixels.astype(np.float32)[..., :3], foreground, background)
            if mask.any():
                rows, cols = np.nonzero(mask)
                centroids[i] = (cols.mean() * scale + 0.5, rows.mean() * scale + 0.5)
                areas[i] = mask.sum() * scale * scale
    return Track(readings, centroids, areas, foreground, background, shape, classify_motion(centroids, areas))


def score_clip(frames, spec: ClipSpec) -> dict[str, bool]:
    """What the evaluator counts for one clip: motion, colours (both), shape, colour kept in every frame."""
    measured = track(frames)
    return {
        "motion": measured.motion == spec.motion,
        "colours": measured.foreground == spec.colour and measured.background == spec.background,
        "shape": measured.shape == spec.shape,
        "keeps colour": measured.keeps_colour,
    }


SCORES: tuple[str, ...] = ("motion", "colours", "shape", "keeps colour")
TARGETS: dict[str, float] = {"motion": 90.0, "colours": 97.0, "shape": 85.0, "keeps colour": 95.0}


@dataclass
class ClipTally:
    """Running share of clips right per score, overall and per asked motion."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SCORES, 0))
    total: int = 0
    by_motion: dict[str, list[int]] = field(default_factory=lambda: {m: [0, 0] for m in MOTIONS})

    def add(self, result: dict[str, bool], spec: ClipSpec) -> None:
        self.total += 1
        for name in SCORES:
            self.counts[name] += int(bool(result[name]))
        self.by_motion[spec.motion][0] += int(bool(result["motion"]))
        self.by_motion[spec.motion][1] += 1

    def accuracy(self) -> dict[str, float]:
        return {name: self.counts[name] / self.total if self.total else 0.0 for name in SCORES}
