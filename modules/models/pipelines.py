"""Loaded pipelines: one base pipeline per checkpoint, its img2img / inpaint siblings sharing its weights.

Loading a checkpoint costs seconds to minutes, so loaded ones are kept (least recently used first out, up to
``max_loaded``), and the task pipelines are made with ``from_pipe`` so txt2img, img2img and inpaint never hold
a second copy of the weights. The worker thread is the only caller that runs a pipeline (diffusers pipelines
are not thread-safe); the lock only protects the caches themselves.

A request may decode with a user VAE instead of the checkpoint's own. The task pipelines share components but
each holds its own ``vae`` attribute, so ``pipeline`` sets the wanted VAE on the pipeline it hands out every time
(the checkpoint's own, kept on ``LoadedModel``, when none is asked for): an override never outlives its request.
Loaded user VAEs are kept too (a few; they are small next to a checkpoint).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from modules.models.registry import CheckpointInfo, VaeInfo

PipelineKind = Literal["txt2img", "img2img", "inpaint"]
MEMORY_MARGIN = 1.5  # a model needs its weights plus room for activations and the decoder


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
    # The checkpoint's own VAE, kept apart because a request may swap in a user VAE (put back when none is asked).
    own_vae: Any = None

    def __post_init__(self) -> None:
        if self.own_vae is None:
            self.own_vae = getattr(self.base, "vae", None)

    @property
    def is_inpainting_model(self) -> bool:
        unet = getattr(self.base, "unet", None)  # SD3 / Flux have a transformer and no inpainting checkpoints here
        return unet is not None and unet.config.in_channels == 9

    @property
    def edits_images(self) -> bool:
        """Flux.1 Kontext: img2img edits the init image following the prompt, through its own pipeline."""
        from modules.models.families import is_kontext

        return is_kontext(self.base)

    @property
    def default_size(self) -> int:
        from modules.models import families

        if families.is_flow_family(self.family):
            return families.default_size(self.base)
        return int(self.base.unet.config.sample_size) * int(self.base.vae_scale_factor)


class PipelineManager:
    """Cache of loaded checkpoints, keyed by checkpoint path."""

    def __init__(
        self,
        loader: Callable[[CheckpointInfo], Any],
        prepare: Callable[[Any], list[str]],
        max_loaded: int = 1,
        vae_loader: Callable[[VaeInfo, str, float], Any] | None = None,
        max_vaes: int = 2,
        free_memory: Callable[[], int | None] | None = None,
    ) -> None:
        """``loader`` reads a checkpoint into a pipeline; ``prepare`` moves it to the device and applies memory
        options, returning the report lines (both are injected so tests and launch.py choose them).
        ``vae_loader(info, family, scaling_factor)`` reads a user VAE on the CPU (default: ``load_vae``)."""
        self._loader = loader
        self._prepare = prepare
        self._max_loaded = max(1, max_loaded)
        self._vae_loader = vae_loader or _load_vae
        self._max_vaes = max(1, max_vaes)
        # Bytes free where weights live (RAM on a CPU, memory on the GPU), None when unknown: with several models
        # kept, one more is loaded beside them only if it fits.
        self.free_memory = free_memory
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._vaes: OrderedDict[tuple, Any] = OrderedDict()
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
            self._make_room(weights_size(info.path))
        base = self._loader(info)
        report = self._prepare(base)
        loaded = LoadedModel(info=info, base=base, family=_family_of(base), memory_report=report,
                             scheduler_config=dict(base.scheduler.config))
        with self._lock:
            self._loaded[key] = loaded
            self.load_count += 1
        return loaded

    def _make_room(self, needed: int) -> None:
        """Unload least recently used models while the new one's weights (and a margin) would not fit."""
        if self.free_memory is None:
            return
        while self._loaded:
            free = self.free_memory()
            if free is None or free >= needed * MEMORY_MARGIN:
                return
            self._loaded.popitem(last=False)
            _free_accelerator_memory()

    def pipeline(self, loaded: LoadedModel, kind: PipelineKind, vae: VaeInfo | None = None,
                 controlnet: Any = None) -> Any:
        """The task pipeline of a loaded model, built once with ``from_pipe`` (shared weights), decoding with
        ``vae`` or, when None, the checkpoint's own VAE. Only the worker thread may call this (it sets
        ``pipe.vae``). With ``controlnet`` (a model or a list) it is the task's ControlNet pipeline, made for
        this call only: the ControlNet is the request's, never kept on the checkpoint."""
        if controlnet is not None:
            from diffusers import (
                AutoPipelineForImage2Image,
                AutoPipelineForInpainting,
                AutoPipelineForText2Image,
            )

            factory = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image,
                       "inpaint": AutoPipelineForInpainting}[kind]
            pipe = factory.from_pipe(loaded.base, controlnet=controlnet)
        elif kind == "txt2img" or (kind == "img2img" and loaded.edits_images):
            pipe = loaded.base  # Flux.1 Kontext's own pipeline takes the image to edit
        else:
            if kind not in loaded.derived:
                from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

                factory = AutoPipelineForImage2Image if kind == "img2img" else AutoPipelineForInpainting
                loaded.derived[kind] = factory.from_pipe(loaded.base)
            pipe = loaded.derived[kind]
        wanted = loaded.own_vae if vae is None else self.vae(loaded, vae)
        if wanted is not None and pipe.vae is not wanted:
            if vae is not None:
                _place_vae(wanted, pipe, loaded.own_vae)
            pipe.vae = wanted
        return pipe

    def vae(self, loaded: LoadedModel, info: VaeInfo) -> Any:
        """A user VAE for a loaded checkpoint, loaded once (with the checkpoint's scaling factor) and kept.

        Raises ``CheckpointLoadError`` when the VAE cannot be loaded or does not fit the checkpoint.
        """
        from modules.models.vae import check_vae_fits

        scaling = float(loaded.own_vae.config.scaling_factor)
        key = (str(info.path), info.sha256, loaded.family, scaling)
        with self._lock:
            if key in self._vaes:
                self._vaes.move_to_end(key)
                vae = self._vaes[key]
                check_vae_fits(vae, loaded.own_vae, info.name)
                return vae
        vae = self._vae_loader(info, loaded.family, scaling)
        check_vae_fits(vae, loaded.own_vae, info.name)
        with self._lock:
            self._vaes[key] = vae
            while len(self._vaes) > self._max_vaes:
                self._vaes.popitem(last=False)
        return vae

    def most_recent(self) -> LoadedModel | None:
        """The model the last job ran on (what A1111 calls the loaded model), None before any loads."""
        with self._lock:
            return next(reversed(self._loaded.values()), None)

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
            self._vaes.clear()
        _free_accelerator_memory()


