"""Loaded pipelines: one base pipeline per checkpoint, its img2img / inpaint siblings sharing its weights.

Loading a checkpoint costs seconds to minutes, so loaded ones are kept (least recently used first out, up to
``max_loaded``), and the task pipelines are made with ``from_pipe`` so txt2img, img2img and inpaint never hold
a second copy of the weights. The worker thread is the only caller that runs a pipeline (diffusers pipelines
are not thread-safe); the lock only protects the cache itself.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from modules.model_registry import CheckpointInfo

PipelineKind = Literal["txt2img", "img2img", "inpaint"]


@dataclass
class LoadedModel:
    """A checkpoint in memory: its base (txt2img) pipeline, derived task pipelines, and what was applied."""

    info: CheckpointInfo
    base: Any
    family: str
    memory_report: list[str] = field(default_factory=list)
    derived: dict[str, Any] = field(default_factory=dict)
    # The checkpoint's own scheduler settings, kept apart because each request swaps in its own sampler.
    scheduler_config: dict[str, Any] = field(default_factory=dict)

    @property
    def is_inpainting_model(self) -> bool:
        return self.base.unet.config.in_channels == 9

    @property
    def default_size(self) -> int:
        return int(self.base.unet.config.sample_size) * int(self.base.vae_scale_factor)


class PipelineManager:
    """Cache of loaded checkpoints, keyed by checkpoint path."""

    def __init__(
        self,
        loader: Callable[[CheckpointInfo], Any],
        prepare: Callable[[Any], list[str]],
        max_loaded: int = 1,
    ) -> None:
        """``loader`` reads a checkpoint into a pipeline; ``prepare`` moves it to the device and applies memory
        options, returning the report lines (both are injected so tests and launch.py choose them)."""
        self._loader = loader
        self._prepare = prepare
        self._max_loaded = max(1, max_loaded)
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self.load_count = 0

    def get(self, info: CheckpointInfo) -> LoadedModel:
        key = str(info.path)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            while len(self._loaded) >= self._max_loaded:
                self._loaded.popitem(last=False)
            _free_accelerator_memory()
        base = self._loader(info)
        report = self._prepare(base)
        loaded = LoadedModel(info=info, base=base, family=_family_of(base), memory_report=report,
                             scheduler_config=dict(base.scheduler.config))
        with self._lock:
            self._loaded[key] = loaded
            self.load_count += 1
        return loaded

    def pipeline(self, loaded: LoadedModel, kind: PipelineKind) -> Any:
        """The task pipeline of a loaded model, built once with ``from_pipe`` (shared weights)."""
        if kind == "txt2img":
            return loaded.base
        if kind not in loaded.derived:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            factory = AutoPipelineForImage2Image if kind == "img2img" else AutoPipelineForInpainting
            loaded.derived[kind] = factory.from_pipe(loaded.base)
        return loaded.derived[kind]

    def loaded_titles(self) -> list[str]:
        with self._lock:
            return [item.info.title for item in self._loaded.values()]

    def memory_report(self) -> dict[str, list[str]]:
        """What was applied to each loaded model (device placement, slicing, offload), for the Settings tab."""
        with self._lock:
            return {item.info.title: list(item.memory_report) for item in self._loaded.values()}

    def unload_all(self) -> None:
        with self._lock:
            self._loaded.clear()
        _free_accelerator_memory()


def _family_of(pipe: Any) -> str:
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    hidden = pipe.text_encoder.config.hidden_size
    return "sd2" if hidden == 1024 else "sd1"


def _free_accelerator_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a hard dependency of the engine
        pass
