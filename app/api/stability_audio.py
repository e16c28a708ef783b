"""Stability AI's text-to-audio route, ``POST /v2beta/audio/stable-audio-2/text-to-audio``, over the local queue.

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

from app.api.audio_common import clip_bytes, finished_clips
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

router = APIRouter(prefix="/v2beta", tags=["stability"], route_class=dialect_route(stability_error))


@router.post("/audio/stable-audio-2/text-to-audio", response_class=Response,
             responses={200: {"description": "The sound, as bytes (accept: audio/*) or JSON {audio, seed, "
                                             "finish_reason}",
                              "content": {FORMATS[fmt].media_type: {"schema": {"type": "string", "format": "binary"}}
                                          for fmt in OUTPUT_FORMATS}}})
async def text_to_audio(http_request: Request, services: ServicesDep) -> Response:
    form = FormReader(await read_form(http_request))
    prompt = form.text("prompt", required=True) or ""
    fmt = form.choice("output_format", OUTPUT_FORMATS, "mp3") or "mp3"
    duration = form.number("duration", None, 1, MAX_DURATION)
    seed = form.number("seed", 0, 0, MAX_SEED, integer=True)
    request = AudioRequest(task=TEXT_TO_AUDIO, model=_local_model(services, form.text("model")), prompt=prompt,
                           negative_prompt=form.text("negative_prompt", "") or "", duration=duration,
                           steps=form.number("steps", None, 1, 10_000, integer=True),
                           cfg_scale=form.number("cfg_scale", None, 0, 1_000), seed=seed or -1, output_format=fmt)
    job = await submit_checked(services, request, source="stability", owner=owner_of(http_request))
    await wait_for_job(services.queue, job, http_request=http_request)
    clip = finished_clips(job)[0]
    data = clip_bytes(clip, fmt)
    seed_used = int(clip.parameters.get("seed", 0))
    accept = http_request.headers.get("accept", "").lower()
    if any(part.strip().startswith("audio/") for part in accept.split(",")):
        return Response(data, media_type=FORMATS[fmt].media_type,
                        headers={"seed": str(seed_used), "finish-reason": FINISH_REASON})
    return JSONResponse({"audio": base64.b64encode(data).decode("ascii"), "seed": seed_used,
                         "finish_reason": FINISH_REASON})


def _local_model(services, name: str | None) -> str | None:
    if not name or not name.strip():
        return None
    registry = AudioModelRegistry(services.config.models_dir)
    return name if any(info.name.lower() == name.strip().lower() for info in registry.list(TEXT_TO_AUDIO)) else None
