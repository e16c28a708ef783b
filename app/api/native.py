"""Sfumato's own API under ``/api/v1``: asynchronous jobs instead of one blocking call per image.

Submit a request and get a job id at once; poll or stream its progress; fetch its images later; cancel it; page
through history; optionally be called back at a webhook URL. This answers the A1111 API's known complaints
(blocking calls, no job ids, one global progress). The body is the ``GenerationRequest`` fields by name; unknown
fields are refused (422 naming them) so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Discriminator, Tag
from starlette.concurrency import run_in_threadpool

from app.api.errors import ApiError
from app.api.images import decode_image, encode_png_base64
from app.api.requests_common import (
    ENDED_STATES,
    ServicesDep,
    artifact_image,
    encode_image,
    owner_of,
    submit_checked,
    visible_to,
)
from app.api.training import TrainJobBody, to_train_request
from app.api.videos import decode_video
from app.api.webhooks import check_webhook_url, install_webhooks
from modules.audio.request import AudioRequest
from modules.controlnet.units import ControlNetUnit
from modules.image.request import GenerationRequest, HiresFix, Outpaint, SdUpscale
from modules.image.results import GenerationResult
from modules.interrogate.kind import InterrogateResult
from modules.interrogate.request import InterrogateRequest
from modules.jobs.artifacts import Artifact
from modules.jobs.queue import Job, JobQueue
from modules.runtime.services import Services
from modules.training.results import TrainResult
from modules.upscaling.request import UpscaleRequest
from modules.video.kind import VideoResult
from modules.video.request import VideoRequest

router = APIRouter(prefix="/api/v1", tags=["native"])

HISTORY_PAGE_MAX = 500
HISTORY_OFFSET_MAX = 10**9  # far past any history, and well inside SQLite's 64-bit integers
SSE_KEEPALIVE_SECONDS = 15.0
AVERAGE_OVER_JOBS = 20


# What the non-JSON routes answer, for the published description (app.api.openapi adds the error answers).
_BINARY = {"schema": {"type": "string", "format": "binary"}}
PNG_ANSWER: dict[int | str, dict[str, Any]] = {200: {"description": "A PNG", "content": {"image/png": _BINARY}}}
IMAGE_ANSWER: dict[int | str, dict[str, Any]] = {200: {
    "description": "The image, with its infotext, in the job's format or ``format``",
    "content": {f"image/{fmt}": _BINARY for fmt in ("png", "jpeg", "webp")}}}
ARTIFACT_ANSWER: dict[int | str, dict[str, Any]] = {200: {
    "description": "The artifact's file as written: an image, or a video, a sound, a model file ...",
    "content": {"image/png": _BINARY, "image/jpeg": _BINARY, "image/webp": _BINARY, "*/*": _BINARY}}}
EVENT_STREAM_ANSWER: dict[int | str, dict[str, Any]] = {200: {
    "description": "Server-sent events: ``data: {job view as JSON}`` per change, the last one the final state",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}}


class OutpaintBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0


class HiresBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = 2.0
    upscaler: str = "Latent"
    steps: int = 0
    denoising_strength: float = 0.7
    resize_x: int = 0
    resize_y: int = 0


class SdUpscaleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = 2.0
    upscaler: str = "Lanczos"
    overlap: int = 64


class ControlNetBody(BaseModel):
    """One ControlNet unit (``ControlNetUnit``'s fields; ``image`` as base64, left out in img2img/inpaint to read
    the input image)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    image: str | None = None
    module: str = "none"
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: str = "Balanced"
    resize_mode: str = "Crop and Resize"
    processor_res: int = 512
    threshold_a: float = -1.0
    threshold_b: float = -1.0
    pixel_perfect: bool = False
    hr_option: str = "Both"


