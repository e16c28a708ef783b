"""OpenAI's images API (``/v1/images/generations`` and ``/v1/images/edits``) over the local queue.

So the official ``openai`` client, and every tool built on it, works with ``base_url`` pointed here. Model names of
OpenAI's own ("dall-e-2", "gpt-image-1") mean the studio's default checkpoint; a local checkpoint's name picks it.
Fields OpenAI's models have and Sfumato has not (quality, style, background, user, ...) are ignored, as unknown
fields are. Errors come back in OpenAI's shape so the client raises ``BadRequestError`` naming the parameter.
``steps``, ``cfg_scale``, ``negative_prompt``, ``seed`` and ``sampler_name`` may be added (``extra_body``).

NSFW filtering (a key's rule, or the studio's default): OpenAI refuses a request its moderation flags, before
generating. Here the check runs on the finished image, so the image comes back as the filter left it (blurred or
black) rather than as an error: the job has run and counted against the key's quota, and a batch keeps its clean
images. Its infotext says ``NSFW: filtered (...)``; the native API's job view lists which images were hidden.
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict

from app.api.errors import ApiError
from app.api.native import image_url
from app.api.requests_common import (
    FormReader,
    ServicesDep,
    dialect_route,
    encode_image,
    finished_result,
    owner_of,
    parse_size,
    read_form,
    read_image_value,
    submit_checked,
    wait_for_job,
)
from modules.formats import IMAGE_FORMATS
from modules.image.masks import carries_alpha, has_transparency, mask_from_transparency
from modules.image.request import GenerationRequest
from modules.jobs.queue import Job

if TYPE_CHECKING:
    from modules.runtime.services import Services

ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 409: "conflict_error",
               413: "invalid_request_error", 429: "rate_limit_error"}
FIELD_NAMES = {"batch_size": "n", "width": "size", "height": "size", "init_image": "image", "task": "image",
               "n_iter": "n"}


def openai_error(status: int, message: str, param: str | None) -> JSONResponse:
    """``{"error": {message, type, param, code}}``: what the openai client reads into its exception."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    text = f"Invalid value for '{param}': {message}" if param else message
    if message == "is required" and param:
        text = f"Missing required parameter: '{param}'."
    return JSONResponse({"error": {"message": text, "type": kind, "param": param, "code": None}}, status_code=status)


router = APIRouter(prefix="/v1", tags=["openai"], route_class=dialect_route(openai_error, FIELD_NAMES))


