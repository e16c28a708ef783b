"""Drawing one grid of a plot: cells in their X/Y places, X legends on top, Y legends on the left, the Z value as a
title, and a failed cell as a marked blank, so that one bad value never costs the whole plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
BLANK = (224, 224, 224)
MARK = (200, 0, 0)

Tile = Image.Image | str  # an image, or why there is none ("failed", "not run")


@dataclass(frozen=True)
class Legends:
    columns: Sequence[str]  # one per X value
    rows: Sequence[str]  # one per Y value
    title: str = ""  # the Z value


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's own font at ``size`` (Pillow >= 10.1 with FreeType); its fixed bitmap font otherwise."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # pragma: no cover - old Pillow or no FreeType
        return ImageFont.load_default()


def text_width(draw: ImageDraw.ImageDraw, text: str, face: ImageFont.ImageFont) -> int:
    left, _top, right, _bottom = draw.textbbox((0, 0), text, font=face)
    return int(right - left)


def wrap(draw: ImageDraw.ImageDraw, text: str, face: ImageFont.ImageFont, width: int) -> list[str]:
    """Words on as few lines as fit ``width``."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        words = (piece for word in paragraph.split(" ") for piece in _pieces(draw, word, face, width))
        for piece in words:
            candidate = f"{line} {piece}" if line else piece
            if line and text_width(draw, candidate, face) > width:
                lines.append(line)
                line = piece
            else:
                line = candidate
        lines.append(line)
    return lines if any(lines) else []


def _pieces(draw: ImageDraw.ImageDraw, word: str, face: ImageFont.ImageFont, width: int) -> list[str]:
    """A word wider than ``width`` (a long checkpoint name) cut into pieces that fit, so it never spills over
    into the next cell's legend."""
    pieces, piece = [], ""
    for char in word:
        if piece and text_width(draw, piece + char, face) > width:
            pieces.append(piece)
            piece = ""
        piece += char
    return [*pieces, piece]


def draw_grid(tiles: Sequence[Sequence[Tile]], tile_size: tuple[int, int], legends: Legends | None = None,
              gap: int = 0) -> Image.Image:
    """``tiles[row][column]`` on a white sheet, each centred in a ``tile_size`` cell, with legends when given."""
    rows, columns = len(tiles), len(tiles[0])
    width, height = tile_size
    size = max(12, min(64, (width + height) // 25))
    face, pad, line = font(size), size // 2, round(size * 1.25)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    column_lines = [wrap(measure, text, face, width - 2) for text in legends.columns] if legends else []
    row_lines = [wrap(measure, text, face, max(width, size * 10)) for text in legends.rows] if legends else []
    top = max((len(lines) for lines in column_lines), default=0) * line
    left = max((text_width(measure, text, face) for lines in row_lines for text in lines), default=0)
    top, left = (top + 2 * pad if top else 0), (left + 2 * pad if left else 0)
    sheet_width = left + columns * width + (columns - 1) * gap
    title_lines = wrap(measure, legends.title, face, sheet_width - left - 2 * pad) if legends else []
    title = len(title_lines) * line + 2 * pad if title_lines else 0
    sheet = Image.new("RGB", (sheet_width, title + top + rows * height + (rows - 1) * gap), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    _centred_lines(draw, title_lines, face, line, (left, 0, sheet_width, title))  # over the cells, like X's
    for column, lines in enumerate(column_lines):
        x = left + column * (width + gap)
        _centred_lines(draw, lines, face, line, (x, title, x + width, title + top))
    for row, lines in enumerate(row_lines):
        y = title + top + row * (height + gap)
        _centred_lines(draw, lines, face, line, (0, y, left, y + height))
    for row, row_tiles in enumerate(tiles):
        for column, tile in enumerate(row_tiles):
            box = (left + column * (width + gap), title + top + row * (height + gap))
            _place(sheet, tile, box, tile_size)
    return sheet


def _centred_lines(draw: ImageDraw.ImageDraw, lines: list[str], face: ImageFont.ImageFont, line: int,
                   box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    y = y0 + (y1 - y0 - len(lines) * line) // 2
    for text in lines:
        draw.text((x0 + (x1 - x0 - text_width(draw, text, face)) // 2, y), text, font=face, fill=INK)
        y += line


def _place(sheet: Image.Image, tile: Tile, origin: tuple[int, int], tile_size: tuple[int, int]) -> None:
    image = tile if isinstance(tile, Image.Image) else blank_tile(tile, tile_size)
    image = image if image.mode == "RGB" else image.convert("RGB")
    x, y = origin
    sheet.paste(image, (x + (tile_size[0] - image.width) // 2, y + (tile_size[1] - image.height) // 2))


def blank_tile(reason: str, size: tuple[int, int]) -> Image.Image:
    """A blank crossed out, with the reason: the plot keeps its shape and says which cell is missing."""
    width, height = size
    tile = Image.new("RGB", size, BLANK)
    draw = ImageDraw.Draw(tile)
    stroke = max(1, min(width, height) // 32)
    draw.line((0, 0, width - 1, height - 1), fill=MARK, width=stroke)
    draw.line((0, height - 1, width - 1, 0), fill=MARK, width=stroke)
    face = font(max(10, min(width, height) // 6))
    left, top, right, bottom = draw.textbbox((0, 0), reason, font=face)
    x, y = (width - (right - left)) // 2, (height - (bottom - top)) // 2
    draw.rectangle((x - 2, y - 2, x + right - left + 2, y + bottom - top + 2), fill=BLANK)
    draw.text((x - left, y - top), reason, font=face, fill=MARK)
    return tile
