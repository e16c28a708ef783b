"""A procedurally generated world of coloured shapes, with captions, deterministic from a seed.

The embedded default model is trained on this world, so that it follows prompts offline and so that tests and the
evaluator can check from the pixels that an image shows what was asked. Each image is one shape on a flat
background; everything that varies is named by the caption.

Caption grammar (words in the vocabulary below; ``[...]`` is optional; training draws which optional parts a caption
names from ``FORM_WEIGHTS``, so that every subset of them -- down to the bare "a green star" -- is common)::

    caption    := object [[","] backdrop] | backdrop "," object
    object     := article [size] colour shape [where]
    backdrop   := "on" article colour "background"
    article    := "a" | "an"                       ("an" before a vowel: "an orange star")
    size       := "small" | "large"
    colour     := "red" | "green" | "blue" | "yellow" | "white" | "black" | "purple" | "orange"
    shape      := "circle" | "square" | "triangle" | "star"
    where      := "on the left" | "in the centre" | "on the right"                  (middle row)
                | "at the top left" | "at the top" | "at the top right"           (top row; 3-row world only)
                | "at the bottom left" | "at the bottom" | "at the bottom right"    (bottom row; 3-row world only)

"center" is accepted for "centre" (training uses either, half the time each); the comma before a trailing backdrop
is optional ("a red circle on a blue background"), and the backdrop may come first ("on a blue background, a red
circle"). The two colours always differ. A caption without a backdrop asks for a plain grey one
(``PLAIN_BACKGROUND``, RGB 128, 128, 128).
A world has 1 row (shapes vertically centred; left / centre / right) or 3 rows (a 3 x 3 grid): the ``rows``
argument of the functions below, recorded in the model's training config.

Geometry (at 64 x 64; everything scales with ``size``): every shape fills a square box -- the circle and the square
exactly, the triangle points up with its base on the box's bottom edge, the five-pointed star points up and is
stretched to touch all four sides. "small" boxes are 16-20 px wide, "large" 30-36 px. The box centre sits at
the left / centre / right (top / middle / bottom) anchor of its size, jittered by up to 2 px. Images are drawn at
4x and box-filtered down, so edges are antialiased.

Held-out split: an attribute combination (shape, colour, background, size, position) is held out when the CRC-32 of
its name is divisible by ``heldout_modulus(rows)`` (so that about ``HELDOUT_COMBINATIONS`` are). Training examples
are drawn only from the other combinations, so no training seed can produce a held-out combination; the evaluator
prompts only held-out ones (compositional generalisation, not memorisation).

A caption that leaves parts out names a coarser combination (e.g. shape, colour and background for "a red circle on
a blue background"), which many training images share. So that a short prompt the evaluator asks was never a
training caption either, each set of named attributes has its own held-out split (``is_heldout_for``): a training
caption never names a combination that is held out for the parts it names (it falls back to the full caption,
which is always a training one), and the evaluator of a prompt form asks only combinations held out for that form.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

IMAGE_SIZE = 64
SUPERSAMPLE = 4
PALETTE: dict[str, tuple[int, int, int]] = {
    # Chosen far apart in RGB (closest pairs, orange-yellow and red-orange, are still more than 100 apart).
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (35, 70, 225),
    "yellow": (250, 225, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "purple": (135, 45, 185),
    "orange": (245, 120, 10),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SIZES: tuple[str, ...] = ("small", "large")
SIZE_RANGES: dict[str, tuple[int, int]] = {"small": (16, 20), "large": (30, 36)}  # box side in px at 64, inclusive
COLUMNS: tuple[str, ...] = ("left", "centre", "right")
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
POSITIONS: tuple[str, ...] = tuple(f"{row} {column}" for row in ROWS for column in COLUMNS)
JITTER = 2  # px at 64
MARGIN = 2  # px at 64 between the box and the image edge at the outer anchors
STAR_INNER_RATIO = 0.5  # fatter than the regular star (0.38), so that small stars survive the autoencoder
HELDOUT_COMBINATIONS = 224
PARTIAL_HELDOUT_MODULUS = 6  # 1 in 6 of the combinations a shorter caption names is held out (e.g. 6 of 32 bare ones)
ATTRIBUTE_NAMES: tuple[str, ...] = ("shape", "colour", "background", "size", "position")
# Which optional parts a training caption names: (size, where, background) -> weight. The full caption stays the most
# common (it describes the image completely); each shorter form gets a tenth, so "a red circle on a blue background"
# and "a green star" are as familiar as the full caption's variants (independent 15 % drops made them 1 in 50 and
# 1 in 300). Every form ties the background word to "background", wherever it stands in the caption.
FORM_WEIGHTS: dict[tuple[bool, bool, bool], float] = {
    (True, True, True): 0.3,
    (False, True, True): 0.1,
    (True, False, True): 0.1,
    (False, False, True): 0.1,
    (True, True, False): 0.1,
    (False, True, False): 0.1,
    (True, False, False): 0.1,
    (False, False, False): 0.1,
}
BACKGROUND_FIRST_PROBABILITY = 0.3  # of captions that name the background: "on a blue background, a red circle"
NO_COMMA_PROBABILITY = 0.5  # of captions with a trailing backdrop: "a red circle on a blue background"
# The backdrop of a picture whose caption names none: a neutral grey that is none of the palette's colours, so that
# "a green star" has one plain answer. Drawn among all eight colours instead, the model at low guidance often
# painted the backdrop in the asked shape's own colour (a green star on green: nothing to see).
PLAIN_BACKGROUND: tuple[int, int, int] = (128, 128, 128)


@dataclass(frozen=True)
class ShapeSpec:
    """What one image shows: the attributes a caption names (position is "<row> <column>", e.g. "top left")."""

    shape: str
    colour: str
    background: str
    size: str
    position: str

    @property
    def row(self) -> str:
        return self.position.split()[0]

    @property
    def column(self) -> str:
        return self.position.split()[1]

    @property
    def key(self) -> str:
        return f"{self.shape}|{self.colour}|{self.background}|{self.size}|{self.position}"

    def caption(self, *, size: bool = True, where: bool = True, background: bool = True,
                center_spelling: bool = False, background_first: bool = False, comma: bool = True) -> str:
        """The caption in the documented grammar; the flags drop optional parts and pick the word order."""
        words = [self.size] if size else []
        words += [self.colour, self.shape]
        words.insert(0, article(words[0]))
        if where:
            words.append(where_phrase(self.position, center_spelling))
        text = " ".join(words)
        if not background:
            return text
        backdrop = f"on {article(self.background)} {self.background} background"
        if background_first:
            return f"{backdrop}, {text}"
        return f"{text}{',' if comma else ''} {backdrop}"

    def value(self, attribute: str) -> str:
        """One attribute by its name in ``ATTRIBUTE_NAMES``."""
        return getattr(self, attribute)


@dataclass(frozen=True)
class PromptForm:
    """A way of writing a prompt: which optional parts it names, their order, the spelling of centre.

    The evaluator reports every form separately, because a model can follow the full caption and still miss the
    background of "a red circle on a blue background".
    """

    name: str
    size: bool = True
    where: bool = True
    background: bool = True
    background_first: bool = False
    comma: bool = True
    center_spelling: bool = False
    centre_only: bool = False  # only prompts whose position is the centre (the "center" spelling form)

    @property
    def named(self) -> tuple[str, ...]:
        """The attributes a prompt of this form names (and that are scored)."""
        optional = {"background": self.background, "size": self.size, "position": self.where}
        return tuple(a for a in ATTRIBUTE_NAMES if optional.get(a, True))

    def caption(self, spec: ShapeSpec) -> str:
        return spec.caption(size=self.size, where=self.where, background=self.background,
                            center_spelling=self.center_spelling, background_first=self.background_first,
                            comma=self.comma)


# The forms the evaluator reports (and the model card's table lists), in the card's order.
EVALUATION_FORMS: tuple[PromptForm, ...] = (
    PromptForm("full"),
    PromptForm("no size", size=False),
    PromptForm("no position", where=False),
    PromptForm("no background", background=False),
    PromptForm("colour + shape + background", size=False, where=False, comma=False),
    PromptForm("bare colour + shape", size=False, where=False, background=False),
    PromptForm("reordered", size=False, where=False, background_first=True),
    PromptForm("center spelling", center_spelling=True, centre_only=True),
)


def form_by_name(name: str) -> PromptForm:
    """The evaluation form called ``name`` (KeyError lists the known ones)."""
    for form in EVALUATION_FORMS:
        if form.name == name:
            return form
    raise KeyError(f"unknown prompt form {name!r}; known: {', '.join(f.name for f in EVALUATION_FORMS)}")


def article(word: str) -> str:
    """ "an" before a vowel ("an orange star"), else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def where_phrase(position: str, center_spelling: bool = False) -> str:
    """The words for a "<row> <column>" position: "on the left", "at the top right", "in the centre" ..."""
    row, column = position.split()
    if row == "middle":
        if column == "centre":
            return "in the center" if center_spelling else "in the centre"
        return f"on the {column}"
    return f"at the {row}" if column == "centre" else f"at the {row} {column}"


