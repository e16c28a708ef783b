"""Training data for the training tests: a few small pictures of a shape the tiny model was never taught."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [((220, 30, 40), (20, 40, 200)), ((250, 220, 30), (20, 140, 40)), ((240, 240, 240), (120, 20, 120)),
           ((30, 200, 220), (200, 90, 20)), ((20, 20, 20), (230, 230, 230))]


def heart(size: int, shape: tuple[int, int, int], background: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    r = size // 5
    cx, cy = size // 2, size // 2
    draw.ellipse([cx - 2 * r, cy - 2 * r, cx, cy], fill=shape)
    draw.ellipse([cx, cy - 2 * r, cx + 2 * r, cy], fill=shape)
    draw.polygon([(cx - 2 * r, cy - r), (cx + 2 * r, cy - r), (cx, cy + 2 * r)], fill=shape)
    return image


def heart_folder(folder: Path, count: int = 4, size: int = 64, captions: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, (shape, background) in enumerate(COLOURS[:count]):
        heart(size, shape, background).save(folder / f"heart-{index}.png")
        if captions:
            (folder / f"heart-{index}.txt").write_text("a sks on a plain background", encoding="utf-8")
    return folder
