"""A subset of Stability AI's v2beta REST API over the local queue, so scripts written for it run here unchanged.

``stable-image/generate/core``, ``edit/inpaint``, ``edit/outpaint``, ``control/sketch``, ``control/structure``,
``upscale/fast`` and ``upscale/conservative``:
multipart forms in, and out either the image bytes (``accept: image/*``, with ``seed`` and ``finish-reason``
headers) or JSON ``{image, seed, finish_reason}`` for any other accept. With header ``x-async: true`` (or form
field ``async=true``) a route answers ``{id}`` at once and ``GET /v2beta/results/{id}`` gives 202 while it runs,
then the result. Errors are Stability's ``{"name": "bad_request", "errors": ["field: message"]}``. Sfumato also
reads optional ``steps`` and ``cfg_scale``. An image the NSFW filter hid (the key's rule or the studio's default,
``modules.safety``) comes back blurred or black with ``finish-reason: CONTENT_FILTERED``, as Stability answers.
"""

from __future__ import annotations

import base64
import math
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from PIL import Image, ImageFilter

from app.api.errors import ApiError
from app.api.requests_common import (
    ENDED_STATES,
    FormReader,
    ServicesDep,
    artifact_image,
    dialect_route,
    encode_image,
    finished_result,
    owner_of,
    read_form,
    submit_checked,
    visible_to,
    wait_for_job,
)
from modules.errors import RequestError
from modules.formats import IMAGE_FORMATS
from modules.image.masks import carries_alpha, mask_from_transparency
from modules.image.request import GenerationRequest, Outpaint, SdUpscale
from modules.jobs.queue import Job
from modules.upscaling.request import UpscaleRequest

if TYPE_CHECKING:
    from modules.runtime.services import Services

ASPECT_RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
OUTPUT_FORMATS = IMAGE_FORMATS
MAX_SEED = 4294967294
MAX_OUTPAINT = 2000
FINISH_REASON = "SUCCESS"
CONTENT_FILTERED = "CONTENT_FILTERED"  # the NSFW filter (``safety``) blurred or blacked out the image
STYLE_PRESETS = {
    "3d-model": "3d model render, studio lighting, highly detailed",
    "analog-film": "analog film photograph, film grain, faded colours",
    "anime": "anime style illustration, cel shading, vibrant",
    "cinematic": "cinematic film still, dramatic lighting, shallow depth of field",
    "comic-book": "comic book art, bold ink outlines, halftone shading",
    "digital-art": "digital painting, concept art, detailed",
    "enhance": "highly detailed, sharp focus, rich colour",
    "fantasy-art": "fantasy art, magical atmosphere, epic illustration",
    "isometric": "isometric view, clean geometry, miniature diorama",
    "line-art": "line art, clean black ink lines on white, minimal shading",
    "low-poly": "low-poly 3d render, flat shaded facets",
    "modeling-compound": "clay sculpture, plasticine, handmade claymation look",
    "neon-punk": "neon punk, glowing neon lights, cyberpunk colours",
    "origami": "origami, folded paper craft, crisp paper edges",
    "photographic": "photograph, 35mm lens, natural light, realistic",
    "pixel-art": "pixel art, 16-bit retro game sprite",
    "tile-texture": "seamless tileable texture, flat top-down view",
}
ERROR_NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
               413: "payload_too_large", 422: "invalid_parameters", 429: "rate_limit_exceeded",
               501: "not_implemented"}


def stability_error(status: int, message: str, field: str | None) -> JSONResponse:
    """Stability's error body: an id, a name for the status, and messages that start with the field."""
    name = ERROR_NAMES.get(status, "bad_request" if status < 500 else "internal_error")
    text = f"{field}: {message}" if field else message
    return JSONResponse({"id": uuid.uuid4().hex, "name": name, "errors": [text]}, status_code=status)


