"""Procedurally drawn pictures that widen what the few packaged photographs show.

The packaged photographs are few (a couple of dozen), so on their own a network would learn their particular
textures. Drawn pictures add what any input may hold and these photos lack: hard and soft edges at every angle and
colour pair, thin lines, stripes and rings up to near the sampling limit, smooth gradients that must stay smooth,
fractal textures, flat areas that must stay flat, and fine grain. No text, so nothing is learnt about glyphs.

Shapes are drawn at four times the size and reduced with a box filter, so their edges are anti-aliased as a
camera's would be; a fifth are left hard-edged, like pixel art and screenshots. Every picture is a pure function of
the generator it is given.
"""

from __future__ import annotations

import numpy as np

SUPERSAMPLE = 4


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Values in [0, 1] that vary over about ``size / cells`` pixels (white noise enlarged bicubically)."""
    from PIL import Image

    coarse = rng.random((cells + 3, cells + 3)).astype(np.float32)
    step = size / cells
    big = Image.fromarray(coarse, mode="F").resize((int(round(step * (cells + 3))),) * 2, Image.BICUBIC)
    offset = int(step)
    field = np.asarray(big)[offset:offset + size, offset:offset + size]
    low, high = float(field.min()), float(field.max())
    return (field - low) / max(high - low, 1e-6)


def _fractal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Octaves of smooth noise with a random fall-off: from cloudy to gritty."""
    roughness = rng.uniform(0.35, 0.8)
    total = np.zeros((size, size), np.float32)
    weight, weights = 1.0, 0.0
    cells = int(rng.integers(2, 5))
    while cells <= size // 2:
        total += weight * _smooth_field(rng, size, cells)
        weights += weight
        weight *= roughness
        cells *= 2
    return total / weights


def _palette(rng: np.random.Generator, field: np.ndarray) -> np.ndarray:
    """Map a [0, 1] field through a random ramp of two to four colours: HxWx3 float in [0, 255]."""
    stops = int(rng.integers(2, 5))
    colours = np.array([_colour(rng) for _ in range(stops)], np.float32)
    positions = np.linspace(0.0, 1.0, stops)
    return np.stack([np.interp(field, positions, colours[:, c]) for c in range(3)], axis=-1)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        field = np.cos(angle) * x + np.sin(angle) * y
    else:
        cx, cy = rng.uniform(-0.2, 1.2, size=2)
        field = np.hypot(x - cx, y - cy)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    return _palette(rng, field)


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gratings, rings and grids; frequencies stay below 0.4 cycles per pixel, so the picture itself is not aliased."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    frequency = rng.uniform(0.01, 0.4)
    kind = rng.integers(0, 3)
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        phase = (np.cos(angle) * x + np.sin(angle) * y) * frequency
    elif kind == 1:
        cx, cy = rng.uniform(0, size, size=2)
        phase = np.hypot(x - cx, y - cy) * frequency
    else:
        phase = np.minimum(np.abs(np.sin(np.pi * x * frequency)), np.abs(np.sin(np.pi * y * frequency))) * 0.5
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * phase)
    if rng.random() < 0.5:  # hard-edged bars, softened to the pixel grid
        wave = np.clip((wave - 0.5) * rng.uniform(2, 8) + 0.5, 0, 1)
    return _palette(rng, wave)


def _marble(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    turbulence = _fractal(rng, size) * rng.uniform(2, 12)
    field = 0.5 + 0.5 * np.sin((np.cos(angle) * x + np.sin(angle) * y) * rng.uniform(0.02, 0.15) + turbulence)
    return _palette(rng, field)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = rng.choice(["flat", "gradient", "fractal", "stripes", "marble"], p=[0.15, 0.25, 0.3, 0.15, 0.15])
    if kind == "flat":
        return np.broadcast_to(np.array(_colour(rng), np.float32), (size, size, 3)).copy()
    if kind == "gradient":
        return _gradient(rng, size)
    if kind == "fractal":
        return _palette(rng, _fractal(rng, size))
    if kind == "stripes":
        return _stripes(rng, size)
    return _marble(rng, size)


def _shape_mask(rng: np.random.Generator, size: int, hard: bool) -> np.ndarray:
    """One random shape's coverage in [0, 1] (anti-aliased unless ``hard``)."""
    from PIL import Image, ImageDraw

    factor = 1 if hard else SUPERSAMPLE
    big = size * factor
    layer = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(layer)
    centre = rng.uniform(-0.1, 1.1, size=2) * big
    radius = rng.uniform(0.02, 0.35) * big
    kind = rng.integers(0, 5)
    box = [centre[0] - radius, centre[1] - radius * rng.uniform(0.3, 1.0),
           centre[0] + radius, centre[1] + radius * rng.uniform(0.3, 1.0)]
    if kind == 0:
        draw.ellipse(box, fill=255)
    elif kind == 1:
        draw.rectangle(box, fill=255)
    elif kind == 2:
        corners = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
        radii = radius * rng.uniform(0.4, 1.0, corners)
        points = [(float(centre[0] + r * np.cos(a)), float(centre[1] + r * np.sin(a)))
                  for a, r in zip(angles, radii, strict=True)]
        draw.polygon(points, fill=255)
    elif kind == 3:
        end = centre + rng.uniform(-1, 1, size=2) * big * 0.6
        width = max(1, int(rng.uniform(0.2, 6.0) * factor))
        draw.line([tuple(centre), tuple(end)], fill=255, width=width)
    else:
        width = max(1, int(rng.uniform(0.3, 4.0) * factor))
        start = float(rng.uniform(0, 360))
        draw.arc(box, start, start + float(rng.uniform(30, 330)), fill=255, width=width)
    if factor > 1:
        layer = layer.reduce(factor)
    return np.asarray(layer, np.float32)[..., None] / 255.0


def draw_picture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """One drawn picture, HxWx3 uint8."""
    picture = _background(rng, size)
    if rng.random() < 0.8:
        hard = rng.random() < 0.2
        for _ in range(int(rng.integers(1, 16))):
            fill = (_background(rng, size) if rng.random() < 0.3
                    else np.array(_colour(rng), np.float32)[None, None, :])
            mask = _shape_mask(rng, size, hard)
            picture = picture * (1 - mask) + fill * mask
    if rng.random() < 0.15:
        picture = picture + rng.normal(0, rng.uniform(2, 10), picture.shape)
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def draw_pictures(seed: int, count: int, size: int = 256) -> list[np.ndarray]:
    """``count`` pictures, the same for the same seed."""
    return [draw_picture(np.random.default_rng([seed, 7919, index]), size) for index in range(count)]
