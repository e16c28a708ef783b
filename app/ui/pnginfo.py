"""The PNG info tab: what an image says about how it was made, and "send these parameters" to a generation tab.

The upload is taken as the original file (``type="filepath"``, no mode conversion), because re-encoding it the
way an image component normally does would drop the text chunks and EXIF this tab exists to read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from app.ui.form import Form, Values
from app.ui.generate import error_html, status_html
from app.ui.request_form import load_image
from app.ui.uploads import named_upload
from modules.errors import RequestError

if TYPE_CHECKING:
    from modules.runtime.services import Services


def build_pnginfo(services: Services) -> Form:
    """Lay out and wire the tab (call inside a ``gr.Tab``); the send buttons are wired by ``build_ui``."""
    form = Form()
    with gr.Row():
        with gr.Column():
            form["image"] = named_upload(gr.Image(label="Image", type="filepath", image_mode=None,
                                                  sources=["upload", "clipboard"], height=420))
            form["video"] = gr.File(label="…or a video (MP4, WebM, GIF, WebP)",
                                    file_types=[".mp4", ".webm", ".gif", ".webp", ".mov", ".mkv"])
            form["audio"] = gr.File(label="…or a sound made here (WAV, FLAC, MP3, OGG, Opus)", file_count="single",
                                    file_types=["audio"], elem_id="pnginfo-audio")
        with gr.Column():
            form["infotext"] = gr.Textbox(label="Parameters", lines=8, interactive=False, buttons=["copy"])
            with gr.Row():
                form["send_txt2img"] = gr.Button("Send to txt2img", size="sm")
                form["send_img2img"] = gr.Button("Send to img2img", size="sm")
                form["send_inpaint"] = gr.Button("Send to inpaint", size="sm")
                form["send_upscale"] = gr.Button("Send to upscale", size="sm")
                form["send_video"] = gr.Button("Send to video", size="sm")
            form["status"] = gr.HTML("")
            form["parameters"] = gr.JSON(label="Parsed parameters")
            form["items"] = gr.JSON(label="Other text in the file")
    form.connect(form["image"].change, read_png_info, ["image"], ["infotext", "parameters", "items", "status"],
                 api_name=False)
    form.connect(form["video"].change, read_video_info, ["video"], ["infotext", "parameters", "items", "status"],
                 api_name=False)
    form.connect(form["audio"].change, read_audio_info, ["audio"], ["infotext", "parameters", "items", "status"],
                 api_name=False)
    return form


def read_audio_info(values: Values) -> Values:
    """The parameters an audio file made by the Audio tab carries in its metadata (see ``modules.audio.encode``)."""
    import json

    from modules.audio.encode import read_parameters

    empty = {"infotext": "", "parameters": None, "items": None}
    path = values.get("audio")
    path = getattr(path, "name", path)
    if not path:
        return {**empty, "status": ""}
    try:
        parameters = read_parameters(str(path))
    except OSError as error:
        return {**empty, "status": error_html("audio", f"the file cannot be read: {error}")}
    if not parameters:
        return {**empty, "status": status_html("This file holds no generation parameters.")}
    return {"infotext": json.dumps(parameters, ensure_ascii=False), "parameters": parameters, "items": None,
            "status": ""}


def read_png_info(values: Values) -> Values:
    """The image's infotext, its parsed parameters, and any other text chunks (e.g. a workflow, a comment)."""
    from modules.image.infotext import parse_infotext, read_image_info

    empty = {"infotext": "", "parameters": None, "items": None}
    try:
        image = load_image(values.get("image"), "image")
    except RequestError as error:
        return {**empty, "status": error_html(error.field, error.message)}
    if image is None:
        return {**empty, "status": ""}
    infotext, items = read_image_info(image)
    if not infotext:
        return {**empty, "items": items or None, "status": status_html("This image holds no generation parameters.")}
    return {"infotext": infotext, "parameters": parse_infotext(infotext), "items": items or None, "status": ""}


def read_video_info(values: Values) -> Values:
    """A clip's parameters, as the Video tab wrote them into the file (MP4 / WebM tags, GIF comment, WebP EXIF)."""
    from pathlib import Path

    from modules.image.infotext import parse_infotext
    from modules.video.encode import read_video_infotext

    empty = {"infotext": "", "parameters": None, "items": None}
    value = values.get("video")
    if not value:
        return {**empty, "status": ""}
    path = Path(str(getattr(value, "name", value)))
    try:
        infotext = read_video_infotext(path)
    except (OSError, ValueError) as error:
        return {**empty, "status": error_html("video", f"the file cannot be read ({error})")}
    if not infotext:
        return {**empty, "status": status_html("This video holds no generation parameters.")}
    return {"infotext": infotext, "parameters": parse_infotext(infotext), "items": None, "status": ""}
