""""Send to img2img / inpaint" and PNG info's "send parameters": move a picture and its prompt between tabs.

These handlers span tabs, so they read and write a joined form whose names carry the tab as a prefix
("txt2img.result", "img2img.init_image", ...) plus "tabs", the tab switcher.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.ui.form import WARNING, Values
from app.ui.inpaint import brush_for, image_size
from app.ui.paste import parameters_from_infotext
from app.ui.results import selected_item

if TYPE_CHECKING:
    from modules.runtime.services import Services

PROMPT_FIELDS = ("prompt", "negative_prompt", "styles")


def send_image(values: Values, source: str, target: str) -> Values:
    """The source tab's selected image (and its prompt fields) into the target tab, and switch to it."""
    item = selected_item(values.get(f"{source}.result"))
    if item is None:
        return {WARNING: "Nothing to send yet: generate an image first."}
    updates: Values = {"tabs": gr.update(selected=target)}
    updates.update(image_update(target, item["image"]))
    if target == "upscale":
        return updates
    for name in PROMPT_FIELDS:
        key = f"{source}.{name}"
        if key in values:
            updates[f"{target}.{name}"] = values[key]
    return updates


def image_update(target: str, image: Any) -> Values:
    """The update that puts ``image`` into a tab's input image (the inpaint tab's editor starts unpainted)."""
    if target == "inpaint":  # the brush is sized for this image, as when one is uploaded there
        return {"inpaint.inpaint_editor": gr.update(value={"background": image, "layers": [], "composite": image},
                                                    brush=brush_for(image_size(image)))}
    if target == "upscale":
        return {"upscale.image": image, "upscale.source": "Single image"}
    return {f"{target}.init_image": image}


def send_file_to_upscale(values: Values) -> Values:
    """PNG info -> Upscale: the uploaded file itself (its parameters travel with it into the upscaled copy)."""
    image = values.get("pnginfo.image")
    if not image:
        return {WARNING: "Nothing to send yet: upload an image first."}
    return {"tabs": gr.update(selected="upscale"), **image_update("upscale", image)}


def send_parameters(services: Services, values: Values, target: str, target_names: Iterable[str]) -> Values:
    """PNG info -> a generation tab: the parameters of the uploaded image (and, for img2img and inpaint, the image
    itself; the inpaint editor starts with nothing painted)."""
    infotext = values.get("pnginfo.infotext") or ""
    if not infotext.strip():
        return {WARNING: "This image holds no generation parameters to send."}
    updates = parameters_from_infotext(services, infotext, target_names)
    updates = {(key if key.startswith("_") else f"{target}.{key}"): value for key, value in updates.items()}
    updates["tabs"] = gr.update(selected=target)
    if target != "txt2img" and values.get("pnginfo.image") is not None:
        updates.update(image_update(target, values["pnginfo.image"]))
    return updates
