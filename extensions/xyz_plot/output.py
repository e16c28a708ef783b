"""A finished plot as the job's result: one labelled grid per Z value, saved beside the cells with an infotext that
names the axes, then (if wanted) every cell's images, with ``info`` saying what each image is."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules.extensions.api import Cell, GeneratedImage, GenerationResult, JobOutcome

from .grid import Legends, Tile, draw_grid
from .plan import NAME

log = logging.getLogger(f"sfumato.extensions.{NAME}")


def plot_result(outcome: JobOutcome) -> GenerationResult | None:
    """The plot's result, or None when the job was not a plot or no cell made an image (the job then fails with
    every cell's error, as a job without extensions would)."""
    plot = next((cell.label[NAME] for cell in outcome.cells if NAME in cell.label), None)
    made = [cell for cell in outcome.cells if cell.result is not None and cell.result.images]
    if plot is None or not made:
        return None
    by_place = {(cell.label["x"], cell.label["y"], cell.label["z"]): cell for cell in outcome.cells}
    folder = _output_folder(made, outcome.request.task) if outcome.request.save_images else None
    grids = [_grid(plot, by_place, made, z, folder) for z in range(len(plot["z"]["legends"]))]
    cells = [by_place[place] for place in sorted(by_place, key=lambda p: (p[2], p[1], p[0]))]
    images = grids + ([image for cell in cells if cell.result for image in cell.result.images]
                      if plot["include_cells"] else [])
    return GenerationResult(images=images, grid=None, summary=made[0].result.summary, leading_grids=len(grids),
                            extension_info={NAME: _plot_info(plot, len(grids), outcome)},
                            interrupted=outcome.interrupted or any(cell.result.interrupted for cell in made))


def _grid(plot: dict[str, Any], by_place: dict[tuple[int, int, int], Cell], made: list[Cell], z: int,
          folder: Path | None) -> GeneratedImage:
    columns, rows = len(plot["x"]["legends"]), len(plot["y"]["legends"])
    tile_size = (max(cell.result.images[0].image.width for cell in made),
                 max(cell.result.images[0].image.height for cell in made))
    tiles: list[list[Tile]] = [[_tile(by_place.get((x, y, z))) for x in range(columns)] for y in range(rows)]
    legends = Legends(plot["x"]["legends"], plot["y"]["legends"], plot["z"]["legends"][z])
    image = draw_grid(tiles, tile_size, legends if plot["draw_legend"] else None, gap=plot["margin_size"])
    # The grid's infotext is its first cell's (the settings every cell shares) plus the axes that made it.
    here = [by_place[(x, y, z)] for y in range(rows) for x in range(columns) if (x, y, z) in by_place]
    first = next((cell for cell in here if cell.result and cell.result.images), made[0]).result.images[0]
    infotext = with_params(first.infotext, plot["infotext"])
    path = _save(image, folder, first.seed, infotext) if folder is not None else None
    return GeneratedImage(image, first.seed, first.subseed, first.prompt, first.negative_prompt, infotext, path)


def _tile(cell: Cell | None) -> Tile:
    if cell is None:
        return "not run"
    if cell.result is None or not cell.result.images:
        return "failed"
    return cell.result.images[0].image


def _plot_info(plot: dict[str, Any], grids: int, outcome: JobOutcome) -> dict[str, Any]:
    """The plot for API answers: axes, values, how many grids lead the images, which cells failed and why."""
    failed = [{"x": cell.label["x"], "y": cell.label["y"], "z": cell.label["z"], "error": cell.error}
              for cell in outcome.cells if cell.error is not None]
    return {**{key: value for key, value in plot.items() if key != "infotext"}, "grids": grids, "failed": failed}


def with_params(infotext: str, params: dict[str, str]) -> str:
    """An infotext with more ``key: value`` pairs on its parameter line, before ``Version`` (which stays last)."""
    extra = ", ".join(f"{key}: {_quoted(value)}" for key, value in params.items())
    head, newline, last = infotext.rpartition("\n")
    line = last if newline else infotext
    before, marker, version = line.rpartition(", Version: ")
    line = f"{before}, {extra}{marker}{version}" if marker else f"{line}, {extra}"
    return f"{head}{newline}{line}" if newline else line


def _quoted(value: str) -> str:
    """As A1111 writes a value: in JSON quotes when it holds a comma, a colon or a new line."""
    return json.dumps(value, ensure_ascii=False) if any(char in value for char in ",:\n") else value


def _output_folder(made: list[Cell], task: str) -> Path | None:
    """Where the grids go: ``<task>-grids/<day>/`` beside the cells' ``<task>/<day>/``, as A1111 keeps plots apart
    from single images (None when the cells were not saved, or the folder cannot be made)."""
    cells = next((image.path.parent for cell in made for image in cell.result.images if image.path), None)
    if cells is None:
        return None
    folder = cells.parent.parent / f"{task}-grids" / cells.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.error("could not make the X/Y/Z plot folder %s: %s", folder, error)
        return None
    return folder


def _save(image: Image.Image, folder: Path, seed: int, infotext: str) -> Path | None:
    """Write a PNG with its infotext under the folder's next free number, never over another file (the finished
    file is hard-linked to its name, which fails if the name is taken); a failed write is logged, not fatal."""
    staging = folder / f".staging-xyz-{os.getpid()}-{threading.get_ident()}.png"
    metadata = PngInfo()
    metadata.add_text("parameters", infotext)
    try:
        image.save(staging, format="PNG", pnginfo=metadata)
        number = _next_number(folder)
        while True:
            path = folder / f"{number:05d}-{seed}-xyz-grid.png"
            if _claim(staging, path):
                return path
            number += 1
    except OSError as error:
        log.error("could not save the X/Y/Z plot grid in %s: %s", folder, error)
        return None
    finally:
        staging.unlink(missing_ok=True)


def _next_number(folder: Path) -> int:
    numbers = [int(entry.name.split("-", 1)[0]) for entry in folder.iterdir()
               if entry.name.split("-", 1)[0].isdigit()]
    return max(numbers, default=-1) + 1


def _claim(staging: Path, path: Path) -> bool:
    try:
        os.link(staging, path)
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem: check, then rename
        if path.exists():
            return False
        os.replace(staging, path)
    return True
