"""The shapes world set in motion: 16-frame clips of one shape moving, growing, shrinking or staying still.

The embedded motion model (a diffusers ``MotionAdapter`` for ``sfumato-shapes``) is trained on these clips, and its
evaluator and tests check from the pixels that a clip does what its caption says. Frames are drawn with the image
world's own drawing (``tools/shapes/dataset.py``: same palette, shapes, antialiasing, 64 x 64).

Caption grammar (``[...]`` optional; colour, shape and article as in the image world)::

    caption    := object " " motion [[","] backdrop] | backdrop ", " object " " motion
    object     := article colour shape
    backdrop   := "on" article colour "background"
    motion     := "moving to the left" | "moving to the right" | "moving up" | "moving down"
                | "growing" | "shrinking" | "staying still"

e.g. "a red circle moving to the right, on a blue background". Training names the background in 90 % of captions
(a comma before it half the time, first in 10 % of them); the evaluator asks the first form.

Motions (over the clip, linear in time; sizes and positions in px at 64, jittered per clip):

- moving left / right: a shape of side 16-22 crosses the middle row from one outer anchor of the image world to the
  other; up / down: the same down or up the centre column (the image model itself only knows the middle row).
- growing / shrinking: in the centre, from a side of 14-18 to 32-38 or back.
- staying still: small or large, on the left, in the centre or on the right, not moving.

Held-out split: a combination (shape, colour, background, motion) is held out when the CRC-32 of its name is
divisible by ``HELDOUT_MODULUS``; training clips are drawn only from the others, so the evaluator's prompts name
combinations that training never showed (compositional generalisation).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from tools.shapes import dataset as world

FRAMES = 16
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "growing", "shrinking", "still")
MOTION_PHRASES: dict[str, str] = {
    "left": "moving to the left",
    "right": "moving to the right",
    "up": "moving up",
    "down": "moving down",
    "growing": "growing",
    "shrinking": "shrinking",
    "still": "staying still",
}
HELDOUT_MODULUS = 8  # 1 in 8 of the 1568 combinations (about 196) is held out
MOVING_SIDE = (16, 22)  # px, inclusive: the side of a moving shape
SMALL_SIDE = (14, 18)  # the small end of growing / shrinking
LARGE_SIDE = (32, 38)  # the large end
END_JITTER = 2.0  # px: start and end points of a path move by up to this much
NO_BACKGROUND_PROBABILITY = 0.1
BACKGROUND_FIRST_PROBABILITY = 0.1
NO_COMMA_PROBABILITY = 0.5


@dataclass(frozen=True)
class ClipSpec:
    """What a clip shows: one shape, its two colours and its motion (one of ``MOTIONS``)."""

    shape: str
    colour: str
    background: str
    motion: str

    @property
    def key(self) -> str:
        return f"{self.shape}|{self.colour}|{self.background}|{self.motion}"

    def caption(self, *, background: bool = True, background_first: bool = False, comma: bool = True) -> str:
        """The caption in the documented grammar; the flags pick the optional parts and their order."""
        text = f"{world.article(self.colour)} {self.colour} {self.shape} {MOTION_PHRASES[self.motion]}"
        if not background:
            return text
        backdrop = f"on {world.article(self.background)} {self.background} background"
        if background_first:
            return f"{backdrop}, {text}"
        return f"{text}{',' if comma else ''} {backdrop}"


def parse_caption(text: str) -> ClipSpec | dict[str, str] | None:
    """The attributes a caption names (a ClipSpec when it names all four), None when it is not in the grammar."""
    import re

    colours, shapes = "|".join(world.COLOURS), "|".join(world.SHAPES)
    motions = "|".join(MOTION_PHRASES.values())
    obj = rf"an? (?P<colour>{colours}) (?P<shape>{shapes}) (?P<motion>{motions})"
    patterns = (rf"^{obj}(?:,? on an? (?P<background>{colours}) background)?$",
                rf"^on an? (?P<background>{colours}) background, {obj}$")
    for pattern in patterns:
        match = re.match(pattern, text)
        if match:
            break
    else:
        return None
    motion = next(name for name, phrase in MOTION_PHRASES.items() if phrase == match["motion"])
    named = {"shape": match["shape"], "colour": match["colour"], "motion": motion}
    if match["background"]:
        return ClipSpec(match["shape"], match["colour"], match["background"], motion)
    return named


@lru_cache(maxsize=1)
def all_specs() -> tuple[ClipSpec, ...]:
    """Every combination (the two colours differ), in a fixed order."""
    return tuple(ClipSpec(shape, colour, background, motion)
                 for shape in world.SHAPES for colour in world.COLOURS for background in world.COLOURS
                 if background != colour for motion in MOTIONS)


def is_heldout(spec: ClipSpec) -> bool:
    """Whether a combination belongs to the evaluation split (never drawn for training)."""
    return zlib.crc32(spec.key.encode("utf-8")) % HELDOUT_MODULUS == 0


def training_specs() -> tuple[ClipSpec, ...]:
    return tuple(s for s in all_specs() if not is_heldout(s))


@cache  # a handful of keys: the subsets asked and, with motion_weights, each motion alone
def _training_specs_of(motions: tuple[str, ...]) -> tuple[ClipSpec, ...]:
    unknown = sorted(set(motions) - set(MOTIONS))
    if unknown or not motions:
        raise ValueError(f"unknown motion(s) {unknown}; known: {', '.join(MOTIONS)}")
    return tuple(s for s in training_specs() if s.motion in motions)


def heldout_specs() -> tuple[ClipSpec, ...]:
    return tuple(s for s in all_specs() if is_heldout(s))


def evaluation_cases(count: int, seed: int = 1234,
                     motions: tuple[str, ...] = MOTIONS) -> list[tuple[ClipSpec, int]]:
    """``count`` (held-out spec, generation seed) pairs, the motions taking turns so each is asked about equally
    (``motions``: a subset, for a model trained on a reduced problem)."""
    rng = np.random.default_rng(seed)
    by_motion = {m: [s for s in heldout_specs() if s.motion == m] for m in MOTIONS}
    for specs in by_motion.values():
        rng.shuffle(specs)
    cases = []
    for i in range(count):
        specs = by_motion[motions[i % len(motions)]]
        cases.append((specs[(i // len(motions)) % len(specs)], seed * 100_003 + i))
    return cases


@dataclass(frozen=True)
class Path:
    """Where the shape's box is in each frame: centre x, centre y and side (px at 64), each an array of frames."""

    x: np.ndarray
    y: np.ndarray
    side: np.ndarray