_COMMON_FIELDS = {"init_image": "image", "task": "image", "batch_size": "body", "outpaint.left": "left",
                  "outpaint.right": "right", "outpaint.top": "up", "outpaint.bottom": "down", "outpaint": "left",
                  "denoising_strength": "creativity", "mask_blur": "grow_mask"}
router = APIRouter(prefix="/v2beta", tags=["stability"], route_class=dialect_route(stability_error, _COMMON_FIELDS))
# The size of a generation comes from aspect_ratio, of an edit from its image: errors name what the client sent.
_generate = APIRouter(route_class=dialect_route(stability_error, {**_COMMON_FIELDS, "width": "aspect_ratio",
                                                                  "height": "aspect_ratio"}))
_edit = APIRouter(route_class=dialect_route(stability_error, {**_COMMON_FIELDS, "width": "image",
                                                              "height": "image"}))
_upscale = APIRouter(route_class=dialect_route(stability_error, {
    "images": "image", "upscaling_resize": "image", "upscaler": "image", "init_image": "image",
    "denoising_strength": "creativity", "sd_upscale.scale": "image", "width": "image", "height": "image"}))
FAST_MIN_SIDE, FAST_MAX_SIDE = 32, 1536
FAST_MIN_PIXELS, FAST_MAX_PIXELS = 1024, 1_048_576
CONSERVATIVE_MIN_SIDE = 64
CONSERVATIVE_PIXELS = 4 * 1024 * 1024  # Stability's conservative upscaler aims at about 4 megapixels


@_generate.post("/stable-image/generate/core")
async def generate_core(http_request: Request, services: ServicesDep) -> Response:
    """Text to image at an aspect ratio over the model's own pixel area, optionally in a style preset."""
    form = FormReader(await read_form(http_request))
    prompt = styled_prompt(form.text("prompt", required=True), form.choice("style_preset", tuple(STYLE_PRESETS),
                                                                           None))
    ratio = form.choice("aspect_ratio", ASPECT_RATIOS, "1:1")
    width, height = aspect_size(ratio, model_side(services))
    request = GenerationRequest(task="txt2img", prompt=prompt, width=width, height=height, make_grid=False,
                                **_shared_fields(form))
    return await _answer(services, http_request, form, request)


@_edit.post("/stable-image/edit/inpaint")
async def edit_inpaint(http_request: Request, services: ServicesDep) -> Response:
    """Repaint where the mask is white (or, without a mask, where the image is transparent)."""
    form = FormReader(await read_form(http_request))
    image = await form.image("image")
    mask = await form.image("mask", required=False)
    prompt = styled_prompt(form.text("prompt", required=True), form.choice("style_preset", tuple(STYLE_PRESETS),
                                                                           None))
    grow = form.number("grow_mask", 5, 0, 20, integer=True)
    request = GenerationRequest(task="inpaint", prompt=prompt, init_image=image.convert("RGB"),
                                mask=inpaint_mask(image, mask, grow), mask_blur=grow, make_grid=False,
                                **_shared_fields(form))
    return await _answer(services, http_request, form, request)


@_edit.post("/stable-image/edit/outpaint")
async def edit_outpaint(http_request: Request, services: ServicesDep) -> Response:
    """Extend the image by ``left``/``right``/``up``/``down`` pixels; ``creativity`` sets how freely."""
    form = FormReader(await read_form(http_request))
    image = await form.image("image")
    sides = {name: form.number(name, 0, 0, MAX_OUTPAINT, integer=True) for name in ("left", "right", "up", "down")}
    if not any(sides.values()):
        raise ApiError(400, "at least one of left, right, up or down must be above 0", "left")
    creativity = form.number("creativity", 0.5, 0.0, 1.0)
    prompt = styled_prompt(form.text("prompt", "") or "", form.choice("style_preset", tuple(STYLE_PRESETS), None))
    request = GenerationRequest(task="outpaint", prompt=prompt, init_image=image.convert("RGB"),
                                outpaint=Outpaint(sides["left"], sides["right"], sides["up"], sides["down"]),
                                denoising_strength=0.75 + 0.25 * creativity, make_grid=False, **_shared_fields(form))
    return await _answer(services, http_request, form, request)


