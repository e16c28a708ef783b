"""The Gradio studio: one tab per task, all of them front ends of the same job queue.

``build_ui(services)`` only lays out components and registers handlers; nothing runs until the server launches
the Blocks. ``build_layout`` returns the same Blocks with every tab's named components, which tests and
extensions use to reach a control by name instead of by position.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.ui.audio_tab import build_audio
from app.ui.controls import GenerationTab, extension_groups, extension_visibility
from app.ui.extensions_tab import build_extensions
from app.ui.form import Form
from app.ui.img2img import build_img2img
from app.ui.inpaint import build_inpaint
from app.ui.page_load import load_together
from app.ui.pnginfo import build_pnginfo
from app.ui.queue_tab import build_queue
from app.ui.send import send_file_to_upscale, send_image, send_parameters
from app.ui.settings_tab import build_settings
from app.ui.styles_editor import wire_style_editors
from app.ui.train_tab import build_train
from app.ui.txt2img import build_txt2img
from app.ui.upscale_tab import build_upscale
from app.ui.video_reuse import wire_video_reuse
from app.ui.video_tab import build_video

if TYPE_CHECKING:
    from modules.runtime.services import Services

TITLE = "Sfumato"
CSS = """
.sf-error { color: var(--error-text-color, #b91c1c); border: 1px solid currentColor; border-radius: 6px;
            padding: 6px 10px; }
.sf-progress { position: relative; height: 22px; border-radius: 4px; background: var(--block-background-fill); }
.sf-progress-bar { position: absolute; inset: 0 auto 0 0; background: var(--color-accent-soft); border-radius: 4px; }
.sf-progress-text { position: relative; padding-left: 8px; font-size: 0.9em; }
.sf-result { position: relative; }
.sf-result .sf-progress-over { position: absolute; top: 36px; left: 8px; right: 8px; z-index: 5;
                               pointer-events: none; background: transparent; }
.block.sf-token-count { margin-top: calc(-1 * var(--layout-gap, 16px) + 2px); }
.sf-token-count.prose { text-align: right; font-size: 0.85em; color: var(--body-text-color-subdued); }
@media (max-width: 720px) {
  .sf-workspace { flex-direction: column; }
  .sf-workspace > .sf-output { order: -1; }
}
.sf-notice { position: fixed; top: 12px; left: 50%; transform: translateX(-50%); z-index: 1000;
             display: flex; flex-direction: column; gap: 6px; max-width: min(90vw, 560px); }
.sf-notice > div { background: var(--background-fill-primary); color: var(--body-text-color);
                   border: 1px solid var(--color-accent); border-radius: 6px; padding: 8px 12px;
                   box-shadow: var(--shadow-drop-lg); }
"""


@dataclass
class Ui:
    """The built Blocks and its named parts."""

    blocks: gr.Blocks
    tabs: Any
    generation: dict[str, GenerationTab]
    pnginfo: Form
    settings: Form
    extensions: Form
    upscale: Form
    video: Form
    queue: Form

    def joined(self) -> Form:
        """Every tab's components under "<tab>.<name>", plus "tabs": the namespace of cross-tab handlers."""
        form = Form({"tabs": self.tabs})
        for task, tab in self.generation.items():
            form = form | tab.form.prefixed(task)
        return (form | self.pnginfo.prefixed("pnginfo") | self.settings.prefixed("settings")
                | self.upscale.prefixed("upscale"))


def build_ui(services: Services) -> gr.Blocks:
    """The studio's Blocks, ready to launch."""
    return build_layout(services).blocks


def build_layout(services: Services) -> Ui:
    with gr.Blocks(title=TITLE, analytics_enabled=False) as blocks:
        with gr.Tabs() as tabs:
            generation: dict[str, GenerationTab] = {}
            for task, build in (("txt2img", build_txt2img), ("img2img", build_img2img),
                                ("inpaint", build_inpaint)):
                with gr.Tab(task, id=task):
                    generation[task] = build(services)
            with gr.Tab("Upscale", id="upscale"):
                upscale = build_upscale(services)
            with gr.Tab("Video", id="video"):
                video = build_video(services)
            with gr.Tab("Audio", id="audio"):
                build_audio(services)
            with gr.Tab("Train", id="train"):
                build_train(services)
            with gr.Tab("Queue", id="queue"):
                queue = build_queue(services)
            with gr.Tab("PNG info", id="pnginfo"):
                pnginfo = build_pnginfo(services)
            with gr.Tab("Extensions", id="extensions"):
                extensions = build_extensions(services)
            with gr.Tab("Settings", id="settings"):
                settings = build_settings(services)
        ui = Ui(blocks=blocks, tabs=tabs, generation=generation, pnginfo=pnginfo, settings=settings,
                extensions=extensions, upscale=upscale, video=video, queue=queue)
        _wire_sending(services, ui)
        wire_video_reuse(services, ui)
        for tab in generation.values():
            groups = extension_groups(tab)
            if groups:
                tab.form.connect(blocks.load, partial(extension_visibility, services, tab), [], groups,
                                 api_name=False, queue=False, show_progress="hidden")
        wire_style_editors(services, ui)
        load_together(blocks)  # one answer sets every saved default when a page opens
    return ui


def _wire_sending(services: Services, ui: Ui) -> None:
    # Queued events (Gradio's default), because only those carry a toast to the page: "Nothing to send yet".
    joined = ui.joined()
    for source, tab in ui.generation.items():
        if "send_upscale" in tab.form:
            joined.connect(tab.form["send_upscale"].click, partial(send_image, source=source, target="upscale"),
                           [f"{source}.result"], ["tabs", "upscale.image", "upscale.source"], api_name=False)
        for target in ("img2img", "inpaint"):
            button = f"send_{target}"
            if button not in tab.form:
                continue
            target_image = "inpaint.inpaint_editor" if target == "inpaint" else f"{target}.init_image"
            fields = [f"{source}.{name}" for name in ("result", "prompt", "negative_prompt", "styles")]
            outputs = ["tabs", target_image, *(f"{target}.{name}" for name in ("prompt", "negative_prompt",
                                                                                  "styles"))]
            joined.connect(tab.form[button].click, partial(send_image, source=source, target=target), fields,
                           outputs, api_name=False)
    for target in ("txt2img", "img2img", "inpaint"):
        tab = ui.generation[target]
        names = [name for name in tab.inputs if name not in ("init_image", "inpaint_editor", "mask_upload")]
        outputs = ["tabs", *(f"{target}.{name}" for name in names)]
        if target == "img2img":
            outputs.append("img2img.init_image")
        if target == "inpaint":
            outputs.append("inpaint.inpaint_editor")
        joined.connect(ui.pnginfo[f"send_{target}"].click,
                       partial(send_parameters, services, target=target, target_names=names),
                       ["pnginfo.infotext", "pnginfo.image"], outputs, api_name=False)
    joined.connect(ui.pnginfo["send_upscale"].click, send_file_to_upscale, ["pnginfo.image"],
                   ["tabs", "upscale.image", "upscale.source"], api_name=False)
