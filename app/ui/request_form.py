"""Form values (by name) -> ``GenerationRequest``: the one place a tab's controls become a request.

The form names are the request's own field names (and A1111's API names for the hires fix), so "paste infotext",
"send to" and the API all speak the same vocabulary. Images from Gradio arrive as PIL images, numpy arrays or file
paths depending on the component; each is checked here so a corrupt upload or a mask of the wrong size is
reported against its field before anything is queued.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, UnidentifiedImageError

from modules.errors import RequestError
from modules.formats import is_own_vae
from modules.image.masks import alpha_of, binary_mask, has_transparency
from modules.image.request import INPAINT_FILLS, RESIZE_MODES, GenerationRequest, HiresFix, Outpaint

MASK_MODES = ("Inpaint masked", "Inpaint not masked")
INPAINT_AREAS = ("Whole picture", "Only masked")
OUTPAINT_SIDES = ("left", "right", "top", "bottom")


def request_from_form(values: Mapping[str, Any]) -> GenerationRequest:
    """Build the request a tab's form describes; raise ``RequestError`` naming the field for unusable input.

    ``values["task"]`` is the tab's task; the inpaint tab's ``outpaint_mode`` switch turns it into "outpaint".
    Fields the form lacks keep the request's defaults.
    """
    task = str(values.get("task") or "txt2img")
    if task == "inpaint" and values.get("outpaint_mode"):
        task = "outpaint"
    fields: dict[str, Any] = {
        "task": task,
        "prompt": str(values.get("prompt") or ""),
        "negative_prompt": str(values.get("negative_prompt") or ""),
        "styles": tuple(values.get("styles") or ()),
        "model": values.get("model") or None,
        "vae": None if is_own_vae(values.get("vae")) else str(values["vae"]),
    }
    _copy(fields, values, ("sampler_name", "scheduler"), str)
    _copy(fields, values, ("steps", "width", "height", "batch_size", "n_iter", "clip_skip", "mask_blur",
                           "inpaint_full_res_padding"), _integer)
    _copy(fields, values, ("cfg_scale", "subseed_strength"), float)
    _copy(fields, values, ("seed", "subseed"), _seed)
    for name in ("seed", "subseed"):
        _check_seed(name, fields.get(name, -1))
    _copy(fields, values, ("save_images", "make_grid"), bool)
    if values.get("output_format"):
        fields["output_format"] = str(values["output_format"]).lower()
    if task == "txt2img":
        if values.get("enable_hr"):
            fields["hires"] = _hires(values)
    else:
        _copy(fields, values, ("denoising_strength",), float)
        if values.get("resize_mode") is not None:
            fields["resize_mode"] = _choice_index("resize_mode", values["resize_mode"], RESIZE_MODES)
        _image_fields(fields, values, task)
    if task != "outpaint":
        from app.ui.controlnet_panel import units_from_form

        fields["controlnet"] = units_from_form(values)
    settings = extension_settings(values)
    if settings:
        fields["extensions"] = settings
    return GenerationRequest(**fields)


def extension_settings(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Controls named ``ext.<extension>.<setting>`` -> ``{extension: {setting: value}}``, the request's
    ``extensions`` field: extension settings travel by name, never by position."""
    settings: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if isinstance(key, str) and key.startswith("ext."):
            name, _, setting = key[4:].partition(".")
            if name and setting:
                settings.setdefault(name, {})[setting] = value
    return settings


def _copy(fields: dict[str, Any], values: Mapping[str, Any], names: tuple[str, ...], kind: Any) -> None:
    for name in names:
        value = values.get(name)
        if value is None or value == "":
            continue
        try:
            fields[name] = kind(value)
        except (TypeError, ValueError):
            raise RequestError(name, f"not a valid value: {value!r}") from None


def _integer(value: Any) -> int:
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def _seed(value: Any) -> int:
    """Seeds arrive as floats from number boxes; anything negative means "random", like A1111."""
    seed = _integer(value)
    return -1 if seed < 0 else seed


MAX_SEED = 2**32 - 1


def _check_seed(name: str, seed: int) -> None:
    """A seed the engine cannot use, said in whole numbers (a float's 4.29497e+09 means nothing to an artist),
    with the way out: -1 for a random one."""
    if seed > MAX_SEED:
        raise RequestError(name, f"{seed} is too large: a seed goes from 0 to {MAX_SEED}; use -1 for a random seed")