@_upscale.post("/stable-image/upscale/fast")
async def upscale_fast(http_request: Request, services: ServicesDep) -> Response:
    """4x, as Stability's fast upscaler: with the best 4x model installed (the embedded one out of the box)."""
    form = FormReader(await read_form(http_request))
    image = await form.image("image")
    side_ok = all(FAST_MIN_SIDE <= side <= FAST_MAX_SIDE for side in image.size)
    if not side_ok or not FAST_MIN_PIXELS <= image.width * image.height <= FAST_MAX_PIXELS:
        raise ApiError(400, f"the image is {image.width}x{image.height}; fast upscale takes sides of "
                       f"{FAST_MIN_SIDE} to {FAST_MAX_SIDE} px and {FAST_MIN_PIXELS:,} to {FAST_MAX_PIXELS:,} pixels",
                       "image")
    request = UpscaleRequest(images=(image,), upscaler=fast_upscaler(services), scale=4, save_images=False,
                             output_format=form.choice("output_format", OUTPUT_FORMATS, "png"))
    return await _answer(services, http_request, form, request)


@router.get("/results/{job_id}")
async def results(job_id: str, http_request: Request, services: ServicesDep) -> Response:
    """202 ``{id, status: "in-progress"}`` while the job runs; then the result, following the accept header."""
    job = services.queue.get(job_id)
    if job is None or job.source != "stability" or not visible_to(job, owner_of(http_request)):
        raise ApiError(404, f"no generation with id {job_id!r}", "id")
    if job.state not in ENDED_STATES or not job.done_event.is_set():
        return JSONResponse({"id": job.id, "status": "in-progress"}, status_code=202)
    return result_response(job, http_request)


@_upscale.post("/stable-image/upscale/conservative")
async def upscale_conservative(http_request: Request, services: ServicesDep) -> Response:
    """Up to 4x (about 4 megapixels at most) with the default checkpoint redrawing the enlarged picture in tiles at
    a low denoise (``creativity``, 0.2 to 0.5): A1111's SD upscale."""
    form = FormReader(await read_form(http_request))
    image = await form.image("image")
    if min(image.size) < CONSERVATIVE_MIN_SIDE:
        raise ApiError(400, f"the image is {image.width}x{image.height}; conservative upscale needs at least "
                       f"{CONSERVATIVE_MIN_SIDE} px a side", "image")
    prompt = form.text("prompt", required=True)
    creativity = form.number("creativity", 0.35, 0.2, 0.5)
    scale = max(1.0, min(4.0, math.sqrt(CONSERVATIVE_PIXELS / (image.width * image.height))))
    fields = _shared_fields(form)
    request = GenerationRequest(task="img2img", prompt=prompt, init_image=image.convert("RGB"),
                                denoising_strength=creativity, make_grid=False,
                                sd_upscale=SdUpscale(scale=round(scale, 3), upscaler=fast_upscaler(services)),
                                **fields)
    return await _answer(services, http_request, form, request)


_control = APIRouter(route_class=dialect_route(stability_error, {
    **_COMMON_FIELDS, "width": "image", "height": "image", "controlnet": "image", "controlnet[0].image": "image",
    "controlnet[0].weight": "control_strength", "controlnet[0].model": "image", "controlnet[0].module": "image"}))
# Which installed ControlNet each control route prefers, by words in its name (the first installed one otherwise).
SKETCH_WORDS = ("scribble", "sketch", "lineart", "line")
STRUCTURE_WORDS = ("canny", "edge", "structure", "lineart", "mlsd", "scribble")