class JobBody(BaseModel):
    """A ``GenerationRequest`` on the wire; a field left out (or null) takes the request type's own default."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["image"] = "image"
    task: Literal["txt2img", "img2img", "inpaint", "outpaint"] | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    styles: list[str] | None = None
    model: str | None = None
    vae: str | None = None
    sampler_name: str | None = None
    scheduler: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    subseed: int | None = None
    subseed_strength: float | None = None
    batch_size: int | None = None
    n_iter: int | None = None
    clip_skip: int | None = None
    init_image: str | None = None
    mask: str | None = None
    denoising_strength: float | None = None
    resize_mode: int | None = None
    mask_blur: int | None = None
    inpainting_fill: int | None = None
    inpaint_full_res: bool | None = None
    inpaint_full_res_padding: int | None = None
    inpainting_mask_invert: bool | None = None
    outpaint: OutpaintBody | None = None
    hires: HiresBody | None = None
    sd_upscale: SdUpscaleBody | None = None
    controlnet: list[ControlNetBody] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    safety: Literal["off", "blur", "black"] | None = None  # NSFW filter; left out: the key's or studio's default
    save_images: bool | None = None
    make_grid: bool | None = None
    extensions: dict[str, dict[str, Any]] | None = None
    webhook_url: str | None = None


class UpscaleJobBody(BaseModel):
    """An ``UpscaleRequest`` on the wire (``"kind": "upscale"``): images as base64, or a folder on the studio's
    machine (``input_dir``), upscaled like A1111's Extras."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["upscale"]
    images: list[str] | None = None
    names: list[str] | None = None
    input_dir: str | None = None
    upscaler: str | None = None
    upscaler_2: str | None = None
    upscaler_2_visibility: float | None = None
    resize_mode: int | None = None
    scale: float | None = None
    width: int | None = None
    height: int | None = None
    crop: bool | None = None
    tile_size: int | None = None
    tile_overlap: int | None = None
    save_images: bool | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    webhook_url: str | None = None


