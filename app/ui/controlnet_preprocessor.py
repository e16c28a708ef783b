"""A ControlNet unit's preprocessor controls: the module dropdown, its sliders (relabelled, re-ranged and shown or
hidden from the preprocessor's own description, as the extension's UI does) and a preview of the control image.

Built inside a unit's layout by the ControlNet accordion; the handlers are plain functions, so they are tested
without a browser. The dropdown offers the preprocessors that run here (the model-free ones, and the depth ones whose
model folder is under ``models/ControlNet/annotators/`` when the page is built); the others are only listed by the
API, since choosing one could only fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from app.ui.request_form import load_image
from modules.controlnet.preprocessors import PREPROCESSORS, RESOLUTION_SLIDER, Slider, find
from modules.errors import RequestError


def module_choices(models_dir: Path | None = None) -> list[str]:
    """The preprocessors that run with the models under ``models_dir``, by the extension's UI labels, ``none``
    first."""
    return [p.label for p in PREPROCESSORS.values() if p.available_in(models_dir)]


def slider_updates(module: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Updates for the resolution, threshold a and threshold b sliders when ``module`` is chosen: each shown with
    the preprocessor's label, range and default, or hidden when it takes no such parameter."""
    try:
        preprocessor = find(module)
    except RequestError:
        return gr.update(visible=False), gr.update(visible=False), gr.update(visible=False)
    resolution = RESOLUTION_SLIDER if preprocessor.uses_resolution else None
    return _update(resolution), _update(preprocessor.threshold_a), _update(preprocessor.threshold_b)


def _update(slider: Slider | None) -> dict[str, Any]:
    if slider is None:
        return gr.update(visible=False)
    return gr.update(visible=True, label=slider.label, minimum=slider.minimum, maximum=slider.maximum,
                     step=slider.step, value=slider.default)


def preview(module: str, image: Any, resolution: float, threshold_a: float, threshold_b: float,
            models_dir: Path | None = None) -> Image.Image | None:
    """The control image the unit would use, so a user can tune thresholds before generating; a refused input is
    a toast naming the field, not an exception in the page."""
    try:
        picture = load_image(image, "image")
        if picture is None:
            gr.Warning("image: upload a picture to preview its control image")
            return None
        preprocessor = find(module, "module")
        return preprocessor.run(picture, int(resolution), threshold_a, threshold_b, models_dir=models_dir)
    except RequestError as error:
        gr.Warning(f"{error.field}: {error.message}")
        return None


@dataclass
class PreprocessorControls:
    """The components of one unit's preprocessor part, for the accordion to read into a ``ControlNetUnit``
    (``module``, ``processor_res``, ``threshold_a``, ``threshold_b``)."""

    module: gr.Dropdown
    processor_res: gr.Slider
    threshold_a: gr.Slider
    threshold_b: gr.Slider
    preview_button: gr.Button
    preview_image: gr.Image


def build_preprocessor_controls(image: gr.components.Component, models_dir: Path | None = None,
                                elem_prefix: str = "controlnet") -> PreprocessorControls:
    """Lay out and wire the controls (call inside the unit's layout); ``image`` is the unit's control picture."""
    first = find("none")
    with gr.Row():
        module = gr.Dropdown(module_choices(models_dir), value=first.label, label="Preprocessor",
                             elem_id=f"{elem_prefix}-module")
        button = gr.Button("Preview", size="sm", scale=0, min_width=80, elem_id=f"{elem_prefix}-preview-button")
    processor_res = gr.Slider(RESOLUTION_SLIDER.minimum, RESOLUTION_SLIDER.maximum, value=RESOLUTION_SLIDER.default,
                              step=RESOLUTION_SLIDER.step, label=RESOLUTION_SLIDER.label, visible=False)
    threshold_a = gr.Slider(0, 1, value=0, label="Threshold A", visible=False)
    threshold_b = gr.Slider(0, 1, value=0, label="Threshold B", visible=False)
    shown = gr.Image(label="Preprocessor preview", type="pil", interactive=False, height=256,
                     elem_id=f"{elem_prefix}-preview")
    module.change(slider_updates, inputs=module, outputs=[processor_res, threshold_a, threshold_b],
                  show_progress="hidden")
    button.click(lambda *values: preview(*values, models_dir=models_dir),
                 inputs=[module, image, processor_res, threshold_a, threshold_b], outputs=shown)
    return PreprocessorControls(module, processor_res, threshold_a, threshold_b, button, shown)
