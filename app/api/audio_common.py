"""What the audio routes of every dialect share: the finished clip of an audio job, its bytes in a wire format,
and base64 audio uploads."""

from __future__ import annotations

import base64
import binascii

from app.api.errors import ApiError
from modules.audio.encode import decode, encode
from modules.audio.kind import AudioClip
from modules.errors import RequestError
from modules.jobs.queue import Job

MAX_AUDIO_UPLOAD = 50 * 1024 * 1024
PCM_RATE = 24000  # OpenAI's raw "pcm": 24 kHz, 16-bit signed little-endian, mono


def finished_clips(job: Job) -> list[AudioClip]:
    """The clips of an ended audio job, or the error the client should see (its bad field, a cancel, a crash)."""
    if job.state == "failed":
        if job.error_field:
            raise RequestError(job.error_field, job.error or "invalid value")
        raise ApiError(500, f"generation failed: {job.error}")
    clips = list(getattr(job.result, "clips", None) or [])
    if not clips:
        raise ApiError(409, f"job {job.id} was cancelled before it made a sound")
    return clips


def clip_bytes(clip: AudioClip, fmt: str) -> bytes:
    """The clip's file as written, or re-encoded into ``fmt`` (``pcm``: raw 24 kHz mono 16-bit samples)."""
    data = clip.path.read_bytes()
    if fmt == clip.parameters.get("format"):
        return data
    if fmt == "pcm":
        sound = decode(data, sample_rate=PCM_RATE, channels=1, field="response_format")
        return (sound.samples[0].clip(-1, 1) * 32767).round().astype("<i2").tobytes()
    sound = decode(data, field="response_format")
    return encode(sound.samples, sound.sample_rate, fmt, clip.parameters)


def decode_base64_audio(data: str, field: str) -> bytes:
    """A base64 string (raw or a ``data:audio/...;base64,`` URL) -> the file's bytes, or a 4xx naming the field."""
    text = data.strip()
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise ApiError(422, "data URL must be base64-encoded", field)
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    except (binascii.Error, ValueError) as error:
        raise ApiError(422, f"not valid base64 ({error})", field) from error
    if len(raw) > MAX_AUDIO_UPLOAD:
        raise ApiError(413, f"the audio is larger than {MAX_AUDIO_UPLOAD // 2**20} MB", field)
    return raw
