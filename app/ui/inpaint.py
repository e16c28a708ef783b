"""The inpaint tab: repaint what the mask covers (drawn, uploaded, or the image's transparency), or outpaint.

The mask can be painted on the image with the editor's brush, uploaded separately (white = repaint), or left
out for an image with transparent areas, which are then repainted. The outpaint switch instead extends the
canvas by the given pixels per side and paints only the new border.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from app.ui import controls
from app.ui.controls import GenerationTab
from app.ui.img2img import RESIZE_LABELS
from app.ui.request_form import INPAINT_AREAS, MASK_MODES, OUTPAINT_SIDES
from app.ui.styles_editor import build_style_editor
from modules.image.request import INPAINT_FILLS

if TYPE_CHECKING:
    from modules.runtime.services import Services

FILL_LABELS = [fill.capitalize() for fill in INPAINT_FILLS]


def build_inpaint(services: Services) -> GenerationTab:
    """Lay out and wire the tab (call inside a ``gr.Tab``); the returned tab names every component."""
    tab = GenerationTab(task="inpaint")
    limits = services.config.limits
    controls.model_row(services, tab)
    controls.prompt_row(services, tab)
    build_style_editor(services, tab)
    with gr.Row():
        with gr.Column(scale=1):
            tab.add("inpaint_editor", gr.ImageEditor(
                label="Image: paint over the area to repaint", type="pil", image_mode="RGBA", format="png",
                sources=["upload", "clipboard"], transforms=(), layers=False, height=420,
                brush=gr.Brush(colors=["#ffffff", "#ff0000"], color_mode="fixed"),
            ))
            with gr.Accordion("Mask from a file", open=False):
                tab.add("mask_upload", gr.Image(label="Mask (white = repaint), added to what you paint",
                                                type="pil", image_mode=None,
                                                sources=["upload", "clipboard"], height=240))
                gr.Markdown("With no painted or uploaded mask, the image's transparent pixels are repainted.")
            with gr.Row():
                tab.add("mask_mode", gr.Radio(list(MASK_MODES), value=MASK_MODES[0], label="Mask mode"))
                tab.add("mask_blur", gr.Slider(0, 64, step=1, precision=0, value=4, label="Mask blur"))
            tab.add("inpainting_fill", gr.Radio(FILL_LABELS, value=FILL_LABELS[1], label="Masked content"))
            with gr.Row():
                tab.add("inpaint_area", gr.Radio(list(INPAINT_AREAS), value=INPAINT_AREAS[0], label="Inpaint area"))
                tab.add("inpaint_full_res_padding", gr.Slider(0, 256, step=4, precision=0, value=32,
                                                              label="Only masked padding, pixels"))
            tab.add("resize_mode", gr.Radio(RESIZE_LABELS, value=RESIZE_LABELS[0], label="Resize mode"))
            tab.add("denoising_strength", gr.Slider(0, 1, step=0.01, value=0.75, label="Denoising strength"))
            with gr.Accordion("Outpaint", open=False):
                tab.add("outpaint_mode", gr.Checkbox(label="Outpaint instead: extend the image by these pixels",
                                                     value=False))
                with gr.Row():
                    for side in OUTPAINT_SIDES:
                        tab.add(f"outpaint_{side}", gr.Slider(0, limits.max_side, step=8, precision=0, value=0,
                                                              label=side.capitalize()))
            controls.sampling_controls(services, tab, size_note="0 = the image's size")
            controls.extension_controls(services, tab)
        with gr.Column(scale=1):
            controls.output_panel(tab, send_targets=("img2img", "inpaint", "upscale"))
    controls.wire(services, tab)
    return tab
