"""The A1111 wire format: request bodies as A1111 v1.10 accepts them, and their translation to and from ours.

Clients written for AUTOMATIC1111 (the ``webuiapi`` package above all) send every field they know, many of them
null or meaningless to us (``eta``, ``s_churn``, ``hr_checkpoint_name``...). So unknown fields are ignored, a null
means "the default", and only what Sfumato can honour is translated into a ``GenerationRequest``. Errors found
on our field names are renamed back to the A1111 field the client actually sent, so its message points at it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.api.errors import ApiError
from app.api.images import decode_image, encode_png_base64
from modules.errors import RequestError
from modules.formats import AUTOMATIC_VAE, FORMAT_ALIASES
from modules.image.request import GenerationRequest, HiresFix
from modules.image.results import GenerationResult
from modules.image.samplers import UnknownSamplerError, UnknownScheduleError, sampler_spec, schedule_spec

DEFAULT_SAMPLER = "Euler"
# override_settings keys we honour -> the request field they set
OVERRIDE_FIELDS = {"sd_model_checkpoint": "model", "sd_vae": "vae", "CLIP_stop_at_last_layers": "clip_skip"}
# Our request field -> the A1111 field a client sets it with (for error messages).
_WIRE_NAMES = {
    "init_image": "init_images",
    "hires.scale": "hr_scale",
    "hires.steps": "hr_second_pass_steps",
    "hires.upscaler": "hr_upscaler",
    "hires.denoising_strength": "denoising_strength",
    "hires.resize_x": "hr_resize_x",
    "hires.resize_y": "hr_resize_y",
    "hires": "enable_hr",
    "model": "sd_model_checkpoint",
    "vae": "sd_vae",
    "clip_skip": "CLIP_stop_at_last_layers",
}
# Fields whose error means "no such thing" (a name the client got wrong) rather than "value out of range".
_LOOKUP_FIELDS = {"sampler_name", "scheduler", "model", "vae", "styles", "hires.upscaler"}


class _A1111Body(BaseModel):
    """Unknown fields are dropped and ``null`` falls back to the default, as A1111's own optional fields do."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            fields = cls.model_fields
            return {key: value for key, value in data.items()
                    if not (value is None and key in fields and not _nullable(fields[key].annotation))}
        return data


def _nullable(annotation: Any) -> bool:
    return type(None) in get_args(annotation)


class GenerationBody(_A1111Body):
    """Fields txt2img and img2img share (REFERENCE §1; defaults are the API's, e.g. 50 steps)."""

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    denoising_strength: float = 0.75
    override_settings: dict[str, Any] = Field(default_factory=dict)
    override_settings_restore_afterwards: bool = True
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    send_images: bool = True
    save_images: bool = False

    @property
    def sampler(self) -> str:
        """``sampler_name`` wins over the deprecated ``sampler_index``; "Euler" when both are absent."""
        return self.sampler_name or self.sampler_index or DEFAULT_SAMPLER


class Txt2ImgBody(GenerationBody):
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0


class Img2ImgBody(GenerationBody):
    init_images: list[str] = Field(default_factory=list)
    mask: str | None = None
    resize_mode: int = 0
    mask_blur: int | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    include_init_images: bool = False


class PngInfoBody(_A1111Body):
    image: str = ""


@dataclass(frozen=True)
class Defaults:
    """What the studio's options fill in when a request does not say: A1111's "current settings"."""

    model: str | None = None
    vae: str | None = None
    clip_skip: int = 1
    make_grid: bool = True
    output_format: str = "png"


# -- requests -------------------------------------------------------------------------------------------------


