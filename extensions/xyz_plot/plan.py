"""Planning an X/Y/Z plot: settings (by name, or A1111's positional script args) into checked axes, and the axes into
the cells of a sweep, ordered so that the costliest axis (a checkpoint) changes least often.

Everything a user can get wrong is refused here, before any image is made: an unknown axis, a value that does not
parse, a sampler or checkpoint the studio does not have, a Prompt S/R search text that is not in the prompt, and a
plot whose grids would be too large. Each ``RequestError`` names the setting, e.g. ``xyz_plot.x_values``.
"""

from __future__ import annotations

import csv
import itertools
import random
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

from modules.extensions.api import Catalog, GenerationRequest, RequestError, ScriptArg, Sweep

from .axes import AxisType, a1111_labels, find_axis, parse_size, parse_values

NAME = "xyz_plot"
SCRIPT_TITLE = "X/Y/Z plot"
# A1111 1.10's ``Script.run`` arguments after ``p``, in order: what ``script_args`` holds for "x/y/z plot".
A1111_ARGS = ["x_type", "x_values", "x_values_dropdown", "y_type", "y_values", "y_values_dropdown", "z_type",
              "z_values", "z_values_dropdown", "draw_legend", "include_lone_images", "include_sub_grids",
              "no_fixed_seeds", "vary_seeds_x", "vary_seeds_y", "vary_seeds_z", "margin_size", "csv_mode"]
LETTERS = ("x", "y", "z")


def a1111_script_args(tab: str) -> list[ScriptArg]:
    """The arguments as A1111's script-info describes them (labels and defaults of A1111 1.10's controls), with the
    axis lists of ``tab`` in the index order A1111 clients send."""
    axes = tuple(a1111_labels(tab))
    args: list[ScriptArg] = []
    for letter, default in zip(LETTERS, (axes[1], "Nothing", "Nothing"), strict=True):
        upper = letter.upper()
        args += [ScriptArg(f"{upper} type", default, choices=axes), ScriptArg(f"{upper} values", ""),
                 ScriptArg(f"{upper} values", None, choices=())]
    args += [ScriptArg("Draw legend", True), ScriptArg("Include Sub Images", False),
             ScriptArg("Include Sub Grids", False), ScriptArg("Keep -1 for seeds", False),
             *(ScriptArg(f"Vary seeds for {letter.upper()}", False) for letter in LETTERS),
             ScriptArg("Grid margins (px)", 0, minimum=0, maximum=500, step=2),
             ScriptArg("Use text inputs instead of dropdowns", False)]
    return args
DEFAULT_MAX_PIXELS = 200_000_000  # A1111's default grid limit (200 megapixels)
UNKNOWN_SIDE = 1024  # a size left to the model's default is counted as the largest default (SDXL)
SEED_AXES = ("Seed", "Var. seed")


@dataclass(frozen=True)
class Axis:
    """One axis as planned: its type (None = not used), its values, and the text they were given as."""

    letter: str
    type: AxisType | None = None
    values: tuple[Any, ...] = (None,)
    text: str = ""

    @property
    def used(self) -> bool:
        return self.type is not None

    @property
    def cost(self) -> float:
        return self.type.cost if self.type else 0.0

    def apply(self, request: GenerationRequest, index: int) -> GenerationRequest:
        if self.type is None:
            return request
        return self.type.apply(request, self.values[index], self.values)

    def legends(self) -> list[str]:
        return [self.type.legend(value) for value in self.values] if self.type else [""]

    def describe(self) -> dict[str, Any]:
        return {"type": self.type.label if self.type else "Nothing", "values": list(self.values) if self.type else [],
                "legends": self.legends()}