@lru_cache(maxsize=1)
def _caption_pattern():
    import re

    colour, shape = "|".join(COLOURS), "|".join(SHAPES)
    obj = (rf"an? (?:(?P<size>{'|'.join(SIZES)}) )?(?P<colour>{colour}) (?P<shape>{shape})"
           r"(?: (?P<where>on the (?:left|right)|in the cent(?:re|er)|at the (?:top|bottom)(?: (?:left|right))?))?")
    return (re.compile(rf"^{obj}(?:,? on an? (?P<background>{colour}) background)?$"),
            re.compile(rf"^on an? (?P<background>{colour}) background, {obj}$"))


def parse_caption(text: str) -> dict[str, str] | None:
    """The attributes a caption in the grammar names (``ATTRIBUTE_NAMES`` keys; position as "<row> <column>"),
    or None when it is not in the grammar: what the tests read captions back with."""
    for pattern in _caption_pattern():
        match = pattern.match(text)
        if match:
            break
    else:
        return None
    named = {name: match[name] for name in ("shape", "colour", "background", "size") if match[name]}
    if match["where"]:
        words = match["where"].replace("center", "centre").split()[2:]
        if words == ["centre"]:
            named["position"] = "middle centre"
        elif words[0] in ("left", "right"):
            named["position"] = f"middle {words[0]}"
        else:
            named["position"] = f"{words[0]} {words[1] if len(words) > 1 else 'centre'}"
    return named