@_control.post("/stable-image/control/sketch")
async def control_sketch(http_request: Request, services: ServicesDep) -> Response:
    """A picture following a sketch's lines (dark lines on a light page, or light on dark): the sketch is the
    control image of a scribble-style ControlNet, ``control_strength`` its weight."""
    form = FormReader(await read_form(http_request))
    image = await form.image("image")
    sketch = image.convert("L")
    light_page = sum(sketch.resize((32, 32)).getdata()) / 1024 > 127
    module = "invert" if light_page else "none"  # a ControlNet reads light lines on black
    return await _controlled(services, http_request, form, image, module, SKETCH_WORDS)


@_control.post("/stable-image/control/structure")
async def control_structure(http_request: Request, services: ServicesDep) -> Response:
    """A new picture keeping the structure of the input image: its edges (canny) steer an edge-style ControlNet."""
    form = FormReader(await read_form(http_request))
    image = await form.image("image")
    return await _controlled(services, http_request, form, image, "canny", STRUCTURE_WORDS)


async def _controlled(services: Services, http_request: Request, form: FormReader, image: Image.Image, module: str,
                      words: tuple[str, ...]) -> Response:
    from modules.controlnet.units import ControlNetUnit

    prompt = styled_prompt(form.text("prompt", required=True), form.choice("style_preset", tuple(STYLE_PRESETS),
                                                                           None))
    strength = form.number("control_strength", 0.7, 0.0, 1.0)
    width, height = aspect_size(f"{image.width}:{image.height}", model_side(services))
    unit = ControlNetUnit(model=control_model(services, words), image=image.convert("RGB"), module=module,
                          weight=strength, resize_mode="Just Resize")
    request = GenerationRequest(task="txt2img", prompt=prompt, width=width, height=height, make_grid=False,
                                controlnet=(unit,), **_shared_fields(form))
    return await _answer(services, http_request, form, request)


def control_model(services: Services, words: tuple[str, ...]) -> str:
    """The installed ControlNet whose name has the earliest of ``words`` (the embedded one out of the box), among
    those made for the default checkpoint's family (Flux.1, SD3, SD) when any is."""
    from modules.controlnet.transformer_controlnets import family_refusal

    models = services.engine.controlnets.list()
    if not models:
        raise ApiError(501, f"no ControlNet model is installed: put one in {services.engine.controlnets.root}",
                       "image")
    try:
        family = services.engine.resolve_model(services.default_model()).family
    except RequestError:  # no checkpoint: the request itself says so
        family = None
    models = [info for info in models if family_refusal(info, family) is None] or models
    for word in words:
        for info in models:
            if word in info.name.lower():
                return info.title
    return models[0].title


router.include_router(_generate)
router.include_router(_edit)
router.include_router(_control)
router.include_router(_upscale)


def fast_upscaler(services: Services) -> str:
    """The first 4x model (the embedded one when the user has none of their own), else Lanczos."""
    models = [info for info in services.engine.upscalers.list() if info.path is not None]
    fours = [info for info in models if info.scale == 4]
    own = [info for info in fours if not info.name.startswith("sfumato-")]
    chosen = (own or fours or [None])[0]
    return chosen.name if chosen is not None else "Lanczos"


# -- translation -------------------------------------------------------------------------------------------------
def styled_prompt(prompt: str | None, preset: str | None) -> str:
    """A style preset appends its phrase to the prompt, as a saved style without ``{prompt}`` does."""
    prompt = (prompt or "").strip()
    if not preset:
        return prompt
    return ", ".join(part for part in (prompt, STYLE_PRESETS[preset]) if part)


def aspect_size(ratio: str, side: int) -> tuple[int, int]:
    """Width and height with the given ratio and about ``side``x``side`` pixels, in multiples of 8."""
    across, down = (int(part) for part in ratio.split(":"))
    width = math.sqrt(side * side * across / down)
    height = side * side / width
    return max(8, round(width / 8) * 8), max(8, round(height / 8) * 8)


