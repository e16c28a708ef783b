"""Training and evaluation examples for the embedded ControlNet: (image, control map, caption) triples.

The control map decides the shape, its size and where it is; the caption decides the colours. Training teaches
exactly that split: the colours a caption names always match the image, while the shape, size and position it
names are sometimes those of another combination (``conflict_probability``; the control map must win) and
sometimes left out (the dataset's own prompt forms). A share of the examples (``free_geometry``) puts the shape
at any position and size, off the world's anchors, so that a scribble anywhere is followed, not snapped to the
nearest anchor. A share of the control maps is dimmed (``faint``), as a large map resized to 64 px is.

Held-out split: images are drawn only from ``world.training_specs`` (a free-geometry image whose measured
attributes land on a held-out combination is redrawn), and a caption never names a combination held out for the
parts it names, so the evaluator's cases -- held-out combinations for both the control map and the prompt --
were never seen in any form.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tools.shapes import dataset as world
from tools.shapes_controlnet import control as ctl

FREE_SIDE = (12.0, 44.0)  # px at 64: the box sides of free-geometry examples
FREE_MARGIN = 1.0  # px at 64 between a free box and the image edge


@dataclass(frozen=True)
class ExampleRecipe:
    """The share of each kind of example (the training config carries these)."""

    free_geometry: float = 0.15
    canny: float = 0.2  # control kinds: canny edges, filled silhouettes, the rest scribbles
    silhouette: float = 0.15
    stroke_width: tuple[float, float] = (1.0, 3.0)  # px at 64
    wobble: float = 1.5  # largest hand-drawn wobble, px at 64
    gap_probability: float = 0.1
    gap: tuple[float, float] = (0.04, 0.12)  # share of the outline an open scribble leaves out
    conflict_probability: float = 0.6  # 0.4 left the prompt winning over the scribble in 22 % of conflicts
    faint_probability: float = 0.25  # dimmed control maps (a large map resized down has grey lines)
    faint: tuple[float, float] = (0.12, 1.0)  # brightness of a dimmed map's lines (512 px canny at 64: ~0.18)


@dataclass(frozen=True)
class Example:
    """One training example: what the image shows (``spec``; for free geometry, its nearest named attributes)
    and where exactly (``box``)."""

    image: np.ndarray  # uint8 64x64x3
    control: np.ndarray  # uint8 64x64, white on black
    spec: world.ShapeSpec
    box: tuple[float, float, float, float]
    kind: str
    free: bool

    def plain_image(self) -> np.ndarray:
        """The same picture on the plain backdrop (what a caption without a background asks the base for)."""
        return ctl.render_in_box(self.spec, self.box, plain=True)


def measured_spec(spec: world.ShapeSpec, image: np.ndarray, rows: int) -> world.ShapeSpec:
    """``spec`` with the size and position the evaluator reads from ``image`` (a free box's nearest anchors); in a
    1-row world a shape above or below the middle keeps only its column (the base model knows no "top" or
    "bottom", so a caption must not name them)."""
    from tools.shapes import metrics

    reading = metrics.measure(image)
    if not reading.found:
        return spec
    position = reading.position
    if position not in world.positions(rows):
        position = f"middle {position.split()[1]}"
    return dataclasses.replace(spec, size=reading.size, position=position)


def _free_box(rng: np.random.Generator) -> tuple[float, float, float, float]:
    side = float(rng.uniform(*FREE_SIDE))
    low, high = side / 2 + FREE_MARGIN, world.IMAGE_SIZE - side / 2 - FREE_MARGIN
    cx, cy = rng.uniform(low, high, size=2).tolist()
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def training_example(seed: int, index: int, rows: int, recipe: ExampleRecipe) -> Example:
    """Example ``index`` of dataset ``seed``: always the same, independent of every other example."""
    rng = np.random.default_rng([seed, 31, index])
    specs = world.training_specs(rows)
    draws = rng.random(4)  # free geometry?, control kind, gap?, faint? -- always four, so none shifts another
    free = bool(draws[0] < recipe.free_geometry)
    while True:
        spec = specs[int(rng.integers(len(specs)))]
        if not free:
            box = ctl.draw_box(spec, rng)
            image = ctl.render_in_box(spec, box)
            break
        box = _free_box(rng)
        image = ctl.render_in_box(spec, box)
        spec = measured_spec(spec, image, rows)
        if not world.is_heldout(spec, rows):
            break
    kind = "canny" if draws[1] < recipe.canny else "silhouette" if draws[1] < recipe.canny + recipe.silhouette \
        else "scribble"
    stroke = ctl.Stroke(width=float(rng.uniform(*recipe.stroke_width)), wobble=float(rng.uniform(0, recipe.wobble)),
                        gap=float(rng.uniform(*recipe.gap)) if draws[2] < recipe.gap_probability else 0.0)
    control = ctl.control_for(kind, spec, box, image, stroke, rng)
    if draws[3] < recipe.faint_probability:
        control = np.rint(control * rng.uniform(*recipe.faint)).astype(np.uint8)
    return Example(image=image, control=control, spec=spec, box=box, kind=kind, free=free)


@lru_cache(maxsize=4)
def _by_colours(rows: int, split: str) -> dict[tuple[str, str], tuple[world.ShapeSpec, ...]]:
    """The training or held-out combinations grouped by (colour, background), built once (captions ask a lot)."""
    groups: dict[tuple[str, str], list[world.ShapeSpec]] = {}
    for spec in world.training_specs(rows) if split == "training" else world.heldout_specs(rows):
        groups.setdefault((spec.colour, spec.background), []).append(spec)
    return {key: tuple(value) for key, value in groups.items()}


def conflicting_spec(spec: world.ShapeSpec, rng: np.random.Generator, rows: int,
                     split: str = "training") -> world.ShapeSpec | None:
    """A combination of ``split`` with ``spec``'s colours and a different shape, size and/or position (each
    differs with even odds, at least one does); None when the split has none."""
    same_colours = [s for s in _by_colours(rows, split).get((spec.colour, spec.background), ()) if s != spec]
    if not same_colours:
        return None
    change = rng.random(3) < 0.5  # shape, size, position
    if not change.any():
        change[int(rng.integers(3))] = True
    wanted = [s for s in same_colours
              if all((getattr(s, a) != getattr(spec, a)) == bool(c)
                     for a, c in zip(("shape", "size", "position"), change, strict=True))]
    candidates = wanted or same_colours
    return candidates[int(rng.integers(len(candidates)))]


def training_caption(spec: world.ShapeSpec, rng: np.random.Generator, rows: int,
                     recipe: ExampleRecipe) -> world.TrainingCaption:
    """A caption of an example: the dataset's prompt forms, naming another (training) combination's shape, size
    and/or position ``conflict_probability`` of the time; the colours are always the image's."""
    named = spec
    if rng.random() < recipe.conflict_probability:
        named = conflicting_spec(spec, rng, rows) or spec
    return world.draw_caption(named, rng, rows)


def heldout_conflict(spec: world.ShapeSpec, seed: int, rows: int) -> world.ShapeSpec:
    """The prompt of an evaluation case whose prompt disagrees with its control map: another held-out combination
    with the same colours, differing in shape, size and/or position (a training one only when no held-out one
    has these colours)."""
    rng = np.random.default_rng([seed, 97])
    return conflicting_spec(spec, rng, rows, "heldout") or conflicting_spec(spec, rng, rows) or spec
