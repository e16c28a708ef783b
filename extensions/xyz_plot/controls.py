"""The plot's controls in a generation tab: three axes (type + values) and the output options, by setting name.

Gradio is imported only when a tab is built, so the API server and the tests never pay for it.
"""

from __future__ import annotations

from typing import Any

from modules.extensions.api import Catalog

from .axes import find_axis
from .plan import LETTERS

SYNTAX = "Comma list (10, 20, 30) or range: 1-5, 1-10 (+2), 1-10 [5 values]"


def values_hint(axis_name: str, task: str, catalog: Catalog) -> str:
    """What to type for an axis: its choices when the studio has a list of them, else the value syntax."""
    try:
        axis = find_axis(axis_name, task, "x_type")
    except ValueError:
        return SYNTAX
    if axis is None:
        return "This axis is not used."
    if axis.catalog:
        names = catalog.names(axis.catalog)
        if names:
            return "Choices: " + ", ".join(names)
    if axis.label == "Prompt S/R":
        return "The first value is searched for in the prompts; each value replaces it (comma list)."
    if axis.kind is str:
        return "Comma list; quote a value that holds a comma."
    return SYNTAX


def build_controls(tab: str, catalog: Catalog) -> dict[str, Any]:
    """Runs inside the tab's layout; returns the components by setting name."""
    import gradio as gr

    from .axes import axis_names

    task = "txt2img" if tab == "txt2img" else "img2img"
    components: dict[str, Any] = {}
    with gr.Accordion("X/Y/Z plot", open=False):
        for letter in LETTERS:
            with gr.Row():
                kind = gr.Dropdown(axis_names(task), value="Nothing", label=f"{letter.upper()} type")
                values = gr.Textbox(label=f"{letter.upper()} values", info=SYNTAX, lines=1)
            kind.change(lambda name: gr.update(info=values_hint(name, task, catalog)), inputs=kind, outputs=values)
            components[f"{letter}_type"], components[f"{letter}_values"] = kind, values
        with gr.Row():
            components["draw_legend"] = gr.Checkbox(True, label="Draw legend")
            components["include_cells"] = gr.Checkbox(True, label="Include cell images")
            components["no_fixed_seeds"] = gr.Checkbox(False, label="Keep -1 for seeds")
            components["margin_size"] = gr.Slider(0, 500, value=0, step=2, label="Grid margins (px)")
    return components
