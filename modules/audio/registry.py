"""Which audio models are installed: folders under ``models/audio/``, each told apart by its own config files.

- a diffusers pipeline folder (``model_index.json`` naming ``StableAudioPipeline`` or ``AudioLDM2Pipeline``, with
  its component sub-folders), as ``save_pretrained`` writes it or as the Hub repository is laid out;
- a transformers VITS folder (``config.json`` with ``"model_type": "vits"``, the weights and the tokenizer's
  ``vocab.json`` / ``tokenizer_config.json``), e.g. a copy of ``facebook/mms-tts-eng`` or
  ``kakao-enterprise/vits-vctk``.

Listing reads only small JSON files, so it is redone on every call: a folder dropped in is found without a restart.
The family decides the task, the defaults a request gets when it leaves a field out, and which fields apply.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.audio.request import SPEECH, TEXT_TO_AUDIO
from modules.errors import RequestError

AUDIO_DIR = "audio"
# The studio's own sound model (trained by tools/sound): the text-to-audio default whenever it is installed.
EMBEDDED_MODEL = "sfumato-sounds"
DEFAULT_VOICE = "default"


@dataclass(frozen=True)
class AudioFamily:
    """What a family of models does and what a request gets when it names no steps, CFG or duration (the values
    the family's own pipeline documents)."""

    name: str
    label: str
    task: str
    steps: int | None = None
    cfg_scale: float | None = None
    duration: float | None = None
    negative_prompt: bool = False
    init_audio: bool = False


STABLE_AUDIO = AudioFamily("stable-audio", "Stable Audio", TEXT_TO_AUDIO, steps=100, cfg_scale=7.0, duration=10.0,
                           negative_prompt=True, init_audio=True)
AUDIOLDM2 = AudioFamily("audioldm2", "AudioLDM 2", TEXT_TO_AUDIO, steps=200, cfg_scale=3.5, duration=10.0,
                        negative_prompt=True)
VITS = AudioFamily("vits", "VITS / MMS-TTS", SPEECH)
PIPELINE_FAMILIES = {"StableAudioPipeline": STABLE_AUDIO, "AudioLDM2Pipeline": AUDIOLDM2}


@dataclass(frozen=True)
class AudioModelInfo:
    """One model folder: its name (the folder's), its family, and what its configs say about its sound."""

    name: str
    path: Path
    family: AudioFamily
    sample_rate: int
    channels: int = 1
    max_duration: float | None = None  # the longest clip the model can make (Stable Audio: its latent length)
    min_duration: float = 0.0  # the shortest (AudioLDM2: one latent row of spectrogram frames)
    voices: tuple[str, ...] = ()
    # The model's own recommendation (the ``recommended`` block of the ``training_config.json`` Sfumato's training
    # scripts write), over the family's.
    recommended_steps: int | None = None
    recommended_cfg_scale: float | None = None
    # True where the model asks to run in float32 on any device (the embedded sound model's oscillator decoder
    # computes phases of hundreds of radians, which half precision scrambles).
    full_precision: bool = False

    @property
    def shown(self) -> str:
        return f"models/{AUDIO_DIR}/{self.name}"

    @property
    def task(self) -> str:
        return self.family.task

    def default_steps(self) -> int | None:
        return self.recommended_steps or self.family.steps

    def default_cfg_scale(self) -> float | None:
        return self.recommended_cfg_scale if self.recommended_cfg_scale is not None else self.family.cfg_scale

    def default_duration(self) -> float | None:
        if self.family.duration is None:
            return None
        return min(self.family.duration, self.max_duration) if self.max_duration else self.family.duration


class AudioModelRegistry:
    """The model folders under ``models_dir/audio``, re-read on each call."""

    def __init__(self, models_dir: Path) -> None:
        self.root = Path(models_dir) / AUDIO_DIR

    def list(self, task: str | None = None) -> list[AudioModelInfo]:
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted(self.root.iterdir(), key=lambda path: path.name.lower()):
            if folder.is_dir() and not folder.name.startswith("."):
                info = read_model_folder(folder)
                if info is not None and (task is None or info.task == task):
                    found.append(info)
        return found

    def default(self, task: str) -> AudioModelInfo | None:
        """The embedded model for sounds when it is there, else the first installed model of the task."""
        models = self.list(task)
        embedded = [info for info in models if info.name == EMBEDDED_MODEL]
        return (embedded or models or [None])[0]

    def find(self, name: str | None, task: str) -> AudioModelInfo:
        """The named model (any case), or the task's default; a ``RequestError`` on "model" saying what to do."""
        if name is None:
            info = self.default(task)
            if info is None:
                raise RequestError("model", missing_message(task))
            return info
        for info in self.list():
            if info.name.lower() == name.strip().lower():
                if info.task != task:
                    raise RequestError("model", f"{info.name} is a {info.family.label} model for {info.task}, "
                                                f"not {task}")
                return info
        installed = ", ".join(info.name for info in self.list(task)) or "none"
        raise RequestError("model", f"no audio model named {name!r} in models/{AUDIO_DIR}/; installed for {task}: "
                                    f"{installed}")


def missing_message(task: str) -> str:
    if task == SPEECH:
        return (f"no speech model is installed: put a transformers VITS folder (config.json, model.safetensors, "
                f"vocab.json, tokenizer_config.json; e.g. a copy of facebook/mms-tts-eng) in models/{AUDIO_DIR}/")
    return (f"no text-to-audio model is installed: put a diffusers Stable Audio or AudioLDM2 folder (model_index.json "
            f"and its component folders; e.g. a copy of stabilityai/stable-audio-open-1.0) in models/{AUDIO_DIR}/")


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_model_folder(folder: Path) -> AudioModelInfo | None:
    """What ``folder`` holds, or None when it is no audio model this studio runs."""
    index = _json(folder / "model_index.json")
    if index is not None:
        family = PIPELINE_FAMILIES.get(str(index.get("_class_name", "")))
        if family is STABLE_AUDIO:
            return _stable_audio(folder)
        if family is AUDIOLDM2:
            vocoder = _json(folder / "vocoder" / "config.json") or {}
            vae = _json(folder / "vae" / "config.json") or {}
            rate = int(vocoder.get("sampling_rate", 16000))
            hop = math.prod(int(step) for step in vocoder.get("upsample_rates", [5, 4, 2, 2, 2]))
            scale = 2 ** (len(vae.get("block_out_channels", [128, 256, 512])) - 1)
            return AudioModelInfo(folder.name, folder, AUDIOLDM2, rate, min_duration=hop * scale / rate)
        return None
    config = _json(folder / "config.json")
    if config is not None and str(config.get("model_type", "")).lower() == "vits":
        speakers = int(config.get("num_speakers") or 1)
        voices = (DEFAULT_VOICE,) if speakers <= 1 else tuple(f"speaker {index}" for index in range(speakers))
        return AudioModelInfo(folder.name, folder, VITS, int(config.get("sampling_rate", 16000)), voices=voices)
    return None


def _stable_audio(folder: Path) -> AudioModelInfo:
    vae = _json(folder / "vae" / "config.json") or {}
    transformer = _json(folder / "transformer" / "config.json") or {}
    projection = _json(folder / "projection_model" / "config.json") or {}
    rate = int(vae.get("sampling_rate", 44100))
    hop = math.prod(int(ratio) for ratio in vae.get("downsampling_ratios", [2, 4, 4, 8, 8]))
    longest = int(transformer.get("sample_size", 1024)) * hop / rate
    if projection.get("max_value") is not None:
        longest = min(longest, float(projection["max_value"]))
    recommended = (_json(folder / "training_config.json") or {}).get("recommended")
    recommended = recommended if isinstance(recommended, dict) else {}
    return AudioModelInfo(folder.name, folder, STABLE_AUDIO, rate, int(vae.get("audio_channels", 2)),
                          max_duration=longest, recommended_steps=_positive(recommended.get("steps"), int),
                          recommended_cfg_scale=_positive(recommended.get("guidance"), float),
                          full_precision=recommended.get("precision") == "float32")


def _positive(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` when it is a positive number, else None (a hand-edited file cannot break listing)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return kind(value)
    return None


def voice_index(info: AudioModelInfo, voice: str) -> int:
    """The speaker id of ``voice`` ("speaker 3", or just "3")."""
    wanted = voice.strip().lower()
    for index, name in enumerate(info.voices):
        if wanted in (name.lower(), str(index)):
            return index
    raise RequestError("voice", f"{info.name} has no voice {voice!r}; its voices: {', '.join(info.voices)}")
