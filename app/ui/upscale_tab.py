"""The Upscale tab (A1111's Extras): one image, several, or a folder, through the upscale kind of job.

Upscalers come from the studio's list (Lanczos, Nearest and the models in models/ESRGAN, RealESRGAN, SwinIR, DAT,
HAT), re-read when the tab's ↻ is pressed; a second upscaler can be blended over the first. Each click queues
one job like a generation, with its progress, interrupt and history, and the results land in
``outputs/extras-images`` with their parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.ui import choices
from app.ui.accessible import REFRESH_GLYPH, icon_button
from app.ui.form import Form, Values
from app.ui.generate import failure, follow_job, interrupt, skip
from app.ui.request_form import load_image
from app.ui.results import empty_state, select_image
from app.ui.uploads import named_upload
from modules.errors import RequestError
from modules.upscaling.request import UpscaleRequest

if TYPE_CHECKING:
    from modules.runtime.services import Services

SOURCES = ("Single image", "Several images", "A folder")
SETTINGS_FIELDS = ("output_format", "save_images")


def build_upscale(services: Services) -> Form:
    """Lay out and wire the tab (call inside a ``gr.Tab``)."""
    form = Form()
    limits = services.config.limits
    names = choices.image_upscalers(services)
    with gr.Row():
        with gr.Column(scale=1):
            form["source"] = gr.Radio(list(SOURCES), value=SOURCES[0], label="Upscale")
            form["image"] = named_upload(gr.Image(label="Image", type="filepath", image_mode=None,
                                                  sources=["upload", "clipboard"], height=320))
            form["files"] = gr.File(label="Images", file_count="multiple", file_types=["image"], visible=False)
            form["input_dir"] = gr.Textbox(label="Input folder", placeholder="/path/to/images", visible=False,
                                           info="every image directly in this folder, by name")
            with gr.Row():
                form["resize_mode"] = gr.Radio(["Scale by", "Scale to"], value="Scale by", label="Resize")
                form["scale"] = gr.Slider(1, 8, step=0.05, value=2, label="Scale by")
            with gr.Row(visible=False) as size_row:
                form["width"] = gr.Number(label="Width", value=512, precision=0, minimum=1,
                                          maximum=limits.max_upscale_side)
                form["height"] = gr.Number(label="Height", value=512, precision=0, minimum=1,
                                           maximum=limits.max_upscale_side)
                form["crop"] = gr.Checkbox(label="Crop to fit", value=True)
            with gr.Row():
                form["upscaler"] = gr.Dropdown(names, value=_first_model(names), label="Upscaler", scale=4)
                form["refresh"] = gr.Button(REFRESH_GLYPH, size="sm", scale=0, min_width=40,
                                             **icon_button("refresh-upscalers"))
            with gr.Row():
                form["upscaler_2"] = gr.Dropdown(names, value="None", label="Upscaler 2")
                form["upscaler_2_visibility"] = gr.Slider(0, 1, step=0.01, value=0, label="Upscaler 2 visibility")
            with gr.Accordion("Tiles", open=False):
                form["tile_size"] = gr.Number(label="Tile size", value=0, precision=0, minimum=0,
                                              info="0 = this device's default; a smaller tile needs less memory")
                form["tile_overlap"] = gr.Number(label="Tile overlap", value=32, precision=0, minimum=0)
            with gr.Row():
                form["generate"] = gr.Button("Upscale", variant="primary", scale=3)
                form["interrupt"] = gr.Button("Interrupt", scale=1)
                form["skip"] = gr.Button("Skip", scale=1)
        with gr.Column(scale=1):
            form["job"] = gr.State(None)
            form["result"] = gr.State(empty_state())
            form["progress"] = gr.HTML("")
            form["preview"] = gr.Image(visible=False)
            form["gallery"] = gr.Gallery(label="Output", columns=3, height=512, format="png", interactive=False,
                                         object_fit="contain")
            form["infotext"] = gr.Textbox(label="Parameters", lines=3, interactive=False, buttons=["copy"])
            form["status"] = gr.HTML("")
    inputs = ["source", "image", "files", "input_dir", "resize_mode", "scale", "width", "height", "crop",
              "upscaler", "upscaler_2", "upscaler_2_visibility", "tile_size", "tile_overlap"]
    outputs = ["job", "progress", "preview", "gallery", "infotext", "status", "result"]
    form.connect(form["generate"].click, partial(upscale_events, services), inputs, outputs,
                 api_name="upscale", concurrency_limit=None)
    form.connect(form["interrupt"].click, partial(interrupt, services), ["job"], [], api_name=False, queue=False)
    form.connect(form["skip"].click, partial(skip, services), ["job"], [], api_name=False, queue=False)
    form.connect(form["refresh"].click, partial(refresh_upscalers, services), ["upscaler", "upscaler_2"],
                 ["upscaler", "upscaler_2"], api_name=False)
    form["source"].change(lambda source: [gr.update(visible=source == SOURCES[0]),
                                          gr.update(visible=source == SOURCES[1]),
                                          gr.update(visible=source == SOURCES[2])],
                          inputs=form["source"], outputs=[form["image"], form["files"], form["input_dir"]],
                          api_name=False, queue=False)
    form["resize_mode"].change(lambda mode: [gr.update(visible=mode == "Scale by"),
                                             gr.update(visible=mode == "Scale to")],
                               inputs=form["resize_mode"], outputs=[form["scale"], size_row], api_name=False,
                               queue=False)

    def on_select(data: dict, event: gr.SelectData) -> dict:
        return form.by_component(select_image(form.by_name(data), event.index))

    form["gallery"].select(on_select, inputs={form["result"]}, outputs=[form["result"], form["infotext"]],
                           api_name=False, queue=False)
    return form


def _first_model(names: list[str]) -> str:
    """The first model upscaler (the embedded one when nothing else is installed), else Lanczos."""
    return next((name for name in names if name not in ("None", "Lanczos", "Nearest")), "Lanczos")


def request_from_values(values: Values) -> UpscaleRequest:
    """The tab's values -> an upscale request; a bad upload or field is a ``RequestError`` naming it."""
    source = values.get("source") or SOURCES[0]
    images: tuple = ()
    names: tuple = ()
    input_dir = None
    if source == SOURCES[0]:
        image = load_image(values.get("image"), "image")
        if image is None:
            raise RequestError("image", "upload an image to upscale")
        images, names = (image,), (_file_name(values.get("image")),)
    elif source == SOURCES[1]:
        files = [item for item in values.get("files") or [] if item]
        if not files:
            raise RequestError("files", "add the images to upscale")
        images = tuple(load_image(_path(item), f"files.{index}") for index, item in enumerate(files))
        names = tuple(_file_name(_path(item)) for item in files)
    else:
        input_dir = str(values.get("input_dir") or "").strip()
        if not input_dir:
            raise RequestError("input_dir", "give the folder whose images to upscale")
    tile_size = int(values.get("tile_size") or 0)
    return UpscaleRequest(
        images=images, names=names, input_dir=input_dir,
        upscaler=values.get("upscaler") or "Lanczos", upscaler_2=values.get("upscaler_2") or "None",
        upscaler_2_visibility=float(values.get("upscaler_2_visibility") or 0),
        resize_mode=1 if values.get("resize_mode") == "Scale to" else 0,
        scale=float(values.get("scale") or 0), width=int(values.get("width") or 0),
        height=int(values.get("height") or 0), crop=bool(values.get("crop", True)),
        tile_size=tile_size or None, tile_overlap=int(values.get("tile_overlap") or 0) if tile_size else None,
        save_images=bool(values.get("save_images", True)), output_format=values.get("output_format") or "png",
    )


def upscale_events(services: Services, values: Values) -> Iterator[Values]:
    """One Upscale click: the job's progress, then its images, or a notice naming the field that is wrong."""
    form = {name: services.settings.get(name) for name in SETTINGS_FIELDS if services.settings.has(name)}
    try:
        job = services.queue.submit(request_from_values({**form, **values}))
    except RequestError as error:
        yield failure(error.field, error.message)
        return
    yield from follow_job(services, job)


def refresh_upscalers(services: Services, values: Values) -> Values:
    names = choices.image_upscalers(services)
    keep = {key: (values.get(key) if values.get(key) in names else default)
            for key, default in (("upscaler", _first_model(names)), ("upscaler_2", "None"))}
    return {key: gr.update(choices=names, value=value) for key, value in keep.items()}


def _path(item: Any) -> Any:
    return getattr(item, "name", item)  # gr.File gives paths (or file objects with .name on older Gradio)


def _file_name(value: Any) -> str:
    from pathlib import Path

    return Path(str(value)).name if isinstance(value, str) and value else ""
