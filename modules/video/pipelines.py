"""Loaded video pipelines, and one clip made with them on the worker thread.

AnimateDiff pipelines are made with ``from_pipe`` from the image checkpoint the image path has loaded (its text
encoder, tokenizer and VAE are shared; the UNet is inflated with the motion adapter), SVD and Wan pipelines from
their folders. The memory options the image path applies (attention and VAE slicing, VAE tiling, CPU offload) are
applied through the same ``prepare`` function. One video pipeline is kept: they are large and a studio makes clips
with one model at a time.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from modules.errors import RequestError
from modules.video.motion_end import MotionSwitch
from modules.video.registry import VideoModel, motion_config_from_shapes, motion_file_shapes, unet_channels

# A LoRA for the image model that a motion adapter's folder may ship beside it, made to be used with it (as
# AnimateDiff v3 ships its adapter LoRA; Sfumato's embedded motion model teaches the UNet's cross-attention the
# motion words with one). diffusers' default LoRA file name, so ``pipe.load_lora_weights(folder)`` finds it too.
MOTION_LORA_FILE = "pytorch_lora_weights.safetensors"
MOTION_LORA_NAME = "motion"

if TYPE_CHECKING:
    from modules.models.pipelines import LoadedModel, PipelineManager
    from modules.models.registry import CheckpointInfo
    from modules.video.request import VideoRequest


class VideoInterrupted(Exception):
    """Raised from the step callback when the user stops the job (every video pipeline stops between steps)."""


@dataclass
class LoadedVideo:
    key: tuple
    pipe: Any
    family: str
    memory_report: list[str] = field(default_factory=list)
    checkpoint: LoadedModel | None = None  # the image model an AnimateDiff pipeline was made from
    motion: MotionSwitch | None = None  # AnimateDiff: ends the motion adapter's work at the request's motion_end


def load_motion_adapter(model: VideoModel, dtype: Any) -> Any:
    """A diffusers ``MotionAdapter`` from a folder or a single motion-module file."""
    from diffusers import MotionAdapter

    try:
        if model.path.is_dir():
            return MotionAdapter.from_pretrained(model.path, dtype=dtype)
        # diffusers would fetch the config from the Hub: it is read from the file's shapes instead
        config = motion_config_from_shapes(motion_file_shapes(model.path))
        with tempfile.TemporaryDirectory(prefix="sfumato-motion-") as folder:
            (Path(folder) / "config.json").write_text(json.dumps(config), encoding="utf-8")
            return MotionAdapter.from_single_file(str(model.path), config=folder, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
        raise RequestError("model", f"the motion adapter {model.name} cannot be loaded: {error}") from None


def load_motion_lora(pipe: Any, model_path: Path) -> bool:
    """Load the LoRA a motion adapter's folder ships (``MOTION_LORA_FILE``) onto an AnimateDiff pipeline's motion
    UNet (its own copy: the image pipeline's UNet is untouched) and, where the LoRA has text-encoder weights, onto
    a copy of the text encoder made for the video pipeline (``from_pipe`` shares it with the image pipeline, whose
    prompts must read as before); whether there was one."""
    from safetensors import SafetensorError

    folder = Path(model_path)
    if not (folder.is_dir() and (folder / MOTION_LORA_FILE).is_file()):
        return False
    try:
        from safetensors.torch import load_file

        whole = load_file(str(folder / MOTION_LORA_FILE))
        text = text_encoder_part(whole)
        if text:
            pipe.text_encoder = own_copy(pipe.text_encoder)
            inject_motion_text_lora(pipe.text_encoder, text)
        unet = {key: value for key, value in whole.items() if key not in text}
        if unet:
            pipe.load_lora_weights(unet, adapter_name=MOTION_LORA_NAME)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as error:
        raise RequestError("model", f"the LoRA beside the motion adapter {folder.name} cannot be loaded: "
                                    f"{error}") from None
    return True


def text_encoder_part(lora: dict[str, Any]) -> dict[str, Any]:
    """The text-encoder weights of a LoRA state in diffusers' naming (keys ``text_encoder.…``)."""
    return {key: value for key, value in lora.items() if key.startswith("text_encoder.")}


def inject_motion_text_lora(text_encoder: Any, text: dict[str, Any]) -> None:
    """Put a motion LoRA's text-encoder part (``text_encoder_part``) on ``text_encoder`` as the ``motion`` adapter."""
    from diffusers.utils import convert_state_dict_to_peft

    from modules.models.networks import inject_text_encoder_lora

    inject_text_encoder_lora(text_encoder, convert_state_dict_to_peft(text), None, "text_encoder", MOTION_LORA_NAME)


def own_copy(module: Any) -> Any:
    """A copy of a model part that shares no weights with the original, without the original's offload hooks
    (the video pipeline's memory options are applied to it afterwards)."""
    import copy

    duplicate = copy.deepcopy(module)
    with contextlib.suppress(ImportError):
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(duplicate, recurse=True)
    return duplicate


def check_adapter_fits(model: VideoModel, checkpoint: CheckpointInfo) -> None:
    """Refuse a motion adapter made for another image family (an SDXL adapter on an SD 1.x checkpoint)."""
    wanted = unet_channels(checkpoint.path, checkpoint.family)
    if model.channels is None or wanted is None:
        return  # told at load time, from the loaded UNet
    if tuple(model.channels) != tuple(wanted):
        base = model.base or f"UNet widths {list(model.channels)}"
        raise RequestError("checkpoint", f"the motion adapter {model.name} is made for {base} checkpoints; "
                                         f"{checkpoint.title} ({checkpoint.family or list(wanted)}) does not fit it")


class VideoPipelines:
    """Makes and keeps the video pipeline a request needs. Only the worker thread calls ``get``."""

    def __init__(self, image_pipelines: PipelineManager, prepare: Callable[[Any], list[str]],
                 dtype_for: Callable[[Path], Any]) -> None:
        self.image_pipelines = image_pipelines
        self._prepare = prepare
        self._dtype_for = dtype_for
        self._loaded: LoadedVideo | None = None
        self._lock = threading.Lock()

    def get(self, model: VideoModel, mode: str, checkpoint: CheckpointInfo | None) -> LoadedVideo:
        key = (str(model.path), str(checkpoint.path) if checkpoint else None, mode)
        with self._lock:
            if self._loaded is not None and self._loaded.key == key:
                return self._loaded
            self._loaded = None  # the previous one goes before the next is made
        loaded = self._make(model, mode, checkpoint, key)
        with self._lock:
            self._loaded = loaded
        return loaded

    def unload(self) -> None:
        with self._lock:
            self._loaded = None

    def _make(self, model: VideoModel, mode: str, checkpoint: CheckpointInfo | None, key: tuple) -> LoadedVideo:
        if model.family == "animatediff":
            assert checkpoint is not None
            return self._animatediff(model, mode, checkpoint, key)
        import diffusers

        dtype = self._dtype_for(model.path)
        name = {"svd": "StableVideoDiffusionPipeline", "wan": "WanPipeline"}[model.family]
        if model.family == "wan" and mode == "img2vid":
            name = "WanImageToVideoPipeline"
        try:
            pipe = getattr(diffusers, name).from_pretrained(model.path, dtype=dtype)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
            raise RequestError("model", f"the video model {model.name} cannot be loaded: {error}") from None
        pipe.set_progress_bar_config(disable=True)
        return LoadedVideo(key, pipe, model.family, self._prepare(pipe))

    def _animatediff(self, model: VideoModel, mode: str, checkpoint: CheckpointInfo, key: tuple) -> LoadedVideo:
        from diffusers import AnimateDiffPipeline, AnimateDiffSDXLPipeline, AnimateDiffVideoToVideoPipeline

        from modules.models.families import denoiser

        base = self.image_pipelines.get(checkpoint)
        if base.family not in ("sd1", "sd2", "sdxl"):
            raise RequestError("checkpoint", f"AnimateDiff animates SD 1.x and SDXL checkpoints; "
                                             f"{checkpoint.title} is {base.family}")
        unet_widths = tuple(base.base.unet.config.block_out_channels)
        if model.channels is not None and tuple(model.channels) != unet_widths:
            raise RequestError("checkpoint", f"the motion adapter {model.name} does not fit {checkpoint.title} "
                                             f"(UNet widths {list(model.channels)} against {list(unet_widths)})")
        adapter = load_motion_adapter(model, denoiser(base.base).dtype)
        if tuple(adapter.config.block_out_channels) != unet_widths:
            raise RequestError("checkpoint", f"the motion adapter {model.name} does not fit {checkpoint.title}")
        sdxl = base.family == "sdxl"
        if sdxl and mode == "vid2vid":
            raise RequestError("init_video", "video-to-video with AnimateDiff runs on SD 1.x checkpoints only")
        factory = AnimateDiffSDXLPipeline if sdxl else (
            AnimateDiffVideoToVideoPipeline if mode == "vid2vid" else AnimateDiffPipeline)
        pipe = factory.from_pipe(base.base, motion_adapter=adapter)
        load_motion_lora(pipe, model.path)
        pipe.vae = base.own_vae
        pipe.set_progress_bar_config(disable=True)
        return LoadedVideo(key, pipe, "animatediff", self._prepare(pipe), checkpoint=base,
                           motion=MotionSwitch(pipe, MOTION_LORA_NAME))


def set_sampler(loaded: LoadedVideo, sampler: str | None) -> str:
    """Put the request's sampler (AnimateDiff only) or the checkpoint's own scheduler on the pipeline; the
    sampler's name for the record."""
    if loaded.family != "animatediff" or loaded.checkpoint is None:
        return type(loaded.pipe.scheduler).__name__
    from modules.image.samplers import make_scheduler, resolve_sampler

    if sampler:
        choice = resolve_sampler(sampler)
        loaded.pipe.scheduler = make_scheduler(choice, loaded.checkpoint.scheduler_config)
        return choice.sampler
    own = type(loaded.checkpoint.base.scheduler)
    loaded.pipe.scheduler = own.from_config(loaded.checkpoint.scheduler_config)
    return own.__name__


def make_frames(loaded: LoadedVideo, request: VideoRequest,
                on_step: Callable[[int, int], None], should_stop: Callable[[], bool]) -> list[Image.Image]:
    """Run the pipeline for one clip; ``on_step(done, total)`` after each denoising step (decoding follows the
    last one); ``should_stop`` is asked between steps and raises ``VideoInterrupted``."""
    import torch

    generator = torch.Generator("cpu").manual_seed(int(request.seed))

    switch = loaded.motion

    def callback(pipeline: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if should_stop():
            raise VideoInterrupted
        total = int(getattr(pipeline, "num_timesteps", 0) or getattr(pipeline, "_num_timesteps", 0) or 0)
        if switch is not None:
            switch.after_step(step + 1, total)
        on_step(step + 1, total)
        return tensors

    if should_stop():
        raise VideoInterrupted
    motion_end = 1.0 if request.motion_end is None else float(request.motion_end)
    with switch.run(motion_end) if switch is not None else contextlib.nullcontext():
        return _run_pipeline(loaded, request, generator, callback)


def _run_pipeline(loaded: LoadedVideo, request: VideoRequest, generator: Any, callback: Any) -> list[Image.Image]:
    pipe = loaded.pipe
    size = (int(request.width), int(request.height))
    common: dict[str, Any] = {"num_inference_steps": int(request.steps), "generator": generator,
                              "callback_on_step_end": callback, "output_type": "pil",
                              "height": size[1], "width": size[0]}
    if loaded.family == "svd":
        assert request.init_image is not None
        output = pipe(image=request.init_image.convert("RGB").resize(size), num_frames=int(request.frames),
                      fps=int(request.fps), motion_bucket_id=int(request.motion_bucket_id),
                      noise_aug_strength=float(request.noise_aug_strength),
                      decode_chunk_size=request.decode_chunk_size, min_guidance_scale=1.0,
                      max_guidance_scale=float(request.cfg_scale), **common)
    else:
        text = {"prompt": request.prompt, "negative_prompt": request.negative_prompt or None,
                "guidance_scale": float(request.cfg_scale)}
        if request.decode_chunk_size and "decode_chunk_size" in _call_parameters(pipe):
            common["decode_chunk_size"] = int(request.decode_chunk_size)  # AnimateDiff SD 1.x decodes in chunks too
        if request.mode == "vid2vid":
            video = [frame.convert("RGB").resize(size) for frame in request.init_video]
            common.pop("height"), common.pop("width")
            output = pipe(video=video, strength=float(request.strength), **text, **common)
        elif request.mode == "img2vid":
            assert request.init_image is not None
            output = pipe(image=request.init_image.convert("RGB").resize(size), num_frames=int(request.frames),
                          **text, **common)
        else:
            output = pipe(num_frames=int(request.frames), **text, **common)
    frames = output.frames[0]
    return [frame if isinstance(frame, Image.Image) else Image.fromarray(frame) for frame in frames]


def _call_parameters(pipe: Any) -> set[str]:
    import inspect

    return set(inspect.signature(type(pipe).__call__).parameters)
