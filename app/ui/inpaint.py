"""The inpaint tab: repaint what the mask covers (drawn, uploaded, or the image's transparency), or outpaint.

The mask can be painted on the image with the editor's brush, uploaded separately (white = repaint), or left
out for an image with transparent areas, which are then repainted. The outpaint switch instead extends the
canvas by the given pixels per side and paints only the new border.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image, UnidentifiedImageError

from app.ui import controls
from app.ui.accessible import CHECKED_UPLOAD_CLASS
from app.ui.controlnet_panel import build_controlnet
from app.ui.controls import GenerationTab
from app.ui.extra_networks import build_extra_networks
from app.ui.form import Values
from app.ui.img2img import RESIZE_LABELS
from app.ui.interrogate import wire_interrogate
from app.ui.request_form import INPAINT_AREAS, MASK_MODES, OUTPAINT_SIDES
from app.ui.styles_editor import build_style_editor
from app.ui.uploads import named_upload
from modules.image.request import INPAINT_FILLS

if TYPE_CHECKING:
    from modules.runtime.services import Services

FILL_LABELS = [fill.capitalize() for fill in INPAINT_FILLS]
BRUSH_COLORS = ["#ffffff", "#ff0000"]
BRUSH_SHARE = 20  # the brush's radius is the image's shorter side over this: 26 px on 512, 3 px on 64
DEFAULT_BRUSH_RADIUS = 25  # Gradio's own, before an image is in the editor


def brush_for(size: tuple[int, int] | None) -> gr.Brush:
    """The mask brush for an image of ``size``: Gradio's fixed 25 px radius covers a third of a 64 px image and
    is a pin-prick on a 2048 px one, so the radius is a share of the image instead."""
    radius = DEFAULT_BRUSH_RADIUS if size is None else max(1, round(min(size) / BRUSH_SHARE))
    return gr.Brush(colors=BRUSH_COLORS, color_mode="fixed", default_size=radius)


def image_size(value: Any) -> tuple[int, int] | None:
    """The size of what an image component or the editor holds (PIL image, file path, or the editor's dict with
    its background), reading only the file's header; None when there is no readable image."""
    if isinstance(value, dict):
        value = value.get("background") or value.get("composite")
    if isinstance(value, Image.Image):
        return value.size
    if isinstance(value, (str, Path)) and value:
        try:
            with Image.open(value) as image:
                return image.size
        except (OSError, UnidentifiedImageError, ValueError):
            return None
    return None


def follow_side(values: Values) -> Values:
    """The editor's image changed size (see ``SIDE_JS``): size the brush for it."""
    side = values.get("inpaint_side") or 0
    return {"inpaint_editor": gr.update(brush=brush_for((int(side), int(side))))} if side > 0 else {}


# The shorter side of the image in the editor, read in the page. Gradio's editor sends no ``upload`` event to the
# server in this version and its ``change`` fires on every stroke with the whole canvas as its value, so a
# js-only handler reads the size the editor exposes (``window.editor``, the page's one ImageEditor) once it has
# settled (the new image is measured a moment after the event) and puts it in a hidden number; only when that
# number changes does the server answer, with the brush.
SIDE_JS = """async (side) => {
  const read = () => {
    const size = window.editor && window.editor.dimensions_value;
    return size && size.width ? Math.min(size.width, size.height) : 0;
  };
  let now = read(), stable = 0;
  for (let wait = 0; wait < 30 && stable < 5; wait++) {
    await new Promise((done) => setTimeout(done, 100));
    const next = read();
    stable = next === now ? stable + 1 : 0;
    now = next;
  }
  return now || side;
}"""


def build_inpaint(services: Services) -> GenerationTab:
    """Lay out and wire the tab (call inside a ``gr.Tab``); the returned tab names every component."""
    tab = GenerationTab(task="inpaint")
    limits = services.config.limits
    controls.model_row(services, tab)
    controls.prompt_row(services, tab, interrogate=True)
    build_style_editor(services, tab)
    build_extra_networks(services, tab)
    with gr.Row(elem_classes=[controls.WORKSPACE_CLASS]):
        with gr.Column(scale=1):
            tab.add("inpaint_editor", gr.ImageEditor(
                label="Image: paint over the area to repaint", type="pil", image_mode="RGBA", format="png",
                sources=["upload", "clipboard"], transforms=(), layers=False, height=420,
                brush=brush_for(None), elem_classes=[CHECKED_UPLOAD_CLASS],
            ))
            with gr.Accordion("Mask from a file", open=False):
                tab.add("mask_upload", named_upload(gr.Image(
                    label="Mask (white = repaint), added to what you paint", type="pil", image_mode=None,
                    sources=["upload", "clipboard"], height=240)))
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
            build_controlnet(services, tab)
            controls.extension_controls(services, tab)
        with gr.Column(scale=1, elem_classes=[controls.OUTPUT_CLASS]):
            controls.output_panel(tab, send_targets=("img2img", "inpaint", "upscale"))
    controls.wire(services, tab)
    wire_interrogate(services, tab, "inpaint_editor")
    side = tab.add("inpaint_side", gr.Number(0, visible=False, precision=0), request_field=False)
    tab.form["inpaint_editor"].change(None, inputs=side, outputs=side, js=SIDE_JS, queue=False,
                                      show_progress="hidden", api_name=False)
    tab.form.connect(side.change, follow_side, ["inpaint_side"], ["inpaint_editor"], api_name=False, queue=False,
                     show_progress="hidden")
    return tab