def _choice_index(name: str, value: Any, choices: tuple[str, ...]) -> int:
    """Radio labels (any case) or indexes -> index, the form the request stores."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    lowered = [choice.lower() for choice in choices]
    text = str(value).strip().lower()
    if text in lowered:
        return lowered.index(text)
    raise RequestError(name, f"unknown choice {value!r}; expected one of {', '.join(choices)}")


def _hires(values: Mapping[str, Any]) -> HiresFix:
    fields: dict[str, Any] = {}
    _copy(fields, values, ("hr_scale",), float)
    _copy(fields, values, ("hr_second_pass_steps", "hr_resize_x", "hr_resize_y"), _integer)
    _copy(fields, values, ("denoising_strength",), float)
    rename = {"hr_scale": "scale", "hr_second_pass_steps": "steps", "hr_resize_x": "resize_x",
              "hr_resize_y": "resize_y"}
    hires = {rename.get(key, key): value for key, value in fields.items()}
    if values.get("hr_upscaler"):
        hires["upscaler"] = str(values["hr_upscaler"])
    return HiresFix(**hires)


def _image_fields(fields: dict[str, Any], values: Mapping[str, Any], task: str) -> None:
    editor = values.get("inpaint_editor")
    drawn = None
    if editor is not None and (task in ("inpaint", "outpaint")):
        image, drawn = editor_image_and_mask(editor)
    else:
        image = load_image(values.get("init_image"), "init_image")
    if image is None:
        raise RequestError("init_image", f"{task} needs an input image: upload one first")
    fields["init_image"] = image
    if task == "outpaint":
        sides = {side: _integer(values.get(f"outpaint_{side}") or 0) for side in OUTPAINT_SIDES}
        fields["outpaint"] = Outpaint(**sides)
        return
    if task != "inpaint":
        return
    uploaded = load_image(values.get("mask_upload"), "mask")
    if uploaded is not None and uploaded.size != image.size:
        raise RequestError("mask", f"the uploaded mask is {uploaded.size[0]}x{uploaded.size[1]} but the image is "
                                   f"{image.size[0]}x{image.size[1]}; they must match")
    mask = _union(drawn, binary_mask(uploaded) if uploaded is not None else None)
    if mask is None and not has_transparency(image):
        raise RequestError("mask", "draw a mask on the image, upload one, or use an image with transparent areas")
    if mask is None:  # the engine repaints the image's transparent pixels, read from its alpha channel
        fields["init_image"] = image if image.mode == "RGBA" else image.convert("RGBA")
    fields["mask"] = mask
    if values.get("mask_mode") is not None:
        fields["inpainting_mask_invert"] = _choice_index("mask_mode", values["mask_mode"], MASK_MODES) == 1
    if values.get("inpainting_fill") is not None:
        fields["inpainting_fill"] = _choice_index("inpainting_fill", values["inpainting_fill"], INPAINT_FILLS)
    if values.get("inpaint_area") is not None:
        fields["inpaint_full_res"] = _choice_index("inpaint_area", values["inpaint_area"], INPAINT_AREAS) == 1


def load_image(value: Any, field_name: str) -> Image.Image | None:
    """A PIL image from whatever an image component passed (PIL, numpy array, path); None when empty."""
    if value is None or (isinstance(value, str) and not value):
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        try:
            with Image.open(Path(value)) as opened:
                opened.load()
                image = opened.copy()
                image.info = dict(opened.info)
                return image
        except (OSError, UnidentifiedImageError, ValueError) as error:
            raise RequestError(field_name, f"the uploaded file is not a readable image ({error})") from None
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        try:
            return Image.fromarray(value)
        except (TypeError, ValueError) as error:
            raise RequestError(field_name, f"cannot read the image data ({error})") from None
    raise RequestError(field_name, f"expected an image, got {type(value).__name__}")


def editor_image_and_mask(editor: Any) -> tuple[Image.Image | None, Image.Image | None]:
    """The ImageEditor's background, and a mask of every painted stroke in its layers (None if nothing drawn).

    Strokes are painted on layers above the background; any pixel a layer covers (alpha > 0) is to be repainted.
    A plain image (not an editor dict) is treated as a background with nothing drawn.
    """
    if not isinstance(editor, Mapping):
        return load_image(editor, "init_image"), None
    background = load_image(editor.get("background"), "init_image")
    if background is None:
        background = load_image(editor.get("composite"), "init_image")
    if background is None:
        return None, None
    mask = None
    for index, layer in enumerate(editor.get("layers") or []):
        layer_image = load_image(layer, f"mask (layer {index + 1})")
        if layer_image is None:
            continue
        alpha = alpha_of(layer_image)
        if alpha.size != background.size:  # a layer always covers the canvas; a resized canvas scales with it
            alpha = alpha.resize(background.size, Image.Resampling.NEAREST)
        mask = _union(mask, alpha.point(lambda v: 255 if v > 0 else 0))
    if mask is not None and mask.getbbox() is None:
        mask = None
    return background, mask





def _union(first: Image.Image | None, second: Image.Image | None) -> Image.Image | None:
    if first is None:
        return second
    if second is None:
        return first
    return ImageChops.lighter(first, second)