def overrides(body: GenerationBody) -> dict[str, Any]:
    """The request fields ``override_settings`` sets for this request only (other keys are ignored)."""
    fields: dict[str, Any] = {}
    for key, target in OVERRIDE_FIELDS.items():
        if key not in body.override_settings:
            continue
        value = body.override_settings[key]
        name = f"override_settings.{key}"
        if target == "clip_skip":
            fields[target] = _as_int(value, name)
        elif value is not None and not isinstance(value, str):
            raise ApiError(422, "must be a string", name)
        elif target == "vae":
            fields[target] = own_vae_as_none(value)
        else:
            fields[target] = value or None
    return fields


def own_vae_as_none(value: str | None) -> str | None:
    """A1111's "Automatic" and "None" both mean the checkpoint's own VAE, which a request says with None."""
    if not value or value.strip().lower() in ("automatic", "none"):
        return None
    return value


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(422, "must be an integer", name)
    try:
        number = float(value)
    except ValueError:
        raise ApiError(422, f"must be an integer, got {value!r}", name) from None
    if not number.is_integer():
        raise ApiError(422, f"must be an integer, got {value!r}", name)
    return int(number)


def _common_fields(body: GenerationBody, defaults: Defaults) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "styles": tuple(body.styles),
        "model": defaults.model,
        "vae": defaults.vae,
        "clip_skip": defaults.clip_skip,
        "sampler_name": body.sampler,
        "scheduler": body.scheduler or "Automatic",
        "steps": body.steps,
        "cfg_scale": body.cfg_scale,
        "width": body.width,
        "height": body.height,
        "seed": body.seed,
        "subseed": body.subseed,
        "subseed_strength": body.subseed_strength,
        "batch_size": body.batch_size,
        "n_iter": body.n_iter,
        "denoising_strength": body.denoising_strength,
        "make_grid": defaults.make_grid,
        "save_images": body.save_images,
        "output_format": defaults.output_format,
    }
    fields.update(overrides(body))
    return fields


def txt2img_request(body: Txt2ImgBody, defaults: Defaults) -> GenerationRequest:
    """A1111 txt2img JSON -> our request; the hires fix only when ``enable_hr``."""
    fields = _common_fields(body, defaults)
    if body.enable_hr:
        fields["hires"] = HiresFix(
            scale=body.hr_scale,
            upscaler=body.hr_upscaler or "Latent",
            steps=body.hr_second_pass_steps,
            denoising_strength=body.denoising_strength,
            resize_x=body.hr_resize_x,
            resize_y=body.hr_resize_y,
        )
    return GenerationRequest(task="txt2img", **fields)


def img2img_request(body: Img2ImgBody, defaults: Defaults) -> GenerationRequest:
    """A1111 img2img JSON -> our request: "inpaint" when a mask comes with it. Only the first init image is used."""
    if not body.init_images:
        raise ApiError(422, "img2img needs at least one image (raw base64 or a data URL)", "init_images")
    init_image = decode_image(body.init_images[0], "init_images")
    mask = decode_image(body.mask, "mask") if body.mask else None
    blur = body.mask_blur if body.mask_blur is not None else max(body.mask_blur_x, body.mask_blur_y)
    fields = _common_fields(body, defaults)
    fields.update(
        init_image=init_image,
        mask=mask,
        resize_mode=body.resize_mode,
        mask_blur=blur,
        inpainting_fill=body.inpainting_fill,
        inpaint_full_res=body.inpaint_full_res,
        inpaint_full_res_padding=body.inpaint_full_res_padding,
        inpainting_mask_invert=bool(body.inpainting_mask_invert),
    )
    return GenerationRequest(task="inpaint" if mask is not None else "img2img", **fields)


def wire_error(error: RequestError, body: GenerationBody | None = None) -> ApiError:
    """A validation error on our field names, renamed to the A1111 field (inside ``override_settings`` when the
    value came from there); a wrong name is a 400, a value out of range a 422."""
    name = _WIRE_NAMES.get(error.field, error.field)
    if body is not None and name in body.override_settings:
        name = f"override_settings.{name}"
    lookup = error.field in _LOOKUP_FIELDS
    if error.field.startswith("controlnet["):  # controlnet[0].model -> the extension's unit list
        name = "alwayson_scripts.controlnet.args" + error.field[len("controlnet"):]
        lookup = error.field.endswith((".model", ".module"))
    status = 400 if lookup else 422
    return ApiError(status, error.message, name)


