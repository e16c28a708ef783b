"""The sd-webui-controlnet extension's own routes (``/controlnet/*``), spoken as the extension does, so
``webuiapi.controlnet_detect`` and scripts written for the extension work unmodified.

``detect`` runs a preprocessor inline, in FastAPI's worker threads, as the extension runs it inside its route:
the model-free preprocessors take milliseconds of CPU and a depth estimate about a second (on the CPU, with a
small model from ``models/ControlNet/annotators/``), and a job in the queue would wait behind a generation for
work that small. It stays bounded: at most ``MAX_DETECT_IMAGES`` images a call, each within the decoded-image
limit, at a resolution whose control image fits ``MAX_OUTPUT_PIXELS``. ``/controlnet/model_list`` belongs with the
ControlNet model registry, not here.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from app.api.errors import ApiError
from app.api.images import decode_image, encode_png_base64
from app.api.requests_common import ServicesDep
from modules.controlnet import preprocessors
from modules.controlnet.preprocessors import find
from modules.errors import RequestError, check_range

router = APIRouter(prefix="/controlnet", tags=["ControlNet"])

API_VERSION = 2  # the extension's external_code API version that clients check
MAX_DETECT_IMAGES = 16  # images preprocessed by one call (the extension sets none; a bound keeps a call short)
# Our field names -> the extension's, so an error names what the client sent.
_WIRE_NAMES = {"module": "controlnet_module", "processor_res": "controlnet_processor_res",
               "threshold_a": "controlnet_threshold_a", "threshold_b": "controlnet_threshold_b"}


class VersionResponse(BaseModel):
    version: int


class ModuleListResponse(BaseModel):
    module_list: list[str]
    module_detail: dict[str, dict[str, Any]]


class DetectBody(BaseModel):
    """The extension's ``/controlnet/detect`` body. ``webuiapi`` sends the images as ``controlnet_images``, the
    extension reads ``controlnet_input_images``: both are accepted. Unknown fields are ignored and a null is the
    default, as in the A1111 routes; -1 for the resolution or a threshold means the preprocessor's default."""

    model_config = ConfigDict(extra="ignore")

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list, description="base64 images (raw or data URLs)")
    controlnet_images: list[str] = Field(default_factory=list, description="the same, as webuiapi names it")
    controlnet_processor_res: int = Field(-1, description="the shorter side of the control image; -1: 512")
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    controlnet_masks: list[str] = Field(default_factory=list, description="ignored: no preprocessor here uses one")
    low_vram: bool = False

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class DetectResponse(BaseModel):
    images: list[str]
    info: str


@router.get("/version", response_model=VersionResponse)
def version() -> dict[str, int]:
    """The extension's API version, which clients read to decide which unit fields they may send."""
    return {"version": API_VERSION}


@router.get("/module_list", response_model=ModuleListResponse)
def module_list(services: ServicesDep, alias_names: bool = False) -> dict[str, Any]:
    """Every preprocessor with its sliders, and whether it runs with the annotator models this studio has;
    ``alias_names=true`` answers the extension's UI labels instead."""
    return {"module_list": preprocessors.module_names(alias_names),
            "module_detail": preprocessors.module_detail(alias_names, services.config.models_dir)}


@router.post("/detect", response_model=DetectResponse)
async def detect(body: DetectBody, services: ServicesDep) -> dict[str, Any]:
    """Run a preprocessor on each image and answer the control images as base64 PNGs."""
    field, images = ("controlnet_input_images", body.controlnet_input_images)
    if not images and body.controlnet_images:
        field, images = "controlnet_images", body.controlnet_images
    try:
        preprocessor = find(body.controlnet_module, "controlnet_module")
    except RequestError as error:
        raise ApiError(400, error.message, error.field) from None
    models_dir = services.config.models_dir
    if not preprocessor.available_in(models_dir):
        raise _wire_error(preprocessor.needs_model_error("controlnet_module", models_dir))
    if not images:
        raise ApiError(422, "give at least one image", field)
    if len(images) > MAX_DETECT_IMAGES:
        raise ApiError(422, f"at most {MAX_DETECT_IMAGES} images per call, got {len(images)}", field)

    resolution = body.controlnet_processor_res
    resolution = preprocessors.DEFAULT_RESOLUTION if resolution < 0 else resolution
    if preprocessor.uses_resolution:
        check_range("controlnet_processor_res", resolution, preprocessors.MIN_RESOLUTION,
                    preprocessors.MAX_RESOLUTION)
    max_pixels = services.config.limits.max_upscale_pixels

    def work() -> list[str]:
        answers = []
        for index, data in enumerate(images):
            image = decode_image(data, f"{field}.{index}")
            if image.width * image.height > max_pixels:
                raise ApiError(413, f"{image.width}x{image.height} is over this studio's limit of {max_pixels:,} "
                                    "pixels for an input image", f"{field}.{index}")
            try:
                control = preprocessor.run(image, resolution, body.controlnet_threshold_a,
                                           body.controlnet_threshold_b, seed=index,  # shuffle: one seed per image
                                           models_dir=models_dir)
            except RequestError as error:
                raise _wire_error(error) from None
            answers.append(encode_png_base64(control))
        return answers

    return {"images": await run_in_threadpool(work), "info": "Success"}


def _wire_error(error: RequestError) -> ApiError:
    """A value the preprocessor refused (a resolution out of range, a module whose model is missing): 422 naming
    the extension's field."""
    return ApiError(422, error.message, _WIRE_NAMES.get(error.field, error.field))
