"""The img2img tab: repaint a whole input image, keeping as much of it as the denoising strength says."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from app.ui import controls
from app.ui.controlnet_panel import build_controlnet
from app.ui.controls import GenerationTab
from app.ui.extra_networks import build_extra_networks
from app.ui.interrogate import wire_interrogate
from app.ui.styles_editor import build_style_editor
from app.ui.uploads import named_upload
from modules.image.request import RESIZE_MODES

if TYPE_CHECKING:
    from modules.runtime.services import Services

RESIZE_LABELS = [mode.capitalize() for mode in RESIZE_MODES]


def build_img2img(services: Services) -> GenerationTab:
    """Lay out and wire the tab (call inside a ``gr.Tab``); the returned tab names every component."""
    tab = GenerationTab(task="img2img")
    controls.model_row(services, tab)
    controls.prompt_row(services, tab, interrogate=True)
    build_style_editor(services, tab)
    build_extra_networks(services, tab)
    with gr.Row(elem_classes=[controls.WORKSPACE_CLASS]):
        with gr.Column(scale=1):
            tab.add("init_image", named_upload(gr.Image(label="Image", type="pil", image_mode="RGB",
                                                        sources=["upload", "clipboard"], height=320)))
            tab.add("resize_mode", gr.Radio(RESIZE_LABELS, value=RESIZE_LABELS[0], label="Resize mode"))
            tab.add("denoising_strength", gr.Slider(0, 1, step=0.01, value=0.75, label="Denoising strength"))
            controls.sampling_controls(services, tab, size_note="0 = the image's size")
            build_controlnet(services, tab)
            controls.extension_controls(services, tab)
        with gr.Column(scale=1, elem_classes=[controls.OUTPUT_CLASS]):
            controls.output_panel(tab, send_targets=("img2img", "inpaint", "upscale"))
    controls.wire(services, tab)
    wire_interrogate(services, tab, "init_image")
    return tab
