"""The audio models on the worker's device and the calls that make sound with them.

One model stays loaded (audio models compete with the image model for accelerator memory); it is read again only
when another folder is asked for or the folder changed on disk. Nothing is downloaded: every load is
``local_files_only``, and no code from a model folder is run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modules.audio.audio_to_audio import keeps_clip, start_from_clip
from modules.audio.registry import AUDIOLDM2, STABLE_AUDIO, VITS, AudioModelInfo, voice_index
from modules.errors import RequestError


class AudioInterrupted(Exception):
    """Raised from a pipeline's step callback to stop it between steps (interrupt or skip)."""


@dataclass
class LoadedAudioModel:
    info: AudioModelInfo
    stamp: tuple[float, ...]
    model: Any  # a diffusers pipeline, or a transformers VitsModel
    tokenizer: Any = None


def _stamp(folder: Path) -> tuple[float, ...]:
    """Modification times of the folder's config files: a model replaced under the same name is loaded again."""
    return tuple(path.stat().st_mtime for path in sorted(folder.glob("*.json")))


class AudioModels:
    """The loaded audio model, on ``device`` (a callable decides on first use: torch is slow to import)."""

    def __init__(self, device: str | Callable[[], str] = "cpu", dtype: Callable[[], Any] | None = None) -> None:
        self._device = device
        self._dtype = dtype
        self._loaded: LoadedAudioModel | None = None
        self._lock = threading.RLock()

    @property
    def device(self) -> str:
        return self._device() if callable(self._device) else self._device

    def dtype(self, info: AudioModelInfo | None = None) -> Any:
        """float32 on the CPU or where the model asks for it; the studio's precision on an accelerator."""
        import torch

        if self.device.split(":", 1)[0] == "cpu" or self._dtype is None or (info is not None and info.full_precision):
            return torch.float32
        return self._dtype()

    def get(self, info: AudioModelInfo) -> LoadedAudioModel:
        with self._lock:
            stamp = _stamp(info.path)
            loaded = self._loaded
            if loaded is None or loaded.info.path != info.path or loaded.stamp != stamp:
                self._loaded = None
                self._loaded = LoadedAudioModel(info, stamp, *self._load(info))
            return self._loaded

    def release(self) -> None:
        with self._lock:
            self._loaded = None

    def _load(self, info: AudioModelInfo) -> tuple[Any, Any]:
        try:
            if info.family is VITS:
                from transformers import AutoTokenizer, VitsModel

                model = VitsModel.from_pretrained(info.path, local_files_only=True).to(self.device).eval()
                return model, AutoTokenizer.from_pretrained(info.path, local_files_only=True)
            if info.family is STABLE_AUDIO:
                from diffusers import StableAudioPipeline as Pipeline
            else:
                from diffusers import AudioLDM2Pipeline as Pipeline
            pipe = Pipeline.from_pretrained(info.path, local_files_only=True, dtype=self.dtype(info))
            pipe.set_progress_bar_config(disable=True)
            return pipe.to(self.device), None
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            raise RequestError("model", f"{info.shown} cannot be loaded as a {info.family.label} model: "
                                        f"{type(error).__name__}: {str(error)[:200]}") from error


@dataclass(frozen=True)
class Clip:
    samples: np.ndarray  # (channels, n) float32
    sample_rate: int


StepCallback = Callable[[int, int], None]  # (steps done, steps) -> None; raises AudioInterrupted to stop


def make_sound(loaded: LoadedAudioModel, request: Any, seed: int, on_step: StepCallback,
               init: np.ndarray | None = None) -> Clip:
    """One clip for a resolved ``AudioRequest`` with ``seed``; ``init`` is the init clip at the model's rate and
    channels (Stable Audio starts from it part-way, see ``audio_to_audio``)."""
    family = loaded.info.family
    if family is VITS:
        return _speak(loaded, request, seed)
    import torch

    pipe = loaded.model
    generator = torch.Generator("cpu").manual_seed(seed)

    length = round(request.duration * loaded.info.sample_rate)
    steps = request.steps
    extra: dict[str, Any] = {}
    if init is not None and family is STABLE_AUDIO:
        if keeps_clip(request.strength):
            return Clip(_exactly(init, length), loaded.info.sample_rate)
        start = start_from_clip(pipe, init, request.strength, request.steps, generator)
        pipe, steps, extra = start.pipeline, start.steps, {"latents": start.latents}

    def callback(step: int, _timestep: Any, _latents: Any) -> None:
        on_step(step + 1, steps)

    common = dict(prompt=request.prompt, negative_prompt=request.negative_prompt or None,
                  num_inference_steps=steps, guidance_scale=request.cfg_scale, num_waveforms_per_prompt=1,
                  generator=generator, callback=callback, callback_steps=1)
    if family is STABLE_AUDIO:
        audio = pipe(audio_end_in_s=request.duration, output_type="pt", **common, **extra).audios[0]
        samples = audio.float().cpu().numpy()
    elif family is AUDIOLDM2:
        samples = np.asarray(pipe(audio_length_in_s=request.duration, output_type="np", **common).audios[0])
    else:  # pragma: no cover - the registry knows no other family
        raise RequestError("model", f"{loaded.info.name}: no way to run a {family.label} model")
    return Clip(_exactly(np.atleast_2d(samples).astype(np.float32), length), loaded.info.sample_rate)


def _exactly(samples: np.ndarray, length: int) -> np.ndarray:
    """The asked duration to the sample: AudioLDM2 makes whole spectrogram frames, up to one hop (10 ms) short."""
    if samples.shape[1] >= length:
        return samples[:, :length]
    return np.pad(samples, ((0, 0), (0, length - samples.shape[1])))


def _speak(loaded: LoadedAudioModel, request: Any, seed: int) -> Clip:
    """VITS: one forward pass; its noise (durations and the flow) comes from torch's global generator, so the seed is
    set inside a forked RNG state that is put back afterwards."""
    import torch

    model, tokenizer = loaded.model, loaded.tokenizer
    inputs = tokenizer(request.text, return_tensors="pt")
    if inputs["input_ids"].shape[-1] == 0:
        raise RequestError("text", f"none of the characters of the text are in {loaded.info.name}'s vocabulary")
    speaker = voice_index(loaded.info, request.voice) if len(loaded.info.voices) > 1 else None
    before = model.speaking_rate
    model.speaking_rate = request.speed  # a field of this request: put back when it ends
    try:
        forked = [] if model.device.type == "cpu" else None  # None: every accelerator of its kind
        with torch.random.fork_rng(devices=forked), torch.inference_mode():
            torch.manual_seed(seed)
            waveform = model(**{key: value.to(model.device) for key, value in inputs.items()},
                             speaker_id=speaker).waveform[0]
    finally:
        model.speaking_rate = before
    return Clip(waveform.float().cpu().numpy()[None, :], loaded.info.sample_rate)
