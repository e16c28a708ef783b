"""The audio kind's request: one frozen value for text-to-audio and speech, checked once before it is queued.

Every front end (the Audio tab, native jobs, OpenAI's ``/v1/audio/speech``, Stability's text-to-audio) builds an
``AudioRequest``; fields left ``None`` are the model family's defaults, filled in at submission (see ``kind``), so the
stored job says exactly what ran.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from modules.errors import RequestError, check_range

TEXT_TO_AUDIO = "text-to-audio"
SPEECH = "speech"
TASKS = (TEXT_TO_AUDIO, SPEECH)


@dataclass(frozen=True)
class AudioLimits:
    """Bounds a shared studio sets so one request cannot hold the worker for hours (a model's own limits, such as
    Stable Audio's longest clip, are checked against the model in ``kind``)."""

    max_duration: float = 120.0  # seconds of sound per waveform
    max_steps: int = 500  # AudioLDM2's own default is 200
    max_waveforms: int = 8
    max_text_chars: int = 4096  # OpenAI's limit for speech input
    max_cfg: float = 30.0
    max_init_audio_bytes: int = 50 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class AudioRequest:
    """What to make. ``prompt`` describes a sound (text-to-audio); ``text`` is what a voice says (speech).

    ``seed`` -1 is a new random seed, chosen at submission; waveform ``i`` of a job uses ``seed + i``, so each clip
    can be made again alone. ``init_audio`` is the bytes of an audio file (any format ffmpeg reads) that the
    families able to start from a sound begin with (Stable Audio); ``strength`` (0..1, like img2img's denoising
    strength) is how much of it is re-noised: 0 keeps the clip, 1 ignores it (see ``audio_to_audio``); it has no
    effect without an init clip. ``output_format`` is one of ``encode.FORMATS``.
    """

    task: str = TEXT_TO_AUDIO
    model: str | None = None
    prompt: str = ""
    negative_prompt: str = ""
    text: str = ""
    duration: float | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    seed: int = -1
    waveforms: int = 1
    init_audio: bytes | None = None
    strength: float = 0.6
    voice: str | None = None
    speed: float = 1.0
    output_format: str = "wav"

    def replace(self, **changes: Any) -> AudioRequest:
        return dataclasses.replace(self, **changes)

    @property
    def words(self) -> str:
        """What the clip is about: the prompt, or the spoken text."""
        return self.text if self.task == SPEECH else self.prompt


def validate_fields(request: AudioRequest, limits: AudioLimits) -> None:
    """The checks that need nothing but the request; the model, voice and init clip are checked by the kind."""
    from modules.audio.encode import FORMATS

    if request.task not in TASKS:
        raise RequestError("task", f"unknown task {request.task!r}; this studio makes: {', '.join(TASKS)}")
    if request.task == SPEECH:
        if not request.text.strip():
            raise RequestError("text", "give the text to speak")
        if len(request.text) > limits.max_text_chars:
            raise RequestError("text", f"{len(request.text)} characters; at most {limits.max_text_chars} in one job")
    elif not request.prompt.strip():
        raise RequestError("prompt", "describe the sound to make")
    if request.duration is not None:
        if not math.isfinite(request.duration) or request.duration <= 0:
            raise RequestError("duration", f"must be more than 0 seconds, got {request.duration:g}")
        if request.duration > limits.max_duration:
            raise RequestError("duration", f"{request.duration:g} s is over this studio's limit of "
                                           f"{limits.max_duration:g} s")
    if request.steps is not None:
        check_range("steps", request.steps, 1, limits.max_steps)
    if request.cfg_scale is not None:
        check_range("cfg_scale", request.cfg_scale, 0, limits.max_cfg)
    check_range("waveforms", request.waveforms, 1, limits.max_waveforms)
    check_range("speed", request.speed, 0.25, 4.0)
    check_range("seed", request.seed, -1, 2**32 - 1)
    check_range("strength", request.strength, 0.0, 1.0)
    if request.output_format not in FORMATS:
        raise RequestError("output_format", f"unknown format {request.output_format!r}; choose one of "
                                            f"{', '.join(FORMATS)}")
    if request.init_audio is not None:
        if request.task == SPEECH:
            raise RequestError("init_audio", "speech starts from text only; remove the init audio")
        if not request.init_audio:
            raise RequestError("init_audio", "the init audio file is empty")
        if len(request.init_audio) > limits.max_init_audio_bytes:
            raise RequestError("init_audio", f"the file is over {limits.max_init_audio_bytes // 2**20} MB")