class InterrogateJobBody(BaseModel):
    """An ``InterrogateRequest`` on the wire (``"kind": "interrogate"``): the image as base64; the caption comes
    back in the job's ``result.caption``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["interrogate"]
    image: str
    model: str | None = None
    captioner: str | None = None
    clip_model: str | None = None
    max_tokens: int | None = None
    webhook_url: str | None = None


class VideoJobBody(BaseModel):
    """A ``VideoRequest`` on the wire (``"kind": "video"``). Left out, the model, checkpoint, frames, fps, size,
    steps and CFG are the chosen model family's defaults. ``init_image`` (base64) makes image-to-video,
    ``init_video`` (a base64 MP4 / WebM / GIF) video-to-video; the clip is ``result.artifacts[0]`` (MP4 unless
    ``output_formats`` says otherwise). ``motion_end`` (AnimateDiff) is the fraction of the steps the motion adapter
    acts in, the image model alone finishing the frames (default: the adapter's recommendation, else 1)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["video"]
    prompt: str | None = None
    negative_prompt: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: int | None = None
    sampler: str | None = None
    init_image: str | None = None
    init_video: str | None = None
    strength: float | None = None
    motion_bucket_id: int | None = None
    noise_aug_strength: float | None = None
    decode_chunk_size: int | None = None
    motion_end: float | None = None
    output_formats: list[str] | None = None
    save_frames: bool | None = None
    webhook_url: str | None = None


class AudioJobBody(BaseModel):
    """An ``AudioRequest`` on the wire (``"kind": "audio"``): text-to-audio (``prompt``) or speech (``text``);
    ``init_audio`` as base64, with its ``strength`` (0 keeps it, 1 ignores it). The files come back as the job's
    artifacts, each with its parameters."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["audio"]
    task: Literal["text-to-audio", "speech"] | None = None
    model: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    text: str | None = None
    duration: float | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    waveforms: int | None = None
    init_audio: str | None = None
    strength: float | None = None
    voice: str | None = None
    speed: float | None = None
    output_format: Literal["wav", "flac", "mp3", "ogg", "opus", "aac"] | None = None
    webhook_url: str | None = None


def _kind_of(value: Any) -> str:
    kind = value.get("kind", "image") if isinstance(value, dict) else getattr(value, "kind", "image")
    return kind if isinstance(kind, str) else "image"


AnyJobBody = Annotated[Annotated[JobBody, Tag("image")] | Annotated[UpscaleJobBody, Tag("upscale")]
                       | Annotated[InterrogateJobBody, Tag("interrogate")] | Annotated[AudioJobBody, Tag("audio")]
                       | Annotated[TrainJobBody, Tag("train")] | Annotated[VideoJobBody, Tag("video")],
                       Discriminator(_kind_of)]


def to_upscale_request(body: UpscaleJobBody) -> UpscaleRequest:
    fields = body.model_dump(exclude_none=True, exclude={"kind", "webhook_url", "images", "names"})
    images = tuple(decode_image(data, f"images.{index}") for index, data in enumerate(body.images or []))
    names = tuple(body.names or ())
    if names and len(names) != len(images):
        raise ApiError(422, f"{len(names)} names for {len(images)} images", "names")
    return UpscaleRequest(images=images, names=names, **fields)


def to_interrogate_request(body: InterrogateJobBody) -> InterrogateRequest:
    fields = body.model_dump(exclude_none=True, exclude={"kind", "webhook_url", "image"})
    return InterrogateRequest(image=decode_image(body.image, "image"), **fields)


def to_video_request(body: VideoJobBody) -> VideoRequest:
    fields = body.model_dump(exclude_none=True, exclude={"kind", "webhook_url", "init_image", "init_video"})
    if "output_formats" in fields:
        fields["output_formats"] = tuple(fields["output_formats"])
    if body.init_image is not None:
        fields["init_image"] = decode_image(body.init_image, "init_image")
    if body.init_video is not None:
        fields["init_video"] = decode_video(body.init_video, "init_video")
    return VideoRequest(**fields)


def to_audio_request(body: AudioJobBody) -> AudioRequest:
    from app.api.audio_common import decode_base64_audio

    fields = body.model_dump(exclude_none=True, exclude={"kind", "webhook_url", "init_audio"})
    if body.init_audio is not None:
        fields["init_audio"] = decode_base64_audio(body.init_audio, "init_audio")
    return AudioRequest(**fields)


def to_request(body: JobBody) -> GenerationRequest:
    """Wire body -> the one request type; images decoded here so a corrupt one names its field."""
    fields = body.model_dump(exclude_none=True,
                             exclude={"kind", "webhook_url", "init_image", "mask", "outpaint", "hires", "sd_upscale",
                                      "controlnet"})
    if "styles" in fields:
        fields["styles"] = tuple(fields["styles"])
    if body.init_image is not None:
        fields["init_image"] = decode_image(body.init_image, "init_image")
    if body.mask is not None:
        fields["mask"] = decode_image(body.mask, "mask")
    if body.outpaint is not None:
        fields["outpaint"] = Outpaint(**body.outpaint.model_dump())
    if body.hires is not None:
        fields["hires"] = HiresFix(**body.hires.model_dump())
    if body.sd_upscale is not None:
        fields["sd_upscale"] = SdUpscale(**body.sd_upscale.model_dump())
    if body.controlnet:
        fields["controlnet"] = tuple(
            ControlNetUnit(**{**unit.model_dump(exclude={"image"}),
                              "image": decode_image(unit.image, f"controlnet.{index}.image") if unit.image else None})
            for index, unit in enumerate(body.controlnet))
    fields.setdefault("make_grid", False)  # API clients get the single images; a grid only costs disk
    fields["task"] = body.task or _implied_task(body)
    return GenerationRequest(**fields)


def _implied_task(body: JobBody) -> str:
    """Leaving ``task`` out is fine: an init image with a mask is inpaint, with margins outpaint, else img2img.
    Margins without an image still mean outpaint, so the client hears that the image is missing (and a negative
    margin is reported) instead of the margins being ignored."""
    if body.outpaint is not None and any(body.outpaint.model_dump().values()):
        return "outpaint"
    if body.init_image is None:
        return "txt2img"
    return "inpaint" if body.mask is not None else "img2img"


# -- routes ------------------------------------------------------------------------------------------------------
@router.post("/jobs", status_code=202)
async def submit_job(body: AnyJobBody, http_request: Request, services: ServicesDep) -> dict:
    """Queue a job of any kind (``kind``: ``image``, the default, ``upscale``, ``interrogate``, ``audio`` or
    ``video``) and answer at once with its id and where to watch it."""
    sender = install_webhooks(services.queue)
    webhook = await run_in_threadpool(check_webhook_url, body.webhook_url, sender.allow_private)  # may resolve DNS
    # decoding a large image should not stall other clients
    convert = {JobBody: to_request, UpscaleJobBody: to_upscale_request,
               InterrogateJobBody: to_interrogate_request, AudioJobBody: to_audio_request,
               TrainJobBody: to_train_request, VideoJobBody: to_video_request}[type(body)]
    request = await run_in_threadpool(convert, body)
    job = await submit_checked(services, request, source="native", owner=owner_of(http_request), webhook=webhook)
    if webhook:
        sender.remember_base(job.id, str(http_request.base_url).rstrip("/"))
    return {"id": job.id, "state": job.state, "position": queue_position(services.queue, job),
            "urls": job_urls(http_request, job)}


@router.get("/jobs")
def list_jobs(http_request: Request, services: ServicesDep,
                    limit: Annotated[int, Query(ge=1, le=HISTORY_PAGE_MAX)] = 20,
                    offset: Annotated[int, Query(ge=0, le=HISTORY_OFFSET_MAX)] = 0,
                    state: Literal["queued", "running", "done", "failed", "cancelled"] | None = None) -> dict:
    """Newest first; ``total`` counts every match so a client can page. A plain ``def`` on purpose, like the image
    routes below: reading the store and encoding PNGs runs in FastAPI's thread pool, never on the event loop that
    streams everyone's progress."""
    jobs, total = services.queue.history(limit=limit, offset=offset, state=state, owner=owner_of(http_request))
    return {"total": total, "limit": limit, "offset": offset,
            "jobs": [job_view(job, http_request, services.queue) for job in jobs]}


@router.get("/jobs/{job_id}", name="native_job")
def get_job(job_id: str, http_request: Request, services: ServicesDep) -> dict:
    return job_view(find_job(services, job_id, http_request), http_request, services.queue)


@router.get("/jobs/{job_id}/preview", response_class=Response, responses=PNG_ANSWER)
def job_preview(job_id: str, http_request: Request, services: ServicesDep) -> Response:
    """The live preview of a running job (decoded every few steps), as a PNG."""
    job = find_job(services, job_id, http_request)
    preview = job.progress.current_preview()
    if preview is None:
        raise ApiError(404, f"job {job_id} has no preview yet", "job_id")
    return Response(encode_image(preview, "png"), media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse, responses=EVENT_STREAM_ANSWER)
async def job_events(job_id: str, http_request: Request, services: ServicesDep) -> StreamingResponse:
    """Server-sent events: one ``data: {json}`` per progress change, the last one carrying the final state."""
    job = find_job(services, job_id, http_request)
    return StreamingResponse(_event_stream(job, http_request, services.queue), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/jobs/{job_id}/images")
def job_images(job_id: str, http_request: Request, services: ServicesDep,
                     encoding: Literal["url", "base64"] = "url") -> dict:
    """Each image's seed, infotext and URL (and the PNG itself with ``encoding=base64``)."""
    job = find_job(services, job_id, http_request)
    images = _ended_images(job)
    items = []
    for index, item in enumerate(images):
        entry = {"index": index, "seed": item.parameters.get("seed"), "subseed": item.parameters.get("subseed"),
                 "grid": item.grid, "infotext": item.infotext, "url": image_url(http_request, job.id, index),
                 "nsfw": bool(item.parameters.get("nsfw"))}
        if encoding == "base64":
            entry["image"] = encode_png_base64(artifact_image(item), item.infotext)
        items.append(entry)
    return {"id": job.id, "state": job.state, "images": items}


@router.get("/jobs/{job_id}/images/{index}", name="native_job_image", response_class=Response,
            responses=IMAGE_ANSWER)
def job_image(job_id: str, index: int, http_request: Request, services: ServicesDep,
                    format: Literal["png", "jpeg", "webp"] | None = None) -> Response:
    """One image's bytes, in the job's output format unless ``format`` says otherwise, with its infotext."""
    job = find_job(services, job_id, http_request)
    images = _ended_images(job)
    if not 0 <= index < len(images):
        raise ApiError(404, f"job {job_id} has {len(images)} image(s); there is no image {index}", "index")
    fmt = format or getattr(job.request, "output_format", None) or "png"
    item = images[index]
    return Response(encode_image(artifact_image(item), fmt, item.infotext), media_type=f"image/{fmt}")


@router.get("/jobs/{job_id}/artifacts/{index}", name="native_job_artifact", response_class=Response,
            responses=ARTIFACT_ANSWER)
def job_artifact(job_id: str, index: int, http_request: Request, services: ServicesDep) -> Response:
    """One artifact's file as it was written (an image with its infotext, a video, a sound, a model), by its
    place in ``result.artifacts``."""
    job = find_job(services, job_id, http_request)
    artifacts = _ended_artifacts(job)
    if not 0 <= index < len(artifacts):
        raise ApiError(404, f"job {job_id} has {len(artifacts)} artifact(s); there is no artifact {index}", "index")
    item = artifacts[index]
    if item.path is not None and Path(item.path).is_file():
        return FileResponse(item.path, media_type=item.media_type, filename=Path(item.path).name)
    if item.image is not None:
        return Response(encode_image(item.image, "png", item.infotext), media_type="image/png")
    raise ApiError(404, f"the file of artifact {index} of job {job_id} is missing", "index")


@router.delete("/jobs/{job_id}")
async def cancel_job(job_id: str, http_request: Request, services: ServicesDep) -> dict:
    """A queued job never runs; a running one stops after its current step. 409 if it had already ended."""
    job = find_job(services, job_id, http_request)
    if not services.queue.cancel(job.id):
        raise ApiError(409, f"job {job_id} already ended ({job.state}); nothing to cancel", "job_id")
    return {"id": job.id, "state": job.state, "cancelled": True}


@router.post("/jobs/{job_id}/cancel")
async def cancel_job_post(job_id: str, http_request: Request, services: ServicesDep) -> dict:
    return await cancel_job(job_id, http_request, services)


@router.get("/system")
async def system_load(http_request: Request, services: ServicesDep) -> dict:
    """How busy the studio is: queue length, the running job (only the caller's own: another key's job id is not
    theirs to know), average seconds per job, and the device."""
    queue = services.queue
    stats = _queue_stats(queue)
    running = queue.current
    shown = running is not None and visible_to(running, owner_of(http_request))
    report = list(services.device_report)  # before _device_now, which may start detecting
    return {
        "queue_length": stats["queue_length"],
        "running": _running_view(running) if shown else None,
        "average_seconds_per_job": stats["average_seconds_per_job"],
        "device": _device_now(services),
        "device_report": report,
    }


def _device_now(services: Services) -> str:
    """The torch device, or "detecting" while torch still loads: this handler must never wait for it."""
    choice = services.runtime.peek()
    if choice is not None:
        return choice.device.torch_device
    services.runtime.detect_in_background()  # someone is asking: start deciding if nothing else did
    return "detecting"


# -- views -------------------------------------------------------------------------------------------------------
def find_job(services: Services, job_id: str, http_request: Request) -> Job:
    """The job, or a 404 naming the id (also for someone else's job: its existence is not theirs to know)."""
    job = services.queue.get(job_id)
    if job is None or not visible_to(job, owner_of(http_request)):
        raise ApiError(404, f"no job with id {job_id!r} (it may have left the history)", "job_id")
    return job


def job_urls(http_request: Request, job: Job) -> dict[str, str]:
    base = str(http_request.url_for("native_job", job_id=job.id))
    return {"self": base, "events": base + "/events", "images": base + "/images", "artifacts": base + "/artifacts",
            "preview": base + "/preview", "cancel": base + "/cancel"}


def image_url(http_request: Request, job_id: str, index: int) -> str:
    """Absolute URL of one finished image (used by the OpenAI dialect's ``response_format=url`` too)."""
    return str(http_request.url_for("native_job_image", job_id=job_id, index=str(index)))


def artifact_url(http_request: Request, job_id: str, index: int) -> str:
    """Absolute URL of one artifact's file (image, video, audio, model), whatever the job's kind."""
    return str(http_request.url_for("native_job_artifact", job_id=job_id, index=str(index)))


def queue_position(queue: JobQueue, job: Job) -> int | None:
    """How many queued jobs run before this one (0 = next); None once it has started."""
    if job.state != "queued":
        return None
    ahead = [other for other in queue.pending() if other.number < job.number]
    return len(ahead)


def progress_view(job: Job) -> dict[str, Any]:
    progress = job.progress
    ended_well = job.state == "done" and not (job.result is not None and job.result.interrupted)
    fraction = 1.0 if ended_well else progress.fraction
    eta = job.eta()
    return {"step": progress.step, "steps": progress.steps, "job_no": progress.job_no,
            "job_count": progress.job_count, "cell": progress.cell, "cells": progress.cells,
            "fraction": round(fraction, 4),
            "eta_seconds": round(eta, 2) if eta is not None else None, "text": progress.text,
            "has_preview": progress.has_preview}


def job_view(job: Job, http_request: Request, queue: JobQueue) -> dict[str, Any]:
    """Everything a poller wants: state, progress, error, timestamps and, once done, the result: its artifacts
    (every kind), and for image jobs the seeds, infotexts, image URLs and the parameters the images were made
    with."""
    view: dict[str, Any] = {
        "id": job.id, "number": job.number, "kind": job.kind, "state": job.state, "source": job.source,
        "position": queue_position(queue, job), "progress": progress_view(job),
        "error": job.error, "error_field": job.error_field,
        "created": job.created, "started": job.started, "finished": job.finished,
        "webhook_url": job.webhook, "urls": job_urls(http_request, job), "result": None,
    }
    result = job.result
    if result is not None and job.state in ENDED_STATES:  # the result is set before the state says done
        images = _image_artifacts(result.artifacts)
        view["result"] = {
            "interrupted": result.interrupted,
            "artifacts": [artifact_view(http_request, job.id, index, artifact)
                          for index, artifact in enumerate(result.artifacts)],
            "images": [image_url(http_request, job.id, index) for index in range(len(images))],
            "seeds": [artifact.parameters.get("seed") for artifact in images],
            "infotexts": [artifact.infotext for artifact in images],
            "nsfw": [bool(artifact.parameters.get("nsfw")) for artifact in images],  # hidden by the NSFW filter
        }
        if isinstance(result, GenerationResult):
            view["result"]["parameters"] = summary_view(result)
        if isinstance(result, VideoResult):
            view["result"].update(parameters=result.parameters, infotext=result.infotext,
                                  videos=[artifact_url(http_request, job.id, index)
                                          for index, artifact in enumerate(result.artifacts)
                                          if artifact.type == "video"])
        if isinstance(result, InterrogateResult):
            view["result"].update(caption=result.caption, sentence=result.sentence,
                                  terms=[{"list": name, "term": term} for name, term in result.terms],
                                  captioner=result.captioner, clip_model=result.clip_model)
        if isinstance(result, TrainResult):
            view["result"].update(output=str(result.output) if result.output else None, step=result.step,
                                  steps=result.steps, losses=result.losses, resumed_from=result.resumed_from)
    return view


def artifact_view(http_request: Request, job_id: str, index: int, artifact: Artifact) -> dict[str, Any]:
    return {"index": index, "type": artifact.type, "media_type": artifact.media_type, "grid": artifact.grid,
            "url": artifact_url(http_request, job_id, index), "parameters": artifact.parameters,
            "infotext": artifact.infotext or None}


def summary_view(result: GenerationResult) -> dict[str, Any]:
    """What the images were made with (after styles and defaults), under A1111's names."""
    summary = dataclasses.asdict(result.summary)
    summary["styles"] = list(result.summary.styles)
    return summary


def _image_artifacts(artifacts: list[Artifact]) -> list[Artifact]:
    """Every image artifact, grids (marked ``grid``) first as A1111 lists them."""
    return [artifact for artifact in artifacts if artifact.type == "image"]


def _ended_artifacts(job: Job) -> list[Artifact]:
    if job.state not in ENDED_STATES:
        raise ApiError(409, f"job {job.id} is still {job.state}; its results come when it is done", "job_id")
    if job.result is None:
        raise ApiError(409, f"job {job.id} {job.state} without results" + (f": {job.error}" if job.error else ""),
                       "job_id")
    return job.result.artifacts


def _ended_images(job: Job) -> list[Artifact]:
    return _image_artifacts(_ended_artifacts(job))


async def _event_stream(job: Job, http_request: Request, queue: JobQueue):
    """Send the job's snapshot each time the worker says it changed (pushed through the queue's events, not
    polled); a comment line after a quiet spell keeps proxies from closing the stream."""
    last_key: tuple | None = None
    with queue.events.subscribe(job.id, asynchronous=True) as changes:
        while True:
            ended = job.done_event.is_set()
            progress = job.progress
            key = (job.state, ended, progress.cell, progress.job_no, progress.step, progress.steps,
                   progress.job_count)
            if key != last_key:
                last_key = key
                yield f"data: {json.dumps(job_view(job, http_request, queue), default=str)}\n\n"
            if ended:
                return
            if not await changes.wait_async(SSE_KEEPALIVE_SECONDS):
                yield ": keep-alive\n\n"


def _queue_stats(queue: JobQueue) -> dict[str, Any]:
    stats = queue.stats(AVERAGE_OVER_JOBS)
    average = stats["average_seconds"]
    return {"queue_length": stats["queued"], "running": stats["running"],
            "average_seconds_per_job": round(average, 3) if average is not None else None}


def _running_view(job: Job) -> dict[str, Any]:
    eta = job.eta()
    return {"id": job.id, "source": job.source, "fraction": round(job.progress.fraction, 4),
            "eta_seconds": round(eta, 2) if eta is not None else None}
