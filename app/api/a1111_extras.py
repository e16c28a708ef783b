"""A1111's Extras in its own dialect: ``/sdapi/v1/extra-single-image``, ``extra-batch-images``, ``upscalers`` and
``realesrgan-models``, so ``webuiapi`` and A1111 scripts upscale through Sfumato unmodified.

Each call becomes one job of the upscale kind, queued like any other (progress, interrupt, history, quotas), and
the route waits for it as A1111 clients expect. As in A1111's API, results are returned, not saved.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.context import get_owner
from app.api.errors import ApiError
from app.api.images import decode_image, encode_png_base64
from app.api.requests_common import ServicesDep, wait_for_job
from modules.errors import RequestError
from modules.jobs.queue import JobCancelled
from modules.runtime.services import Services
from modules.upscaling.request import UpscaleRequest
from modules.upscaling.results import UpscaleResult

router = APIRouter(prefix="/sdapi/v1", tags=["A1111"])
Owner = Annotated[str | None, Depends(get_owner)]

# Our field names -> A1111's, so a 4xx names the field the client sent.
_WIRE_NAMES = {"upscaler": "upscaler_1", "upscaler_2": "upscaler_2",
               "upscaler_2_visibility": "extras_upscaler_2_visibility", "image": "image", "scale": "upscaling_resize"}


class ExtrasBody(BaseModel):
    """A1111's ``ExtrasBaseRequest``. Face restoration (GFPGAN, CodeFormer) is not part of Sfumato: a visibility
    above 0 is refused rather than silently ignored."""

    resize_mode: int = Field(0, description="0: multiply the size by upscaling_resize; 1: make it "
                                            "upscaling_resize_w x upscaling_resize_h")
    show_extras_results: bool = True
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str | None = "None"
    upscaler_2: str | None = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False


class ExtrasSingleImageBody(ExtrasBody):
    image: str = Field("", description="the image, base64 (raw or a data: URL)")


class ImageItem(BaseModel):
    data: str
    name: str = ""


class ExtrasBatchImagesBody(ExtrasBody):
    imageList: list[ImageItem] = Field(default_factory=list, description="the images, each base64 with a name")  # noqa: N815


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: str


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


@router.post("/extra-single-image", response_model=ExtrasSingleImageResponse)
async def extra_single_image(body: ExtrasSingleImageBody, http_request: Request, response: Response,
                             services: ServicesDep, owner: Owner) -> dict[str, Any]:
    image = await run_in_threadpool(decode_image, body.image, "image")
    result = await _run(services, _request(body, (image,), ()), http_request, response, owner)
    if not result.images:
        raise ApiError(409, "the upscale was interrupted before it finished")
    first = result.images[0]
    return {"html_info": _html(first.infotext), "image": await run_in_threadpool(
        encode_png_base64, first.image, first.infotext)}


@router.post("/extra-batch-images", response_model=ExtrasBatchImagesResponse)
async def extra_batch_images(body: ExtrasBatchImagesBody, http_request: Request, response: Response,
                             services: ServicesDep, owner: Owner) -> dict[str, Any]:
    if not body.imageList:
        raise ApiError(422, "give at least one image", "imageList")

    def decode_all() -> tuple:
        return tuple(decode_image(item.data, f"imageList.{index}.data") for index, item in enumerate(body.imageList))

    images = await run_in_threadpool(decode_all)
    names = tuple(item.name or f"image{index + 1:05}" for index, item in enumerate(body.imageList))
    result = await _run(services, _request(body, images, names), http_request, response, owner)
    encoded = await run_in_threadpool(lambda: [encode_png_base64(item.image, item.infotext) for item in result.images])
    return {"html_info": _html(result.images[0].infotext if result.images else ""), "images": encoded}


@router.get("/upscalers")
def upscalers(services: ServicesDep) -> list[dict[str, Any]]:
    """Every upscaler the Extras and hires fix can use: the built-ins, then the model files with their scale."""
    return [{"name": info.name, "model_name": info.folder if info.path else None,
             "model_path": str(info.path) if info.path else None, "model_url": None,
             "scale": info.scale if info.path else 4}
            for info in services.engine.upscalers.list()]


@router.get("/realesrgan-models")
def realesrgan_models(services: ServicesDep) -> list[dict[str, Any]]:
    """The Real-ESRGAN-family model files (A1111 lists those of its RealESRGAN upscaler)."""
    return [{"name": info.name, "path": str(info.path), "scale": info.scale}
            for info in services.engine.upscalers.list()
            if info.path is not None and (info.folder == "RealESRGAN" or "realesr" in info.name.lower())]


def _request(body: ExtrasBody, images: tuple, names: tuple) -> UpscaleRequest:
    for name in ("gfpgan_visibility", "codeformer_visibility"):
        if getattr(body, name):
            raise ApiError(422, "face restoration is not available in Sfumato; send 0", name)
    return UpscaleRequest(
        images=images, names=names, upscaler=body.upscaler_1 or "None", upscaler_2=body.upscaler_2 or "None",
        upscaler_2_visibility=body.extras_upscaler_2_visibility, resize_mode=body.resize_mode,
        scale=body.upscaling_resize, width=body.upscaling_resize_w, height=body.upscaling_resize_h,
        crop=body.upscaling_crop, save_images=False,
    )


async def _run(services: Services, request: UpscaleRequest, http_request: Request, response: Response,
               owner: str | None) -> UpscaleResult:
    try:
        job = await run_in_threadpool(lambda: services.queue.submit(request, source="a1111", owner=owner))
    except RequestError as error:
        raise _wire_error(error) from None
    response.headers["X-Job-Id"] = job.id
    await wait_for_job(services.queue, job, http_request=http_request)  # a client that hung up cancels its job
    try:
        result = services.queue.wait(job, timeout=0)
    except RequestError as error:
        raise _wire_error(error) from None
    except JobCancelled:
        raise ApiError(409, "the job was cancelled before it ran") from None
    except RuntimeError as error:
        raise ApiError(500, f"upscaling failed: {error}") from None
    assert isinstance(result, UpscaleResult)
    return result


def _wire_error(error: RequestError) -> ApiError:
    name = _WIRE_NAMES.get(error.field, error.field)
    return ApiError(400 if error.field in ("upscaler", "upscaler_2") and "unknown" in error.message else 422,
                    error.message, name)


def _html(infotext: str) -> str:
    return f"<p>{html.escape(infotext)}</p>" if infotext else ""
