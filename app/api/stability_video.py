"""Stability AI's image-to-video routes over the local queue: ``POST /v2beta/image-to-video`` (multipart
``image``, ``seed``, ``cfg_scale``, ``motion_bucket_id``) answers ``{"id"}`` at once, and
``GET /v2beta/image-to-video/result/{id}`` answers 202 ``{"id", "status": "in-progress"}`` while the clip is made,
then the MP4 (``finish-reason`` and ``seed`` headers), or ``{"video": base64, "finish_reason", "seed"}`` for
``accept: application/json``. The clip is made by the studio's first image-to-video model (SVD, Wan
image-to-video) at the image's size; errors are Stability's ``{"name", "errors": ["field: message"]}``. Sfumato
also reads optional ``steps`` and ``frames``.
"""

from __future__ import annotations

import base64
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.errors import ApiError
from app.api.requests_common import (
    ENDED_STATES,
    FormReader,
    ServicesDep,
    dialect_route,
    owner_of,
    read_form,
    submit_checked,
    visible_to,
)
from app.api.stability import FINISH_REASON, MAX_SEED, stability_error
from modules.errors import RequestError
from modules.video.request import VideoRequest

SOURCE = "stability-video"
SIZE_MULTIPLE = 16  # every video family takes sides that are multiples of 16
router = APIRouter(prefix="/v2beta", tags=["stability"], route_class=dialect_route(stability_error, {
    "init_image": "image", "width": "image", "height": "image", "noise_aug_strength": "image",
    "model": "image"}))


@router.post("/image-to-video")
async def image_to_video(http_request: Request, services: ServicesDep) -> JSONResponse:
    """Queue a clip made from ``image``; its id comes back at once (Stability's route is always asynchronous)."""
    form = FormReader(await read_form(http_request))
    image = await form.image("image")
    assert image is not None
    width, height = (max(SIZE_MULTIPLE, side // SIZE_MULTIPLE * SIZE_MULTIPLE) for side in image.size)
    seed = form.number("seed", 0, 0, MAX_SEED, integer=True)
    request = VideoRequest(init_image=image.convert("RGB"), width=width, height=height, seed=seed or -1,
                           cfg_scale=form.number("cfg_scale", 1.8, 0, 10),
                           motion_bucket_id=form.number("motion_bucket_id", 127, 1, 255, integer=True),
                           steps=form.number("steps", None, 1, 10_000, integer=True),
                           frames=form.number("frames", None, 1, 10_000, integer=True))
    job = await submit_checked(services, request, source=SOURCE, owner=owner_of(http_request))
    return JSONResponse({"id": job.id})


@router.get("/image-to-video/result/{job_id}")
async def image_to_video_result(job_id: str, http_request: Request, services: ServicesDep) -> Response:
    job = services.queue.get(job_id)
    if job is None or job.source != SOURCE or not visible_to(job, owner_of(http_request)):
        raise ApiError(404, f"no generation with id {job_id!r}", "id")
    if job.state not in ENDED_STATES or not job.done_event.is_set():
        return JSONResponse({"id": job.id, "status": "in-progress"}, status_code=202)
    if job.state == "failed":
        if job.error_field:
            raise RequestError(job.error_field, job.error or "invalid value")
        raise ApiError(500, f"generation failed: {job.error}")
    video = next((item for item in (job.result.artifacts if job.result else []) if item.type == "video"), None)
    if video is None or video.path is None or not Path(video.path).is_file():
        raise ApiError(409, f"generation {job_id} was cancelled before it made a video", "id")
    data = Path(video.path).read_bytes()
    seed = int(job.request.seed)
    accept = http_request.headers.get("accept", "").lower()
    if "application/json" in accept:
        return JSONResponse({"video": base64.b64encode(data).decode("ascii"), "finish_reason": FINISH_REASON,
                             "seed": seed})
    return Response(data, media_type=video.media_type, headers={"seed": str(seed), "finish-reason": FINISH_REASON})