class GenerationsBody(BaseModel):
    """The fields Sfumato uses; the rest of what the client sends is ignored."""

    model_config = ConfigDict(extra="ignore")
    prompt: str
    model: str | None = None
    n: int | None = None
    size: str | None = None
    response_format: Literal["b64_json", "url"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    stream: bool | None = None
    # Sfumato's own additions, for clients that pass extra_body
    negative_prompt: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    sampler_name: str | None = None


@router.post("/images/generations")
async def generations(body: GenerationsBody, http_request: Request, services: ServicesDep) -> JSONResponse:
    """Text to image: ``n`` images of ``size`` for ``prompt``, as base64 or URLs."""
    if body.stream:
        raise ApiError(400, "streaming is not supported; leave stream unset", "stream")
    width, height = parse_size(body.size, "size")
    extra = {key: value for key, value in {"negative_prompt": body.negative_prompt, "steps": body.steps,
             "cfg_scale": body.cfg_scale, "seed": body.seed, "sampler_name": body.sampler_name}.items()
             if value is not None}
    request = GenerationRequest(task="txt2img", prompt=body.prompt, model=local_model(services, body.model),
                                batch_size=_count(body.n), width=width, height=height,
                                output_format=body.output_format or "png", make_grid=False, **extra)
    return await _run(services, http_request, request, body.response_format or "b64_json")


@router.post("/images/edits")
async def edits(http_request: Request, services: ServicesDep) -> JSONResponse:
    """Inpaint where the mask is transparent (or, without a mask, where the image is); no transparency at all
    means the whole image is reworked (img2img)."""
    form = FormReader(await read_form(http_request))
    image = await _edit_image(form)
    mask = await form.image("mask", required=False)
    prompt = form.text("prompt", required=True)
    width, height = parse_size(form.text("size"), "size")
    fmt = form.choice("output_format", IMAGE_FORMATS, "png")
    extra = {key: value for key, value in {
        "steps": form.number("steps", None, 1, 10_000, integer=True),
        "cfg_scale": form.number("cfg_scale", None, 0, 1_000),
        "seed": form.number("seed", None, -1, 2**32 - 1, integer=True),
        "negative_prompt": form.text("negative_prompt"),
        "sampler_name": form.text("sampler_name")}.items() if value is not None}
    if mask is not None:
        task, mask = "inpaint", openai_mask(mask, image)
    else:
        task = "inpaint" if has_transparency(image) else "img2img"
    request = GenerationRequest(task=task, prompt=prompt, init_image=image, mask=mask, width=width, height=height,
                                model=local_model(services, form.text("model")), output_format=fmt,
                                batch_size=_count(form.number("n", 1, 1, 10_000, integer=True)), make_grid=False,
                                **extra)
    response_format = form.choice("response_format", ("b64_json", "url"), "b64_json")
    return await _run(services, http_request, request, response_format)


# -- translation -------------------------------------------------------------------------------------------------
def local_model(services: Services, name: str | None) -> str | None:
    """A name that resolves to a local checkpoint picks it; anything else ("dall-e-3", "sfumato") is the default."""
    from modules.models.registry import UnknownModelError

    if not name or not name.strip():
        return None
    try:
        services.engine.registry.find(name)
    except UnknownModelError:
        return None
    return name


def _count(n: int | None) -> int:
    if n is not None and n < 1:
        raise ApiError(400, f"must be at least 1, got {n}", "n")
    return n or 1


async def _edit_image(form: FormReader) -> Image.Image:
    """``image`` or, as the client sends a list, ``image[]``; only the first image is edited."""
    for name in ("image", "image[]"):
        values = form.form.getlist(name)
        if values:
            return await read_image_value(values[0], "image")
    raise ApiError(400, "is required", "image")


def openai_mask(mask: Image.Image, image: Image.Image) -> Image.Image:
    """OpenAI's mask (transparent = edit) -> Sfumato's (white = repaint). Its size must match the image's."""
    if not carries_alpha(mask):
        raise ApiError(400, "the mask must be a PNG with an alpha channel; transparent pixels mark the area to edit",
                       "mask")
    if mask.size != image.size:
        raise ApiError(400, f"the mask is {mask.width}x{mask.height} but the image is {image.width}x{image.height}; "
                       "they must be the same size", "mask")
    return mask_from_transparency(mask)


# -- running and answering ---------------------------------------------------------------------------------------
async def _run(services: Services, http_request: Request, request: GenerationRequest, response_format: str
               ) -> JSONResponse:
    job = await submit_checked(services, request, source="openai", owner=owner_of(http_request))
    await wait_for_job(services.queue, job, http_request=http_request)  # a hung-up client cancels it
    return JSONResponse(images_response(job, http_request, response_format))


def images_response(job: Job, http_request: Request, response_format: str) -> dict[str, Any]:
    """``{"created", "data": [{"b64_json" | "url", "revised_prompt"}], ...}`` as ``ImagesResponse`` reads it."""
    result = finished_result(job)
    fmt = job.request.output_format
    data = []
    for index, item in enumerate(result.images):
        entry: dict[str, Any] = {"revised_prompt": item.prompt}
        if response_format == "url":
            entry["url"] = image_url(http_request, job.id, index)
        else:
            entry["b64_json"] = base64.b64encode(encode_image(item.image, fmt, item.infotext)).decode("ascii")
        data.append(entry)
    width, height = result.images[0].image.size
    return {"created": int(job.finished or time.time()), "data": data, "output_format": fmt,
            "size": f"{width}x{height}"}