@dataclass(frozen=True)
class Options:
    draw_legend: bool = True
    include_cells: bool = True
    fixed_seeds: bool = True
    vary_seeds: tuple[bool, bool, bool] = (False, False, False)
    margin: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Plot:
    axes: tuple[Axis, Axis, Axis]
    options: Options = field(default_factory=Options)

    @property
    def used(self) -> bool:
        return any(axis.used for axis in self.axes)

    def loop_order(self) -> list[int]:
        """Axis positions from outermost to innermost loop: costliest first; on a tie Z, then Y, then X (A1111's)."""
        return sorted(range(3), key=lambda position: (-self.axes[position].cost, -position))

    def infotext_params(self) -> dict[str, str]:
        """What A1111 writes into a plot's grid infotext, so the grid says which axes made it."""
        params = {"Script": SCRIPT_TITLE}
        for axis in self.axes:
            if axis.type is None:
                continue
            name = axis.letter.upper()
            params[f"{name} Type"] = axis.type.label
            params[f"{name} Values"] = axis.text
            if axis.type.label in SEED_AXES and self.options.fixed_seeds:
                params[f"Fixed {name} Values"] = ", ".join(str(value) for value in axis.values)
        return params

    def describe(self) -> dict[str, Any]:
        """The plot as plain data: carried in every cell's label, returned in the result's ``info``."""
        return {**{axis.letter: axis.describe() for axis in self.axes},
                "draw_legend": self.options.draw_legend, "include_cells": self.options.include_cells,
                "margin_size": self.options.margin, "infotext": self.infotext_params()}


# -- settings -> plot -------------------------------------------------------------------------------------------


def read_plot(request: GenerationRequest, settings: dict[str, Any], catalog: Catalog) -> Plot:
    """The checked plot a request asks for (``plot.used`` is False when every axis is "Nothing")."""
    options = read_options(settings)
    x, y, z = (read_axis(letter, request, settings, catalog, options) for letter in LETTERS)
    return Plot(axes=(x, y, z), options=options)


def read_options(settings: dict[str, Any]) -> Options:
    include = settings.get("include_cells", settings.get("include_lone_images", True))
    margin = _number(settings.get("margin_size") or 0, "margin_size", 0, 500)
    limit = _number(settings.get("max_pixels") or DEFAULT_MAX_PIXELS, "max_pixels", 1, DEFAULT_MAX_PIXELS)
    return Options(draw_legend=flag(settings.get("draw_legend", True)), include_cells=flag(include),
                   fixed_seeds=not flag(settings.get("no_fixed_seeds", False)),
                   vary_seeds=tuple(flag(settings.get(f"vary_seeds_{letter}", False)) for letter in LETTERS),
                   margin=int(margin), max_pixels=int(limit))


def flag(value: Any) -> bool:
    """A checkbox value as UIs and A1111 clients send it: a bool, 0/1, or "true"/"false"."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _number(value: Any, name: str, low: int, high: int) -> int:
    """A limit-like setting; ``max_pixels`` may lower the studio's limit, never raise it."""
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        raise RequestError(f"{NAME}.{name}", f"expected a number, got {value!r}") from None
    if number < low:
        raise RequestError(f"{NAME}.{name}", f"must be at least {low}, got {number}")
    return min(number, high)


def read_axis(letter: str, request: GenerationRequest, settings: dict[str, Any], catalog: Catalog,
              options: Options) -> Axis:
    type_field, values_field = f"{NAME}.{letter}_type", f"{NAME}.{letter}_values"
    axis_type = find_axis(settings.get(f"{letter}_type"), request.task, type_field)
    if axis_type is None:
        return Axis(letter)
    given = settings.get(f"{letter}_values")
    if given in (None, "", []) and settings.get(f"{letter}_values_dropdown"):
        given = settings[f"{letter}_values_dropdown"]  # A1111 sends a dropdown axis's choices there
    values = parse_values("" if given is None else given, axis_type.kind, values_field)
    check_axis(axis_type, values, request, catalog, type_field, values_field)
    if axis_type.label in SEED_AXES and options.fixed_seeds:
        values = [random_seed() if value == -1 else value for value in values]
    return Axis(letter, axis_type, tuple(values), values_text(given))


def check_axis(axis_type: AxisType, values: list[Any], request: GenerationRequest, catalog: Catalog,
               type_field: str, values_field: str) -> None:
    """What can be known to fail before the plot runs, said once instead of once per cell."""
    label = axis_type.label
    if label.startswith("Hires") and (request.task != "txt2img" or request.hires is None):
        raise RequestError(type_field, f"the {label} axis needs a txt2img request with the hires fix turned on")
    if label == "Prompt S/R" and not values[0]:
        raise RequestError(values_field, "Prompt S/R: the first value is the text to search for; it is empty")
    if label == "Prompt S/R" and values[0] not in request.prompt and values[0] not in request.negative_prompt:
        raise RequestError(values_field, f"Prompt S/R: the first value {values[0]!r} is in neither the prompt nor "
                                         "the negative prompt, so there is nothing to replace")
    for value in values:
        try:
            if axis_type.catalog:
                catalog.check(axis_type.catalog, value)
            elif label == "Size":
                parse_size(value)
        except ValueError as error:
            raise RequestError(values_field, str(error)) from None