def positions(rows: int = 3) -> tuple[str, ...]:
    """The "<row> <column>" positions of a world with 1 row (middle only) or 3 rows."""
    if rows not in (1, 3):
        raise ValueError(f"a shapes world has 1 or 3 rows, not {rows}")
    return POSITIONS if rows == 3 else tuple(p for p in POSITIONS if p.startswith("middle "))


def all_specs(rows: int = 3) -> list[ShapeSpec]:
    """Every attribute combination (the two colours differ), in a fixed order."""
    return [
        ShapeSpec(shape, colour, background, size, position)
        for shape in SHAPES
        for colour in COLOURS
        for background in COLOURS
        if background != colour
        for size in SIZES
        for position in positions(rows)
    ]


@lru_cache(maxsize=2)
def heldout_modulus(rows: int = 3) -> int:
    """1 in this many combinations is held out (so that about ``HELDOUT_COMBINATIONS`` are)."""
    return max(2, len(all_specs(rows)) // HELDOUT_COMBINATIONS)


def is_heldout(spec: ShapeSpec, rows: int = 3) -> bool:
    """Whether a combination belongs to the evaluation split of a world (never drawn for training)."""
    return zlib.crc32(spec.key.encode("utf-8")) % heldout_modulus(rows) == 0


@lru_cache(maxsize=2)
def _split(rows: int) -> tuple[tuple[ShapeSpec, ...], tuple[ShapeSpec, ...]]:
    specs = all_specs(rows)
    return tuple(s for s in specs if not is_heldout(s, rows)), tuple(s for s in specs if is_heldout(s, rows))


def projection_key(spec: ShapeSpec, named: tuple[str, ...]) -> str:
    """The combination a caption naming only ``named`` describes, as text (what its held-out split hashes)."""
    return "|".join(f"{name}={spec.value(name)}" for name in named)


def is_heldout_for(spec: ShapeSpec, named: tuple[str, ...], rows: int = 3) -> bool:
    """Whether a caption of ``spec`` that names only ``named`` is held out (never a training caption).

    Naming all five is the combination's own split (``is_heldout``); a shorter caption has its own split over the
    coarser combinations it can name.
    """
    if set(named) == set(ATTRIBUTE_NAMES):
        return is_heldout(spec, rows)
    key = projection_key(spec, tuple(a for a in ATTRIBUTE_NAMES if a in named))
    return zlib.crc32(key.encode("utf-8")) % PARTIAL_HELDOUT_MODULUS == 0


def training_specs(rows: int = 3) -> tuple[ShapeSpec, ...]:
    """The combinations training draws from."""
    return _split(rows)[0]


def heldout_specs(rows: int = 3) -> tuple[ShapeSpec, ...]:
    """The combinations kept for evaluation."""
    return _split(rows)[1]


def evaluation_cases(count: int, seed: int = 1234, rows: int = 3) -> list[tuple[ShapeSpec, int]]:
    """``count`` held-out (spec, generation seed) pairs, spread over the held-out combinations in a fixed order."""
    specs = heldout_specs(rows)
    order = np.random.default_rng(seed).permutation(len(specs))
    return [(specs[order[i % len(specs)]], seed * 100_003 + i) for i in range(count)]


def form_cases(form: PromptForm, count: int, seed: int = 1234, rows: int = 3,
               split: str = "heldout") -> list[tuple[ShapeSpec, int]]:
    """``count`` (spec, seed) pairs for one prompt form, spread over the combinations it names.

    "heldout": only combinations held out for the form (its prompts were never training captions), with the
    parts the form leaves out filled in at random from every combination (they are not scored).
    "validation": only training combinations whose caption in this form is a training caption.
    """
    rng = np.random.default_rng([seed, zlib.crc32(form.name.encode("utf-8"))])
    groups: dict[str, list[ShapeSpec]] = {}
    for spec in all_specs(rows):
        if form.centre_only and spec.position != "middle centre":
            continue
        heldout = is_heldout_for(spec, form.named, rows)
        if split == "heldout" and not heldout:
            continue
        if split != "heldout" and (heldout or is_heldout(spec, rows)):
            continue
        groups.setdefault(projection_key(spec, form.named), []).append(spec)
    keys = sorted(groups)
    order = rng.permutation(len(keys))
    cases = []
    for i in range(count):
        group = groups[keys[order[i % len(keys)]]]
        cases.append((group[int(rng.integers(len(group)))], seed * 100_003 + i))
    return cases


def validation_cases(count: int, seed: int = 4321, rows: int = 3) -> list[tuple[ShapeSpec, int]]:
    """``count`` (spec, seed) pairs over training combinations: for choosing sampler settings without touching the
    held-out split."""
    specs = training_specs(rows)
    order = np.random.default_rng(seed).permutation(len(specs))
    return [(specs[order[i % len(specs)]], seed * 100_003 + i) for i in range(count)]


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """The shape's outline in its unit box (x right, y down), touching all four sides."""
    if shape == "square":
        return [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    if shape == "triangle":
        return [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = 1.0 if k % 2 == 0 else STAR_INNER_RATIO
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((radius * math.cos(angle), radius * math.sin(angle)))
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        x0, y0, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
        return [((x - x0) / w, (y - y0) / h) for x, y in points]
    raise ValueError(f"no polygon for {shape!r}")


def anchor(axis_name: str, side: float, image_size: int = IMAGE_SIZE) -> float:
    """Box centre (px) for a column or row name, for a box of the given side: outer anchors keep a margin."""
    scale = image_size / IMAGE_SIZE
    low = side / 2 + MARGIN * scale + JITTER * scale
    if axis_name in ("left", "top"):
        return low
    if axis_name in ("right", "bottom"):
        return image_size - low
    return image_size / 2


def draw_mask(shape: str, box: tuple[float, float, float, float], image_size: int = IMAGE_SIZE,
              supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Coverage (0..1, float32, image_size square) of ``shape`` filling ``box`` = (left, top, right, bottom) px."""
    from PIL import Image, ImageDraw

    big = image_size * supersample
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = (v * supersample for v in box)
    if shape == "circle":
        draw.ellipse([left, top, right - 1, bottom - 1], fill=255)
    else:
        width, height = right - left, bottom - top
        polygon = [(left + x * width, top + y * height) for x, y in _unit_polygon(shape)]
        draw.polygon(polygon, fill=255)
    small = canvas.resize((image_size, image_size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def box_for(spec: ShapeSpec, side: float, dx: float = 0.0, dy: float = 0.0,
            image_size: int = IMAGE_SIZE) -> tuple[float, float, float, float]:
    """The (left, top, right, bottom) box of a spec's shape with the given side and jitter (px)."""
    cx = anchor(spec.column, side, image_size) + dx
    cy = anchor(spec.row, side, image_size) + dy
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def render(spec: ShapeSpec, rng: np.random.Generator | None = None, image_size: int = IMAGE_SIZE,
           plain: bool = False) -> np.ndarray:
    """The image (uint8, HxWx3) of a spec; ``rng`` draws size and position jitter (None: the nominal geometry);
    ``plain`` draws the backdrop in ``PLAIN_BACKGROUND`` (what a caption without a background asks for)."""
    scale = image_size / IMAGE_SIZE
    low, high = SIZE_RANGES[spec.size]
    if rng is None:
        side, dx, dy = (low + high) / 2 * scale, 0.0, 0.0
    else:
        side = float(rng.integers(low, high + 1)) * scale
        dx, dy = (rng.uniform(-JITTER, JITTER, size=2) * scale).tolist()
    coverage = draw_mask(spec.shape, box_for(spec, side, dx, dy, image_size), image_size)[..., None]
    background = np.asarray(PLAIN_BACKGROUND if plain else PALETTE[spec.background], dtype=np.float32)
    foreground = np.asarray(PALETTE[spec.colour], dtype=np.float32)
    image = background + coverage * (foreground - background)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def _form_table() -> tuple[tuple[tuple[bool, bool, bool], ...], np.ndarray]:
    """``FORM_WEIGHTS`` as (forms, cumulative probabilities), computed once (a caption is drawn 64 times a step)."""
    forms = tuple(FORM_WEIGHTS)
    weights = np.asarray([FORM_WEIGHTS[f] for f in forms], dtype=np.float64)
    cumulative = np.cumsum(weights / weights.sum())
    cumulative.setflags(write=False)
    return forms, cumulative


@dataclass(frozen=True)
class TrainingCaption:
    """A drawn training caption and whether it names the background (if not, its picture's backdrop is plain)."""

    text: str
    names_background: bool


def draw_caption(spec: ShapeSpec, rng: np.random.Generator, rows: int = 3, name_size: bool = False,
                 leave_out_position: bool = False) -> TrainingCaption:
    """A training caption of a training combination: a form drawn from ``FORM_WEIGHTS``, either word order and
    spelling of centre, with or without the comma; a form whose named combination is held out gives way to the full
    caption (so no held-out prompt of any form is ever a training caption). ``name_size`` keeps the size word and
    ``leave_out_position`` drops the position in whatever form is drawn (the same draws are made either way)."""
    forms, cumulative = _form_table()
    draws = rng.random(4)  # always four draws, so that one caption's choices never shift the next one's
    size, where, background = forms[min(int(np.searchsorted(cumulative, draws[3], side="right")), len(forms) - 1)]
    size = size or name_size
    where = where and not leave_out_position
    form = PromptForm("training", size=size, where=where, background=background,
                      background_first=background and bool(draws[0] < BACKGROUND_FIRST_PROBABILITY),
                      comma=bool(draws[1] >= NO_COMMA_PROBABILITY), center_spelling=bool(draws[2] < 0.5))
    if is_heldout_for(spec, form.named, rows):
        form = dataclasses.replace(form, size=True, where=True, background=True)
    return TrainingCaption(form.caption(spec), form.background)


def caption_for(spec: ShapeSpec, rng: np.random.Generator, rows: int = 3, name_size: bool = False) -> str:
    """The text of ``draw_caption`` (the same draws)."""
    return draw_caption(spec, rng, rows, name_size).text


def example_rng(seed: int, index: int) -> np.random.Generator:
    """The generator behind training example ``index`` of dataset ``seed`` (independent of any other example)."""
    return np.random.default_rng([seed, index])


def training_example(seed: int, index: int, rows: int = 3, plain: bool = False) -> tuple[np.ndarray, str, ShapeSpec]:
    """Training example ``index`` of dataset ``seed``: (image uint8 HxWx3, caption, spec); always the same.
    ``plain`` gives the same picture on the plain backdrop (the caption is the same draw either way)."""
    rng = example_rng(seed, index)
    specs = training_specs(rows)
    spec = specs[int(rng.integers(len(specs)))]
    image = render(spec, rng, plain=plain)
    return image, caption_for(spec, rng, rows), spec


def training_batch(seed: int, start: int, count: int, rows: int = 3,
                   plain: bool | Sequence[bool] = False) -> tuple[np.ndarray, list[str], list[ShapeSpec]]:
    """Examples ``start .. start+count-1``: images (uint8, Nx64x64x3), captions and specs; ``plain`` (one flag, or
    one per example) puts them on the plain backdrop."""
    flags = [bool(plain)] * count if isinstance(plain, bool) else [bool(f) for f in plain]
    images, captions, specs = [], [], []
    for index, flag in zip(range(start, start + count), flags, strict=True):
        image, caption, spec = training_example(seed, index, rows, flag)
        images.append(image)
        captions.append(caption)
        specs.append(spec)
    return np.stack(images), captions, specs