def model_side(services: Services) -> int:
    """The default checkpoint's own image side (512 for SD 1.x, 1024 for SDXL), without loading it."""
    from modules.models.checkpoints import default_size

    info = services.engine.resolve_model(services.default_model())
    try:
        return default_size(info.family or "sd1", model_path=info.path)
    except (ValueError, OSError, KeyError):
        return 512


def inpaint_mask(image: Image.Image, mask: Image.Image | None, grow: int) -> Image.Image:
    """Stability's mask (white = repaint; resized to the image if it differs, as Stability does), or the image's
    transparency; grown outward by ``grow`` pixels."""
    if mask is not None:
        grey = mask.convert("L")
        if grey.size != image.size:
            grey = grey.resize(image.size, Image.Resampling.BILINEAR)
    elif carries_alpha(image):
        grey = mask_from_transparency(image)
    else:
        raise ApiError(400, "give a mask, or an image whose transparent pixels mark the area to repaint", "mask")
    binary = grey.point(lambda value: 255 if value >= 128 else 0)
    if binary.getbbox() is None:
        raise ApiError(400, "the mask is empty: nothing to repaint", "mask")
    return binary.filter(ImageFilter.MaxFilter(2 * grow + 1)) if grow else binary


def _shared_fields(form: FormReader) -> dict[str, Any]:
    """negative_prompt, seed (0 = random), output_format, and Sfumato's optional steps and cfg_scale."""
    seed = form.number("seed", 0, 0, MAX_SEED, integer=True)
    fields: dict[str, Any] = {"negative_prompt": form.text("negative_prompt", "") or "", "seed": seed or -1,
                              "output_format": form.choice("output_format", OUTPUT_FORMATS, "png")}
    steps = form.number("steps", None, 1, 10_000, integer=True)
    cfg = form.number("cfg_scale", None, 0, 1_000)
    if steps is not None:
        fields["steps"] = steps
    if cfg is not None:
        fields["cfg_scale"] = cfg
    return fields


# -- answering ---------------------------------------------------------------------------------------------------
def wants_async(http_request: Request, form: FormReader) -> bool:
    header = http_request.headers.get("x-async", "").strip().lower()
    return header in ("1", "true", "yes") or form.flag("async")


def wants_image(http_request: Request) -> bool:
    """``accept: image/*`` (or any image type) means bytes; anything else, JSON."""
    accept = http_request.headers.get("accept", "").lower()
    return any(part.strip().startswith("image/") for part in accept.split(","))


async def _answer(services: Services, http_request: Request, form: FormReader,
                  request: GenerationRequest | UpscaleRequest) -> Response:
    job = await submit_checked(services, request, source="stability", owner=owner_of(http_request))
    if wants_async(http_request, form):
        return JSONResponse({"id": job.id})
    await wait_for_job(services.queue, job, http_request=http_request)  # a client that hung up cancels its job
    return result_response(job, http_request)


def result_response(job: Job, http_request: Request) -> Response:
    """The first image as bytes with ``seed``/``finish-reason`` headers, or as ``{image, seed, finish_reason}``
    (an upscale has no seed of its own: 0, as Stability answers for its upscalers)."""
    result = finished_result(job)
    artifact = next(item for item in result.artifacts if item.type == "image" and not item.grid)
    seed = int(artifact.parameters.get("seed", 0) or 0)
    finish_reason = CONTENT_FILTERED if artifact.parameters.get("nsfw") else FINISH_REASON
    fmt = job.request.output_format
    data = encode_image(artifact_image(artifact), fmt, artifact.infotext)
    if wants_image(http_request):
        return Response(data, media_type=f"image/{fmt}", headers={"seed": str(seed), "finish-reason": finish_reason})
    return JSONResponse({"image": base64.b64encode(data).decode("ascii"), "seed": seed,
                         "finish_reason": finish_reason})
