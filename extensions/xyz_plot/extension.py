"""X/Y/Z plot: one request swept over up to three axes, shown as labelled grids (one per Z value).

Built only on the public extension API, like any user's extension. Its settings travel by name in
``request.extensions["xyz_plot"]``:

- ``x_type`` / ``y_type`` / ``z_type``: an axis name ("Steps", "CFG Scale", "Checkpoint name", "Prompt S/R", a
  numeric request field such as "mask_blur") or an A1111 axis index; empty or "Nothing" = unused;
- ``x_values`` / ``y_values`` / ``z_values``: A1111's syntax (``10,20``, ``1-5``, ``1-10 (+2)``, ``1-10 [5]``)
  or a list;
- ``draw_legend`` (true), ``include_cells`` (true; A1111's ``include_lone_images``), ``no_fixed_seeds`` (false),
  ``vary_seeds_x|y|z`` (false), ``margin_size`` (0 px), ``max_pixels`` (may lower the 200 MP limit).

A1111 clients select it with ``script_name: "x/y/z plot"`` and its positional ``script_args``.
"""

from __future__ import annotations

from typing import Any

from modules.extensions.api import Extension, GenerationRequest, GenerationResult, JobOutcome, Sweep

from .controls import build_controls
from .output import plot_result
from .plan import A1111_ARGS, SCRIPT_TITLE, a1111_script_args, build_sweep, read_plot

TABS = ("txt2img", "img2img", "inpaint")


def setup(ext: Extension) -> None:
    @ext.expand_request
    def expand(request: GenerationRequest, settings: dict[str, Any]) -> Sweep | None:
        if not settings:
            return None
        plot = read_plot(request, settings, ext.catalog)
        if not plot.used:
            return None
        sweep = build_sweep(request, plot)
        ext.log.info("X/Y/Z plot: %d cells (%s)", len(sweep.requests),
                     ", ".join(f"{axis.letter.upper()}: {axis.type.label}" for axis in plot.axes if axis.type))
        return sweep

    @ext.on_job_end
    def finish(outcome: JobOutcome, settings: dict[str, Any]) -> GenerationResult | None:
        return plot_result(outcome)

    ext.add_script(SCRIPT_TITLE, A1111_ARGS, describe=a1111_script_args)
    for tab in TABS:
        ext.add_controls(tab, lambda tab=tab: build_controls(tab, ext.catalog))
