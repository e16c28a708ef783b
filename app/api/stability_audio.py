"""Stability AI's audio routes over the local queue: ``POST /v2beta/audio/stable-audio-2/text-to-audio`` and
``.../audio-to-audio`` (the same fields plus the ``audio`` file to start from and its ``strength``, 0..1, default 1).

A multipart form in Stability's field names (``prompt``, ``duration``, ``seed`` with 0 = random, ``steps``,
``cfg_scale``, ``output_format`` mp3 or wav, ``model``); Sfumato also reads ``negative_prompt``. ``model`` names a
local text-to-audio model, or (Stability's "stable-audio-2", "stable-audio-2.5") the studio's default. Out comes the
file's bytes (``accept: audio/*``, with ``seed`` and ``finish-reason`` headers) or JSON ``{audio, seed,
finish_reason}`` with the audio as base64 for any other accept. Errors are Stability's ``{id, name, errors}``.
A ``duration`` left out is the model's own default (Stability's 190 s is past what local models make).
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from app.api.audio_common import MAX_AUDIO_UPLOAD, clip_bytes, decode_base64_audio, finished_clips
from app.api.errors import ApiError
from app.api.requests_common import (
    FormReader,
    ServicesDep,
    dialect_route,
    owner_of,
    read_form,
    submit_checked,
    wait_for_job,
)
from app.api.stability import FINISH_REASON, MAX_SEED, stability_error
from modules.audio.encode import FORMATS
from modules.audio.registry import AudioModelRegistry
from modules.audio.request import TEXT_TO_AUDIO, AudioRequest

OUTPUT_FORMATS = ("mp3", "wav")
MAX_DURATION = 190  # Stability's own bound; the model's limit is checked by the queue

# the engine's init clip is Stability's ``audio`` field
router = APIRouter(prefix="/v2beta", tags=["stability"],
                   route_class=dialect_route(stability_error, {"init_audio": "audio"}))


_AUDIO_RESPONSES = {200: {"description": "The sound, as bytes (accept: audio/*) or JSON {audio, seed, finish_reason}",
                          "content": {FORMATS[fmt].media_type: {"schema": {"type": "string", "format": "binary"}}
                                      for fmt in OUTPUT_FORMATS}}}


@router.post("/audio/stable-audio-2/text-to-audio", response_class=Response, responses=_AUDIO_RESPONSES)
async def text_to_audio(http_request: Request, services: ServicesDep) -> Response:
    form = FormReader(await read_form(http_request))
    return await _make(http_request, services, form, _request(services, form))


@router.post("/audio/stable-audio-2/audio-to-audio", response_class=Response, responses=_AUDIO_RESPONSES)
async def audio_to_audio(http_request: Request, services: ServicesDep) -> Response:
    """Text-to-audio's fields plus ``audio`` (the file to start from) and ``strength`` (0..1, Stability's default
    1: how far the result may stray from ``audio``; 0 gives it back)."""
    form = FormReader(await read_form(http_request))
    request = _request(services, form)
    clip = await _upload(form, "audio")
    return await _make(http_request, services, form,
                       request.replace(init_audio=clip, strength=form.number("strength", 1.0, 0, 1)))


def _request(services, form: FormReader) -> AudioRequest:
    """The fields both routes share, in Stability's names."""
    prompt = form.text("prompt", required=True) or ""
    fmt = form.choice("output_format", OUTPUT_FORMATS, "mp3") or "mp3"
    duration = form.number("duration", None, 1, MAX_DURATION)
    seed = form.number("seed", 0, 0, MAX_SEED, integer=True)
    return AudioRequest(task=TEXT_TO_AUDIO, model=_local_model(services, form.text("model")), prompt=prompt,
                        negative_prompt=form.text("negative_prompt", "") or "", duration=duration,
                        steps=form.number("steps", None, 1, 10_000, integer=True),
                        cfg_scale=form.number("cfg_scale", None, 0, 1_000), seed=seed or -1, output_format=fmt)


async def _upload(form: FormReader, name: str) -> bytes:
    """An uploaded audio file (or a base64 string), or a 400 naming the field."""
    value = form.form.get(name)
    if value is None:
        raise ApiError(400, "is required (an audio file)", name)
    if isinstance(value, UploadFile):
        data = await value.read(MAX_AUDIO_UPLOAD + 1)
        if len(data) > MAX_AUDIO_UPLOAD:
            raise ApiError(413, f"the audio is larger than {MAX_AUDIO_UPLOAD // 2**20} MB", name)
    else:
        data = decode_base64_audio(str(value), name)
    if not data:
        raise ApiError(400, "the uploaded file is empty", name)
    return data


async def _make(http_request: Request, services, form: FormReader, request: AudioRequest) -> Response:
    job = await submit_checked(services, request, source="stability", owner=owner_of(http_request))
    await wait_for_job(services.queue, job, http_request=http_request)
    clip = finished_clips(job)[0]
    fmt = request.output_format
    data = clip_bytes(clip, fmt)
    seed_used = int(clip.parameters.get("seed", 0))
    accept = http_request.headers.get("accept", "").lower()
    if any(part.strip().startswith("audio/") for part in accept.split(",")):
        return Response(data, media_type=FORMATS[fmt].media_type,
                        headers={"seed": str(seed_used), "finish-reason": FINISH_REASON})
    return JSONResponse({"audio": base64.b64encode(data).decode("ascii"), "seed": seed_used,
                         "finish_reason": FINISH_REASON})


def _local_model(services, name: str | None) -> str | None:
    """A local audio model's name as it is (one for speech is then refused naming ``model``); any other name
    (Stability's own) means the studio's default sound model."""
    if not name or not name.strip():
        return None
    registry = AudioModelRegistry(services.config.models_dir)
    return name if any(info.name.lower() == name.strip().lower() for info in registry.list()) else None