# -- responses ------------------------------------------------------------------------------------------------


def generation_response(body: GenerationBody, result: GenerationResult) -> dict[str, Any]:
    """``{"images", "parameters", "info"}``: raw base64 PNGs carrying their infotext (the grid first, as
    ``index_of_first_image`` says), the request echoed without its images, and ``info`` as a JSON string."""
    images: list[str] = []
    if body.send_images:
        items = ([result.grid] if result.grid is not None else []) + list(result.images)
        images = [encode_png_base64(item.image, item.infotext) for item in items]
    if isinstance(body, Img2ImgBody) and body.include_init_images and body.send_images:
        images.extend(_raw_base64(image) for image in body.init_images)
    parameters = body.model_dump()
    if isinstance(body, Img2ImgBody):
        parameters["init_images"] = None
        parameters["mask"] = None
    return {"images": images, "parameters": parameters, "info": json.dumps(a1111_info(result))}


def a1111_info(result: GenerationResult) -> dict[str, Any]:
    """A1111's ``info`` object (REFERENCE §1) from the typed result: the summary under A1111's names, the
    per-image lists, and the fields A1111 has for features Sfumato does not model (face restoration, seed
    resize), at A1111's values for "off"."""
    summary = dataclasses.asdict(result.summary)
    summary["styles"] = list(result.summary.styles)
    images = result.images
    first = images[0] if images else None
    return {
        **summary,
        "all_prompts": [item.prompt for item in images],
        "all_negative_prompts": [item.negative_prompt for item in images],
        "seed": first.seed if first else -1,
        "all_seeds": [item.seed for item in images],
        "subseed": first.subseed if first else -1,
        "all_subseeds": [item.subseed for item in images],
        "restore_faces": False,
        "face_restoration_model": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "infotexts": [item.infotext for item in images],
        "index_of_first_image": (1 if result.grid is not None else 0) + result.leading_grids,
        "is_using_inpainting_conditioning": False,
        "nsfw": result.filtered,  # Sfumato's: per image, whether the NSFW filter hid it (A1111 has no such field)
        **result.extension_info,
    }


def _raw_base64(data: str) -> str:
    text = data.strip()
    return text.partition(",")[2] if text.startswith("data:") else text


# -- options --------------------------------------------------------------------------------------------------

# A1111 option name -> our settings key, for the options both studios have under different names.
OPTION_ALIASES = {
    "samples_format": "output_format",
    "show_progress_every_n_steps": "preview_interval",
    "show_progress_type": "live_preview_method",
    "samples_save": "save_images",
    "grid_save": "make_grid",
}
OUTPUT_FORMATS = FORMAT_ALIASES


def read_options(settings: dict[str, Any], model: Any, outdir: str) -> dict[str, Any]:
    """Our settings under their own names and A1111's, plus the A1111 options clients read (the checkpoint's
    title and hash, the VAE, the clip skip) so ``webuiapi.util_get_current_model`` and friends work."""
    options = dict(settings)
    for wire, ours in OPTION_ALIASES.items():
        options[wire] = settings.get(ours)
    interval = settings.get("preview_interval") or 0
    options.update(
        sd_model_checkpoint=model.title if model is not None else None,
        sd_checkpoint_hash=model.sha256 if model is not None else None,
        sd_vae=settings.get("sd_vae") or AUTOMATIC_VAE,
        CLIP_stop_at_last_layers=settings.get("CLIP_stop_at_last_layers") or 1,
        live_previews_enable=interval > 0,
        outdir_samples=outdir,
        return_grid=settings.get("make_grid", True),
    )
    return options


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, "must be a non-empty string", name)
    return value.strip()