def _anchor(name: str, side: float) -> float:
    return world.anchor(name, side)


def motion_path(spec: ClipSpec, rng: np.random.Generator, frames: int = FRAMES) -> Path:
    """The box's path over a clip of ``spec.motion`` (random sizes and jitter drawn from ``rng``)."""
    t = np.linspace(0.0, 1.0, frames)
    jitter = rng.uniform(-END_JITTER, END_JITTER, size=4)
    if spec.motion in ("left", "right", "up", "down"):
        side = float(rng.integers(MOVING_SIDE[0], MOVING_SIDE[1] + 1))
        low, high = _anchor("left", side) + jitter[0], _anchor("right", side) + jitter[1]
        start, end = (high, low) if spec.motion in ("left", "up") else (low, high)
        along = start + (end - start) * t
        across = np.full(frames, world.IMAGE_SIZE / 2 + jitter[2])
        x, y = (along, across) if spec.motion in ("left", "right") else (across, along)
        return Path(x, y, np.full(frames, side))
    centre_x, centre_y = world.IMAGE_SIZE / 2 + jitter[0], world.IMAGE_SIZE / 2 + jitter[1]
    if spec.motion in ("growing", "shrinking"):
        small = float(rng.integers(SMALL_SIDE[0], SMALL_SIDE[1] + 1))
        large = float(rng.integers(LARGE_SIDE[0], LARGE_SIDE[1] + 1))
        start, end = (small, large) if spec.motion == "growing" else (large, small)
        return Path(np.full(frames, centre_x), np.full(frames, centre_y), start + (end - start) * t)
    if spec.motion == "still":
        size = world.SIZES[int(rng.integers(len(world.SIZES)))]
        low, high = world.SIZE_RANGES[size]
        side = float(rng.integers(low, high + 1))
        column = world.COLUMNS[int(rng.integers(len(world.COLUMNS)))]
        x = _anchor(column, side) + jitter[2]
        return Path(np.full(frames, x), np.full(frames, centre_y), np.full(frames, side))
    raise ValueError(f"unknown motion {spec.motion!r}; known: {', '.join(MOTIONS)}")


