"""The audio kind of work: text-to-audio and speech through the job queue, like every other kind.

Defaults (the model, its family's steps, CFG, duration and voice, a random seed) are decided at submission in
``resolve``, so the stored job says exactly what ran; ``validate`` checks the request against the model before
anything is queued; ``run`` makes each waveform on the worker thread, with progress per step and interrupt/skip
between steps, and writes each clip atomically to ``outputs/audio/<date>/`` with its parameters inside the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.audio.encode import FORMATS, decode, encode
from modules.audio.engine import AudioInterrupted, AudioModels, make_sound
from modules.audio.registry import STABLE_AUDIO, AudioModelInfo, AudioModelRegistry, voice_index
from modules.audio.request import SPEECH, TEXT_TO_AUDIO, AudioLimits, AudioRequest, validate_fields
from modules.errors import RequestError
from modules.jobs.artifacts import Artifact
from modules.jobs.control import JobControl, Progress
from modules.jobs.kinds import Kind
from modules.runtime.outputs import OutputStore, prompt_slug

AUDIO = "audio"
OUTPUT_FOLDER = "audio"
INIT_AUDIO_FILE = "init-audio.bin"


@dataclass(frozen=True)
class AudioClip:
    """One file a job wrote: where, in which format, and the parameters embedded in it."""

    path: Path
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def media_type(self) -> str:
        return FORMATS[self.parameters.get("format", "wav")].media_type

    def artifact(self) -> Artifact:
        return Artifact(type="audio", path=self.path, parameters=dict(self.parameters))


@dataclass(frozen=True)
class AudioResult:
    clips: list[AudioClip]
    interrupted: bool = False

    @property
    def artifacts(self) -> list[Artifact]:
        return [clip.artifact() for clip in self.clips]

    @property
    def counted_images(self) -> int:
        return 0


class AudioRunner:
    """Runs audio requests on the worker thread, which owns ``models``."""

    def __init__(self, registry: AudioModelRegistry, models: AudioModels, store: OutputStore,
                 limits: AudioLimits | None = None, *, version: str = "") -> None:
        self.registry = registry
        self.models = models
        self.store = store
        self.limits = limits or AudioLimits()
        self.version = version

    # -- at submission ---------------------------------------------------------------------------------------------
    def resolve(self, request: AudioRequest) -> AudioRequest:
        """The model (the task's default when none is named), its own or its family's steps/CFG, duration and voice
        for the fields left out, and a seed for -1."""
        from modules.image.noise import resolve_seed

        changes: dict[str, Any] = {}
        if request.seed == -1:
            changes["seed"] = resolve_seed(-1)
        try:
            info = self.registry.find(request.model, request.task)
        except RequestError:
            return request.replace(**changes)  # validate says what is wrong
        changes["model"] = info.name
        if request.task == TEXT_TO_AUDIO:
            defaults = {"steps": info.default_steps(), "cfg_scale": info.default_cfg_scale(),
                        "duration": info.default_duration()}
            changes.update({name: value for name, value in defaults.items() if getattr(request, name) is None})
        elif request.voice is None and info.voices:
            changes["voice"] = info.voices[0]
        return request.replace(**changes)

    def validate(self, request: AudioRequest) -> None:
        validate_fields(request, self.limits)
        info = self.registry.find(request.model, request.task)
        if request.task == SPEECH:
            if request.voice is not None:
                voice_index(info, request.voice)
            return
        if request.duration is not None and info.max_duration is not None and request.duration > info.max_duration:
            raise RequestError("duration", f"{request.duration:g} s is longer than {info.name} can make "
                                           f"({info.max_duration:g} s at most)")
        if request.duration is not None and request.duration < info.min_duration:
            raise RequestError("duration", f"{info.name} makes clips of at least {info.min_duration:g} s")
        if info.family is STABLE_AUDIO and request.steps is not None and request.steps < 2:
            # diffusers' cosine DPM-Solver puts a 1-step schedule at its smallest sigma: the noise comes back as is
            raise RequestError("steps", f"{info.family.label} models need at least 2 steps (with 1, the sampler "
                                        "takes the starting noise for a finished sound)")
        if request.init_audio is not None:
            if not info.family.init_audio:
                raise RequestError("init_audio", f"{info.family.label} models cannot start from a sound; remove the "
                                                 "init audio or choose a Stable Audio model")
            decode(request.init_audio, sample_rate=info.sample_rate, channels=info.channels)

    # -- on the worker ---------------------------------------------------------------------------------------------
    def run(self, request: AudioRequest, control: JobControl) -> AudioResult:
        info = self.registry.find(request.model, request.task)
        steps = request.steps if request.task == TEXT_TO_AUDIO and request.steps else 1
        progress = Progress(job_count=request.waveforms, steps=steps, text=f"Loading {info.name}")
        control.report(progress)
        loaded = self.models.get(info)
        init = None
        if request.init_audio is not None:
            init = decode(request.init_audio, sample_rate=info.sample_rate, channels=info.channels).samples
        clips: list[AudioClip] = []
        interrupted = False
        for index in range(request.waveforms):
            if control.interrupted.is_set():
                interrupted = True
                break
            control.skipped.clear()
            seed = request.seed + index
            progress.job_no, progress.step, progress.text = index, 0, f"Waveform {index + 1} of {request.waveforms}"
            control.report(progress)

            def on_step(step: int, total: int) -> None:
                progress.step, progress.steps = step, max(1, total)
                control.report(progress)
                if control.interrupted.is_set() or control.skipped.is_set():
                    raise AudioInterrupted

            try:
                clip = make_sound(loaded, request, seed, on_step, init)
            except AudioInterrupted:
                if control.interrupted.is_set():
                    interrupted = True
                    break
                continue
            progress.step = progress.steps
            control.report(progress)
            clips.append(self._save(request, info, seed, clip.samples, clip.sample_rate))
        return AudioResult(clips=clips, interrupted=interrupted)

    def parameters(self, request: AudioRequest, info: AudioModelInfo, seed: int, sample_rate: int,
                   samples: int) -> dict[str, Any]:
        """What made a clip, as embedded in its file and kept in the job record."""
        made: dict[str, Any] = {"task": request.task, "model": info.name, "family": info.family.name}
        if request.task == SPEECH:
            made.update(text=request.text, voice=request.voice, speed=request.speed)
        else:
            made.update(prompt=request.prompt, negative_prompt=request.negative_prompt, duration=request.duration,
                        steps=request.steps, cfg_scale=request.cfg_scale, init_audio=request.init_audio is not None)
            if request.init_audio is not None:
                made["strength"] = request.strength
        made.update(seed=seed, sample_rate=sample_rate, seconds=round(samples / sample_rate, 4),
                    format=request.output_format, software=f"Sfumato {self.version}".strip())
        return made

    def _save(self, request: AudioRequest, info: AudioModelInfo, seed: int, samples: Any,
              sample_rate: int) -> AudioClip:
        made = self.parameters(request, info, seed, sample_rate, samples.shape[-1])
        data = encode(samples, sample_rate, request.output_format, made)
        stem = f"{seed}-{prompt_slug(request.words, limit=48) if request.words.strip() else 'audio'}"
        path = self.store.save_bytes(data, OUTPUT_FOLDER, stem, FORMATS[request.output_format].extension)
        return AudioClip(path=path, parameters=made)


# -- the record codec -----------------------------------------------------------------------------------------------
_FIELDS = tuple(item.name for item in dataclasses.fields(AudioRequest) if item.name != "init_audio")


def request_to_dict(request: AudioRequest, folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = {name: getattr(request, name) for name in _FIELDS}
    data["init_audio"] = None
    if request.init_audio is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / INIT_AUDIO_FILE).write_bytes(request.init_audio)
        data["init_audio"] = INIT_AUDIO_FILE
    return data


def request_from_dict(data: dict[str, Any], folder: Path, strict: bool) -> AudioRequest:
    values = {key: value for key, value in data.items() if key in _FIELDS}
    init = None
    if data.get("init_audio"):
        path = folder / Path(str(data["init_audio"])).name
        if path.is_file():
            init = path.read_bytes()
        elif strict:
            raise RequestError("init_audio", "the job's init audio file is missing from its folder")
    return AudioRequest(init_audio=init, **values)


def result_to_dict(result: AudioResult, folder: Path) -> dict[str, Any]:
    return {"clips": [{"file": str(Path(clip.path).resolve()), "parameters": clip.parameters}
                      for clip in result.clips], "interrupted": result.interrupted}


def result_from_dict(data: dict[str, Any], folder: Path) -> tuple[AudioResult, list[str]]:
    clips, problems = [], []
    for entry in data.get("clips") or []:
        path = Path(str(entry.get("file", "")))
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        clips.append(AudioClip(path=path, parameters=dict(entry.get("parameters") or {})))
    return AudioResult(clips=clips, interrupted=bool(data.get("interrupted"))), problems


def audio_kind(runner: AudioRunner) -> Kind:
    def describe(request: AudioRequest) -> str:
        words = request.words.strip().replace("\n", " ")
        return f"{words[:80]} ({request.model or '?'})"

    return Kind(
        name=AUDIO,
        request_type=AudioRequest,
        validate=runner.validate,
        run=runner.run,
        encode_request=request_to_dict,
        decode_request=request_from_dict,
        encode_result=result_to_dict,
        decode_result=result_from_dict,
        resolve=runner.resolve,
        initial_progress=lambda request: Progress(job_count=request.waveforms, steps=request.steps or 1),
        label=lambda request: "speech" if request.task == SPEECH else "text-to-audio",
        describe=describe,
    )
