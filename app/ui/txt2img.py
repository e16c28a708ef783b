"""The txt2img tab: a new picture from a prompt, with A1111's hires fix (upscale, then denoise again)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from app.ui import choices, controls
from app.ui.controlnet_panel import build_controlnet
from app.ui.controls import GenerationTab
from app.ui.extra_networks import build_extra_networks
from app.ui.styles_editor import build_style_editor

if TYPE_CHECKING:
    from modules.runtime.services import Services


def build_txt2img(services: Services) -> GenerationTab:
    """Lay out and wire the tab (call inside a ``gr.Tab``); the returned tab names every component."""
    tab = GenerationTab(task="txt2img")
    limits = services.config.limits
    controls.model_row(services, tab)
    controls.prompt_row(services, tab)
    build_style_editor(services, tab)
    build_extra_networks(services, tab)
    with gr.Row(elem_classes=[controls.WORKSPACE_CLASS]):
        with gr.Column(scale=1):
            controls.sampling_controls(services, tab, size_note="0 = the model's default size")
            with gr.Accordion("Hires. fix", open=False):
                tab.add("enable_hr", gr.Checkbox(label="Enable hires fix", value=False))
                with gr.Row():
                    tab.add("hr_upscaler", gr.Dropdown(label="Upscaler", choices=choices.hires_upscalers(services),
                                                       value="Latent"))
                    tab.add("hr_scale", gr.Slider(1, 4, step=0.05, value=2.0, label="Upscale by"))
                with gr.Row():
                    tab.add("hr_second_pass_steps", gr.Slider(0, limits.max_steps, step=1, precision=0, value=0,
                                                              label="Hires steps", info="0 = same as sampling"))
                    tab.add("denoising_strength", gr.Slider(0, 1, step=0.01, value=0.7,
                                                            label="Denoising strength"))
                with gr.Row():
                    tab.add("hr_resize_x", gr.Slider(0, limits.max_side, step=8, precision=0, value=0,
                                                     label="Resize width to", info="0 = use 'Upscale by'"))
                    tab.add("hr_resize_y", gr.Slider(0, limits.max_side, step=8, precision=0, value=0,
                                                     label="Resize height to"))
            build_controlnet(services, tab)
            controls.extension_controls(services, tab)
        with gr.Column(scale=1, elem_classes=[controls.OUTPUT_CLASS]):
            controls.output_panel(tab, send_targets=("img2img", "inpaint", "upscale"))
    controls.wire(services, tab)
    return tab
