"""OpenAI's text-to-speech route, ``POST /v1/audio/speech``, over the local queue and the studio's speech models.

The official ``openai`` client's ``audio.speech.create`` works unmodified with ``base_url`` pointed here. OpenAI's
model names ("tts-1", "tts-1-hd", "gpt-4o-mini-tts") mean the studio's default speech model; a local model's name
picks it. OpenAI's voice names ("alloy", "nova" ...) mean the model's voices in turn (the only voice of a
single-voice model); a voice the model has by name is used as it is. ``instructions`` is ignored (VITS takes no
style prompt). The answer is the audio file's bytes in ``response_format`` (mp3 by default, as OpenAI's).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from app.api.audio_common import clip_bytes, finished_clips
from app.api.errors import ApiError
from app.api.openai_images import openai_error
from app.api.requests_common import ServicesDep, dialect_route, owner_of, submit_checked, wait_for_job
from modules.audio.encode import FORMATS
from modules.audio.registry import AudioModelInfo
from modules.audio.request import SPEECH, AudioRequest
from modules.errors import RequestError

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
                 "marin", "cedar")
RESPONSE_TYPES = {"pcm": "audio/pcm", **{name: fmt.media_type for name, fmt in FORMATS.items()}}
FIELD_NAMES = {"text": "input", "output_format": "response_format"}

router = APIRouter(prefix="/v1", tags=["openai"], route_class=dialect_route(openai_error, FIELD_NAMES))


class SpeechBody(BaseModel):
    """The fields Sfumato uses; the rest (``instructions``, ``stream_format`` ...) is ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str
    input: str
    voice: str | dict[str, Any]
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: float | None = None
    # Sfumato's own addition (extra_body): a seed, since VITS draws its timing and timbre at random
    seed: int | None = None


@router.post("/audio/speech", response_class=Response,
             responses={200: {"description": "The spoken text as an audio file",
                              "content": {media: {"schema": {"type": "string", "format": "binary"}}
                                          for media in RESPONSE_TYPES.values()}}})
async def speech(body: SpeechBody, http_request: Request, services: ServicesDep) -> Response:
    fmt = body.response_format or "mp3"
    model = speech_model(services, body.model)
    request = AudioRequest(task=SPEECH, model=model.name, text=body.input, voice=openai_voice(model, body.voice),
                           speed=1.0 if body.speed is None else body.speed, seed=-1 if body.seed is None else body.seed,
                           output_format="wav" if fmt == "pcm" else fmt)
    job = await submit_checked(services, request, source="openai", owner=owner_of(http_request))
    await wait_for_job(services.queue, job, http_request=http_request)
    clip = finished_clips(job)[0]
    return Response(clip_bytes(clip, fmt), media_type=RESPONSE_TYPES[fmt])


def speech_model(services: Any, name: str) -> AudioModelInfo:
    """A local speech model named ``name``, else (an OpenAI model name) the studio's default speech model; the name
    of a local model for sounds is refused naming ``model`` rather than quietly answered by another model."""
    registry = audio_registry(services)
    if any(info.name.lower() == name.strip().lower() for info in registry.list()):
        return registry.find(name, SPEECH)
    return registry.find(None, SPEECH)


def audio_registry(services: Any):
    from modules.audio.registry import AudioModelRegistry

    return AudioModelRegistry(services.config.models_dir)


def openai_voice(model: AudioModelInfo, voice: str | dict[str, Any]) -> str:
    """The model's voice for OpenAI's ``voice`` (a name, or ``{"id": ...}`` for a custom voice)."""
    name = voice.get("id") if isinstance(voice, dict) else voice
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "give a voice name", "voice")
    wanted = name.strip().lower()
    if any(wanted == own.lower() for own in model.voices):
        return wanted
    if wanted in OPENAI_VOICES and model.voices:
        return model.voices[OPENAI_VOICES.index(wanted) % len(model.voices)]
    raise RequestError("voice", f"{model.name} has no voice {name!r}; its voices: {', '.join(model.voices)} "
                                f"(or one of OpenAI's: {', '.join(OPENAI_VOICES)})")