def values_text(given: Any) -> str:
    """The values as the user wrote them (a list is written as A1111's comma list)."""
    if isinstance(given, (list, tuple)):
        with StringIO() as out:
            csv.writer(out).writerow([str(item) for item in given])
            return out.getvalue().strip()
    return str(given)


def random_seed() -> int:
    return random.randrange(4294967294)


# -- plot -> sweep ----------------------------------------------------------------------------------------------


def build_sweep(request: GenerationRequest, plot: Plot) -> Sweep:
    """Every cell's request, outermost loop on the costliest axis, each labelled with its grid position."""
    check_pixels(request, plot)
    base = fixed_seeds(request) if plot.options.fixed_seeds else request
    described = plot.describe()
    order = plot.loop_order()
    requests: list[GenerationRequest] = []
    labels: list[dict[str, Any]] = []
    for combination in itertools.product(*(range(len(plot.axes[position].values)) for position in order)):
        index = [0, 0, 0]
        for position, value_index in zip(order, combination, strict=True):
            index[position] = value_index
        requests.append(cell_request(base, plot, index))
        labels.append({"x": index[0], "y": index[1], "z": index[2], NAME: described})
    return Sweep(requests, labels)


def fixed_seeds(request: GenerationRequest) -> GenerationRequest:
    """One random seed (and variation seed) for the whole plot, so cells differ only along the axes."""
    seed = random_seed() if request.seed == -1 else request.seed
    subseed = random_seed() if request.subseed == -1 else request.subseed
    return request.replace(seed=seed, subseed=subseed)


def cell_request(base: GenerationRequest, plot: Plot, index: list[int]) -> GenerationRequest:
    cell = base
    for axis, value_index in zip(plot.axes, index, strict=True):
        cell = axis.apply(cell, value_index)
    vary_x, vary_y, vary_z = plot.options.vary_seeds  # A1111's "vary seeds": the seed counts up along the axis
    x_span = len(plot.axes[0].values) if vary_x else 1
    y_span = len(plot.axes[1].values) if vary_y else 1
    offset = index[0] * vary_x + index[1] * x_span * vary_y + index[2] * x_span * y_span * vary_z
    if offset and cell.seed != -1:
        cell = cell.replace(seed=cell.seed + offset)
    return cell.replace(make_grid=False)  # a cell's batch is shown in the plot, not in a grid of its own


def cell_size(request: GenerationRequest) -> tuple[int, int]:
    """The size a cell's image will have, as far as it can be known before the model is loaded."""
    width, height = request.width, request.height
    if not (width and height) and request.init_image is not None and request.task != "txt2img":
        width, height = request.init_image.size
    width, height = width or UNKNOWN_SIDE, height or UNKNOWN_SIDE
    if request.task == "txt2img" and request.hires is not None:
        width, height = request.hires.target_size(width, height)
    return width, height


def check_pixels(request: GenerationRequest, plot: Plot) -> None:
    """Refuse a runaway plot before any cell is built: its grids' pixels together must fit the limit. A cell's
    size comes from the request or from the last axis that sets it, so the largest size any one axis value gives
    bounds every cell (Z values that change the size count each grid at the largest)."""
    sizes = [cell_size(request)] + [cell_size(axis.apply(request, index)) for axis in plot.axes if axis.used
                                    for index in range(len(axis.values))]
    width, height = max(size[0] for size in sizes), max(size[1] for size in sizes)
    columns, rows, grids = (len(axis.values) for axis in plot.axes)
    total = grids * columns * width * rows * height
    limit = plot.options.max_pixels
    if total > limit:
        raise RequestError(NAME, f"the plot would be {total / 1e6:,.1f} megapixels ({grids} grid(s) of "
                                 f"{columns}x{rows} cells of up to {width}x{height}), over the limit of "
                                 f"{limit / 1e6:,.1f} megapixels; use fewer values or smaller images")