def weights_size(path: Any) -> int:
    """Bytes of a checkpoint's weights (a file, or a diffusers folder's weight files): what loading it takes."""
    from pathlib import Path

    from modules.models.registry import folder_weight_files

    path = Path(path)
    try:
        if path.is_dir():
            return sum(file.stat().st_size for file in folder_weight_files(path))
        return path.stat().st_size
    except OSError:
        return 0


def free_memory_on(device: str) -> int | None:
    """Free bytes on ``device``: the GPU's free memory, else available RAM; None when it cannot be read."""
    try:
        if device.startswith("cuda"):
            import torch

            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # no driver, no psutil: keep the LRU limit alone
        return None


def _load_vae(info: VaeInfo, family: str, scaling_factor: float) -> Any:
    from modules.models.vae import load_vae

    return load_vae(info, family=family, scaling_factor=scaling_factor)


def _place_vae(vae: Any, pipe: Any, own: Any) -> None:
    """Put a user VAE where the pipeline computes, in its dtype, with the same slicing/tiling as the own VAE.

    With CPU offload (the own VAE carries accelerate hooks) the UNet's weights sit on the CPU between uses, so
    the VAE goes to the execution device instead and simply stays there: it is small, and unhooked it needs no
    help to run where the latents are.
    """
    from modules.models.families import denoiser

    unet = denoiser(pipe)
    offloaded = own is not None and hasattr(own, "_hf_hook")
    device = pipe._execution_device if offloaded or unet.device.type == "meta" else unet.device
    vae.to(device=device, dtype=unet.dtype)
    from modules.models.precision import compute_dtype_of, keep_vae_float32

    if own is not None and compute_dtype_of(own) is not None:  # the own VAE is kept in float32: so is this one
        keep_vae_float32(vae, compute_dtype_of(own))
    for flag, enable, disable in (("use_slicing", "enable_slicing", "disable_slicing"),
                                  ("use_tiling", "enable_tiling", "disable_tiling")):
        if own is not None and hasattr(own, flag) and hasattr(vae, enable):
            getattr(vae, enable if getattr(own, flag) else disable)()


def _family_of(pipe: Any) -> str:
    """The family of a loaded pipeline; SD3 and Flux first, since an SD3 pipeline has a ``text_encoder_2`` too."""
    from modules.models.families import pipeline_family

    flow = pipeline_family(pipe)
    if flow:
        return flow
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