def render_clip(spec: ClipSpec, rng: np.random.Generator, frames: int = FRAMES,
                plain: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The clip (uint8, F x 64 x 64 x 3) and the shape's coverage in each frame (float32, F x 64 x 64); ``plain``
    draws the backdrop in ``world.PLAIN_BACKGROUND`` (what a caption without a background asks for)."""
    path = motion_path(spec, rng, frames)
    background = np.asarray(world.PLAIN_BACKGROUND if plain else world.PALETTE[spec.background], dtype=np.float32)
    foreground = np.asarray(world.PALETTE[spec.colour], dtype=np.float32)
    coverages = np.stack([
        world.draw_mask(spec.shape, (x - s / 2, y - s / 2, x + s / 2, y + s / 2))
        for x, y, s in zip(path.x.tolist(), path.y.tolist(), path.side.tolist(), strict=True)])
    images = background + coverages[..., None] * (foreground - background)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), coverages


def training_caption(spec: ClipSpec, rng: np.random.Generator) -> world.TrainingCaption:
    """A caption of a training clip: the background named 90 % of the time, in either order, comma or not."""
    draws = rng.random(3)  # always three draws, so one caption's choices never shift the next one's
    if draws[0] < NO_BACKGROUND_PROBABILITY:
        return world.TrainingCaption(spec.caption(background=False), names_background=False)
    return world.TrainingCaption(spec.caption(background_first=bool(draws[1] < BACKGROUND_FIRST_PROBABILITY),
                                              comma=bool(draws[2] >= NO_COMMA_PROBABILITY)), names_background=True)


def motion_odds(motions: tuple[str, ...], weights: tuple[float, ...]) -> np.ndarray:
    """The probability of each motion from its weight; a ValueError names what is wrong with the weights."""
    if len(weights) != len(motions):
        raise ValueError(f"motion_weights has {len(weights)} weight(s) for {len(motions)} motions "
                         f"({', '.join(motions)})")
    odds = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(odds)) or np.any(odds < 0) or odds.sum() <= 0:
        raise ValueError(f"motion_weights must be finite, at least 0 and not all 0, got {list(weights)}")
    return odds / odds.sum()


def training_clip(seed: int, index: int, frames: int = FRAMES, motions: tuple[str, ...] = MOTIONS,
                  weights: tuple[float, ...] = (), plain: bool = False) -> tuple[np.ndarray, np.ndarray, ClipSpec]:
    """Training clip ``index`` of dataset ``seed``: (frames uint8, coverages, spec); always the same. ``motions``
    narrows the clips to some motions (a reduced problem for quick experiments); ``weights`` (one per motion, empty:
    every training combination equally likely) draws the motion first with those odds, so the motions a model
    finds hard can be shown more often."""
    rng = np.random.default_rng([seed, 15, index])
    if weights:
        odds = motion_odds(tuple(motions), tuple(weights))
        specs = _training_specs_of((motions[int(rng.choice(len(motions), p=odds))],))
    else:
        specs = training_specs() if tuple(motions) == MOTIONS else _training_specs_of(tuple(motions))
    spec = specs[int(rng.integers(len(specs)))]
    images, coverages = render_clip(spec, rng, frames, plain)
    return images, coverages, spec