def _integer(low: int, high: int | None = None):
    def clean(value: Any, name: str) -> int:
        number = _as_int(value, name)
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ApiError(422, f"must be {bound}, got {number}", name)
        return number

    return clean


def _number(value: Any, name: str) -> float:
    """A finite number in the range a request accepts (a saved NaN or 1e9 would break every later form)."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(422, "must be a finite number", name)
    if not 0 <= value <= 100:
        raise ApiError(422, f"must be between 0 and 100, got {value:g}", name)
    return float(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ApiError(422, "must be true or false", name)
    return value


def _output_format(value: Any, name: str) -> str:
    fmt = OUTPUT_FORMATS.get(_text(value, name).lower())
    if fmt is None:
        raise ApiError(422, f"must be one of png, jpg, webp; got {value!r}", name)
    return fmt


def _size(value: Any, name: str) -> int:
    number = _integer(0)(value, name)
    if number % 8:
        raise ApiError(422, f"must be a multiple of 8 (or 0 for the model's default), got {number}", name)
    return number


def _preview_kind(value: Any, name: str) -> str:
    """A1111's "Full", "Approx NN", "Approx cheap", "TAESD", or ours; every approximation is the cheap map here."""
    text = _text(value, name).strip()
    if text.lower() == "full":
        return "Full"
    if text.lower() in ("approximate", "approx nn", "approx cheap", "taesd"):
        return "Approximate"
    raise ApiError(422, f"unknown preview type {text!r}; expected Full or Approximate (or A1111's Approx NN, Approx "
                        "cheap, TAESD)", name)


def _preview_interval(value: Any, name: str) -> int:
    number = _as_int(value, name)
    return 1 if number < 0 else number  # A1111's -1 means every step


def _sampler(value: Any, name: str) -> str:
    try:
        return sampler_spec(_text(value, name)).name
    except UnknownSamplerError as error:
        raise ApiError(400, str(error), name) from None


def _schedule(value: Any, name: str) -> str:
    try:
        return schedule_spec(_text(value, name)).label
    except UnknownScheduleError as error:
        raise ApiError(400, str(error), name) from None


# option name (ours or A1111's) -> (settings key, cleaner); checkpoint and VAE are resolved by the caller.
_OPTION_CLEANERS = {
    "CLIP_stop_at_last_layers": ("CLIP_stop_at_last_layers", _integer(1, 12)),
    "sampler": ("sampler", _sampler),
    "scheduler": ("scheduler", _schedule),
    "steps": ("steps", _integer(1, 1000)),
    "cfg_scale": ("cfg_scale", _number),
    "width": ("width", _size),
    "height": ("height", _size),
    "batch_size": ("batch_size", _integer(1, 1000)),
    "n_iter": ("n_iter", _integer(1, 1000)),
    "output_format": ("output_format", _output_format),
    "samples_format": ("output_format", _output_format),
    "preview_interval": ("preview_interval", _integer(0)),
    "show_progress_every_n_steps": ("preview_interval", _preview_interval),
    "live_preview_method": ("live_preview_method", _preview_kind),
    "show_progress_type": ("live_preview_method", _preview_kind),
    "save_images": ("save_images", _flag),
    "samples_save": ("save_images", _flag),
    "make_grid": ("make_grid", _flag),
    "grid_save": ("make_grid", _flag),
}


def clean_options(values: dict[str, Any]) -> dict[str, Any]:
    """Checked settings to store from a ``POST options`` body, naming the option on a bad value. Options this
    studio has no use for are ignored, as A1111 ignores ones it does not know; the checkpoint and the VAE are
    left for the caller, which can look them up."""
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        entry = _OPTION_CLEANERS.get(key)
        if entry is not None:
            target, clean = entry
            cleaned[target] = clean(value, key)
    for key in ("sd_model_checkpoint", "sd_vae"):
        if key in values:
            cleaned[key] = _text(values[key], key)
    return cleaned
