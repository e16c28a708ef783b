"""Control images of the shapes world: what a person scribbles, or what an edge detector sees, for one shape.

The convention is sd-webui-controlnet's scribble one: white strokes on black, RGB, the size of the generation.
Three kinds are drawn, so that the ControlNet reads what people actually feed it:

- ``scribble``: the shape's outline as a stroke 1-3 px wide (at 64 px), optionally wobbling like a hand-drawn line
  and sometimes left open by a small gap;
- ``canny``: the edge map of the rendered image, by the same OpenCV call as the studio's ``canny`` preprocessor;
- ``silhouette``: the filled shape, as people who colour in their scribble draw it.

Strokes and silhouettes are drawn at 4x and box-filtered down, like the shapes themselves; all is deterministic
from the rng. A share of the training maps is dimmed (``ExampleRecipe.faint``): a map drawn or detected at 512 px
and resized to 64 px by the pipeline has grey 1 px lines, not white ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tools.shapes import dataset as world

CONTROL_KINDS: tuple[str, ...] = ("scribble", "canny", "silhouette")
CIRCLE_POINTS = 96  # vertices of the circle's outline polygon


@dataclass(frozen=True)
class Stroke:
    """How a scribble is drawn: line width in px at 64, wobble amplitude in px, and the open gap's share of the
    outline (0: closed)."""

    width: float = 2.0
    wobble: float = 0.0
    gap: float = 0.0


CLEAN_STROKE = Stroke()  # the evaluator's reference scribble: a clean, closed 2 px outline


def draw_box(spec: world.ShapeSpec, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """The box ``world.render(spec, rng)`` draws the shape in, with the same draws from ``rng`` in the same order
    (so a caller that renders with ``render_in_box`` gets the dataset's own image)."""
    low, high = world.SIZE_RANGES[spec.size]
    side = float(rng.integers(low, high + 1))
    dx, dy = rng.uniform(-world.JITTER, world.JITTER, size=2).tolist()
    return world.box_for(spec, side, dx, dy)


def render_in_box(spec: world.ShapeSpec, box: tuple[float, float, float, float], plain: bool = False) -> np.ndarray:
    """The image (uint8 HxWx3) of ``spec``'s shape and colours drawn into ``box`` (px at 64): the dataset's
    rendering, for a box that need not sit at an anchor (``plain``: on ``world.PLAIN_BACKGROUND``)."""
    coverage = world.draw_mask(spec.shape, box)[..., None]
    background = np.asarray(world.PLAIN_BACKGROUND if plain else world.PALETTE[spec.background], dtype=np.float32)
    foreground = np.asarray(world.PALETTE[spec.colour], dtype=np.float32)
    return np.clip(np.rint(background + coverage * (foreground - background)), 0, 255).astype(np.uint8)


def outline_points(shape: str, box: tuple[float, float, float, float]) -> np.ndarray:
    """The closed outline of ``shape`` filling ``box`` as an Nx2 array of (x, y) px (first point not repeated)."""
    left, top, right, bottom = box
    if shape == "circle":
        angles = np.linspace(0.0, 2.0 * math.pi, CIRCLE_POINTS, endpoint=False)
        unit = np.stack([0.5 + 0.5 * np.cos(angles), 0.5 + 0.5 * np.sin(angles)], axis=1)
    else:
        unit = np.asarray(world._unit_polygon(shape), dtype=np.float64)
    return np.stack([left + unit[:, 0] * (right - left), top + unit[:, 1] * (bottom - top)], axis=1)


def _resample(points: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points every ``spacing`` px along the closed outline, keeping its corners; each point's arc position in
    [0, 1); and which points are the outline's own vertices."""
    closed = np.concatenate([points, points[:1]])
    out, positions, corners, travelled = [], [], [], 0.0
    lengths = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    total = float(lengths.sum())
    for start, end, length in zip(closed[:-1], closed[1:], lengths, strict=True):
        pieces = max(1, int(math.ceil(length / spacing)))
        for k in range(pieces):
            out.append(start + (end - start) * k / pieces)
            positions.append((travelled + length * k / pieces) / total)
            corners.append(k == 0)
        travelled += length
    return np.asarray(out), np.asarray(positions), np.asarray(corners)


def scribble(shape: str, box: tuple[float, float, float, float], stroke: Stroke = CLEAN_STROKE,
             rng: np.random.Generator | None = None) -> np.ndarray:
    """The outline of ``shape`` in ``box`` as a white stroke on black (uint8 HxW, 0..255).

    The stroke straddles the shape's edge, as a pen traced round it would, with round ends and corners.
    ``stroke.wobble`` bends it by a smooth random offset of up to that many px (low harmonics along the outline,
    so it stays one continuous line); ``stroke.gap`` leaves that share of the outline undrawn. Both need ``rng``.
    """
    from PIL import Image, ImageDraw

    scale = world.SUPERSAMPLE
    points, arc, corners = _resample(outline_points(shape, box), spacing=1.0)
    if shape == "circle":
        corners[:] = False  # a 96-gon's joints are too shallow to notch
    if stroke.wobble > 0 and rng is not None:
        offset = np.zeros_like(points)
        for harmonic in (1, 2, 3, 5):
            amplitude = stroke.wobble / harmonic * rng.uniform(0.3, 1.0, size=2)
            phase = rng.uniform(0.0, 2.0 * math.pi, size=2)
            offset += amplitude[None, :] * np.sin(2.0 * math.pi * harmonic * arc[:, None] + phase[None, :])
        points = points + offset * (stroke.wobble / max(np.abs(offset).max(), 1e-9))
    if stroke.gap > 0 and rng is not None:
        # Open the outline: walk round from just after a random gap back to where the gap starts.
        start = (arc - rng.uniform(0.0, 1.0)) % 1.0
        order = np.argsort(start, kind="stable")
        order = order[start[order] >= stroke.gap]
        polyline, dots = points[order], points[order][corners[order]]
        dots = np.concatenate([dots, polyline[[0, -1]]])
    else:
        polyline, dots = np.concatenate([points, points[:1]]), points[corners]
    big = world.IMAGE_SIZE * scale
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(stroke.width * scale))
    draw.line([(float(x) * scale, float(y) * scale) for x, y in polyline], fill=255, width=width)
    radius = width / 2
    for x, y in dots:  # round corners and ends (a plain polyline notches the outer side of a sharp corner)
        draw.ellipse([x * scale - radius, y * scale - radius, x * scale + radius, y * scale + radius], fill=255)
    small = canvas.resize((world.IMAGE_SIZE, world.IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)


def silhouette(shape: str, box: tuple[float, float, float, float]) -> np.ndarray:
    """The filled shape, white on black (uint8 HxW)."""
    return np.clip(np.rint(world.draw_mask(shape, box) * 255.0), 0, 255).astype(np.uint8)


def canny_edges(image: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """Canny's edge map of an RGB image (uint8 HxW, 255 on edges): OpenCV's, with the thresholds the studio's
    ``canny`` preprocessor (and the extension's) defaults to, so training sees what a user's unit hands over."""
    import cv2

    return cv2.Canny(np.ascontiguousarray(image, dtype=np.uint8), low, high)


def to_rgb(control: np.ndarray) -> np.ndarray:
    """A single-channel control map as the RGB image a ControlNet pipeline takes (uint8 HxWx3)."""
    return np.repeat(control[..., None], 3, axis=-1)


def control_for(kind: str, spec: world.ShapeSpec, box: tuple[float, float, float, float], image: np.ndarray,
                stroke: Stroke = CLEAN_STROKE, rng: np.random.Generator | None = None) -> np.ndarray:
    """The control map (uint8 HxW) of one kind for a shape in ``box``; ``image`` is its rendering (for canny)."""
    if kind == "scribble":
        return scribble(spec.shape, box, stroke, rng)
    if kind == "canny":
        return canny_edges(image)
    if kind == "silhouette":
        return silhouette(spec.shape, box)
    raise ValueError(f"unknown control kind {kind!r}; known: {', '.join(CONTROL_KINDS)}")
