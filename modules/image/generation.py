"""The one generation function: ``generate(request, engine, control) -> GenerationResult``.

Every task (txt2img with optional hires fix, img2img, inpaint, outpaint) runs here, in numbered steps like a
diffusers pipeline's ``__call__``. The request is never mutated; everything per-request (model, sampler,
styles, seeds) is resolved from it and from the services in ``Engine``, which launch.py builds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageChops

from modules.errors import RequestError
from modules.image import ops as image_ops
from modules.image.noise import batch_seeds, generators, initial_latents, resolve_seed
from modules.image.request import GenerationRequest, Limits, check_size, validate_request
from modules.image.results import GeneratedImage, GenerationResult, GenerationSummary
from modules.jobs.control import JobControl, Progress
from modules.models.families import is_flow_family
from modules.safety.screen import screen_image
from modules.upscaling.names import LATENT_UPSCALERS

if TYPE_CHECKING:
    from modules.controlnet.apply import ControlPlan
    from modules.controlnet.loading import ControlNetModels
    from modules.controlnet.registry import ControlNetRegistry
    from modules.image.previews import LatentPreviewer
    from modules.image.styles import StyleStore
    from modules.models.networks import NetworkRegistry
    from modules.models.pipelines import LoadedModel, PipelineManager
    from modules.models.registry import CheckpointInfo, ModelRegistry, VaeInfo
    from modules.runtime.outputs import OutputStore
    from modules.safety.checker import SafetyCheckers
    from modules.upscaling.loading import UpscalerModels
    from modules.upscaling.registry import UpscalerRegistry


@dataclass
class Engine:
    """The services one generation needs, passed explicitly (no module-level state)."""

    registry: ModelRegistry
    upscalers: UpscalerRegistry
    upscaler_models: UpscalerModels  # the upscaler networks loaded on the worker (hires fix and Upscale share them)
    pipelines: PipelineManager
    styles: StyleStore
    store: OutputStore
    limits: Limits
    device_source: Callable[[], str] | str = "cpu"  # a callable decides on first use (torch is slow to import)
    version: str = "0.1.0"
    networks: NetworkRegistry | None = None  # LoRAs and embeddings; None = the registry's models folder
    controlnets: ControlNetRegistry | None = None  # None = the registry's models folder
    controlnet_models: ControlNetModels | None = None  # ControlNets loaded on the worker (a few are kept)
    safety: SafetyCheckers | None = None  # the NSFW checker in models/safety_checker, loaded when a job asks
    previewer: LatentPreviewer | None = None  # cheap live previews, one fitted map per autoencoder

    def __post_init__(self) -> None:
        if self.networks is None:
            from modules.models.networks import NetworkRegistry

            self.networks = NetworkRegistry(self.registry.models_dir)
        if self.controlnets is None:
            from modules.controlnet.registry import ControlNetRegistry

            self.controlnets = ControlNetRegistry(self.registry.models_dir)
        if self.controlnet_models is None:
            from modules.controlnet.loading import ControlNetModels

            self.controlnet_models = ControlNetModels()
        if self.safety is None:
            from modules.safety.checker import SafetyCheckers

            self.safety = SafetyCheckers(self.registry.models_dir, lambda: self.device)
        if self.previewer is None:
            from modules.image.previews import LatentPreviewer

            self.previewer = LatentPreviewer()

    @property
    def device(self) -> str:
        """The torch device jobs run on ("cpu", "cuda:0")."""
        return self.device_source() if callable(self.device_source) else self.device_source

    def resolve_model(self, query: str | None) -> CheckpointInfo:
        """The request's checkpoint, else the first one installed (the studio's default is filled in at submission)."""
        from modules.models.registry import UnknownModelError

        try:
            if query:
                return self.registry.find(query)
        except UnknownModelError as error:
            raise RequestError("model", str(error)) from None
        models = self.registry.list()
        if not models:
            raise RequestError("model", f"no checkpoint found; put one in {self.registry.checkpoint_roots[0]}")
        return models[0]


def generate(request: GenerationRequest, engine: Engine, control: JobControl | None = None) -> GenerationResult:
    """Run one request to completion (or until interrupted) and save its images."""
    control = control or JobControl()
    request, sampler, make_scheduler, prompt, negative = _checked(request, engine)
    if request.sd_upscale is not None:
        return _sd_upscale(request, engine, control)
    run, info = _prepared_run(request, engine, control, sampler, make_scheduler, prompt, negative)

    # 3. seeds
    total = request.batch_size * request.n_iter
    seed = resolve_seed(request.seed)
    subseed = resolve_seed(request.subseed) if request.subseed_strength > 0 else request.subseed
    all_seeds = batch_seeds(seed, total)
    all_subseeds = batch_seeds(subseed, total) if request.subseed_strength > 0 else [subseed] * total

    images: list[GeneratedImage] = []
    progress = Progress(job_count=request.n_iter, steps=run.total_steps)
    # 4. LoRAs and embeddings the prompts name, applied for this job only (removed however it ends)
    from modules.image.prompt_conditioning import UnetScope
    from modules.models.networks import NetworkLoadError, applied_networks

    try:
        with applied_networks(run.loaded.base, engine.networks, run.loras, (run.encode_prompt, run.encode_negative)
                              ) as applied:
            run.network_params = applied.params
            run.encode_prompt, run.encode_negative = applied.rewrite(run.encode_prompt), applied.rewrite(
                run.encode_negative)
            with UnetScope() as run.unet_scope:  # prompt editing / AND wrap the UNet for this job only
                interrupted = _batches(request, engine, run, control, progress, all_seeds, all_subseeds, images)
    except NetworkLoadError as error:
        raise RequestError("prompt", str(error)) from None

    # 6. grid, summary
    grid = _grid(images, request, engine) if request.make_grid and len(images) > 1 else None
    summary = _summary(request, info, run.prompt, run.negative, run.width, run.height, run.sampler, engine.version,
                       run.vae)
    return GenerationResult(images=images, grid=grid, summary=summary, interrupted=interrupted)

def _checked(request: GenerationRequest, engine: Engine) -> tuple[GenerationRequest, Any, Any, str, str]:
    """1. check inputs that need no model; steps / CFG left unset take the model family's defaults. Returns the
    request with them, its sampler, the scheduler factory, and the prompts after styles."""
    from modules.image import flow
    from modules.image.samplers import UnknownSamplerError, UnknownScheduleError, make_scheduler, resolve_sampler

    validate_request(request, engine.limits)
    request = flow.with_model_defaults(request, engine)
    try:
        sampler = resolve_sampler(request.sampler_name, request.scheduler)
    except UnknownSamplerError as error:
        raise RequestError("sampler_name", str(error)) from None
    except UnknownScheduleError as error:
        raise RequestError("scheduler", str(error)) from None
    try:
        prompt, negative = engine.styles.apply(request.prompt, request.negative_prompt, request.styles)
    except ValueError as error:
        raise RequestError("styles", str(error)) from None
    return request, sampler, make_scheduler, prompt, negative


def _prepared_run(request: GenerationRequest, engine: Engine, control: JobControl, sampler: Any,
                  make_scheduler: Any, prompt: str, negative: str) -> tuple[_Run, CheckpointInfo]:
    """2. the model (loaded, saying so), what its family cannot run, the working size and ControlNet units."""
    from modules.image import flow

    info = engine.resolve_model(request.model)
    if info.title not in engine.pipelines.loaded_titles():  # seconds to minutes: say so rather than "step 0"
        control.report(Progress(job_count=request.n_iter, steps=request.steps, text=f"Loading model {info.name}"))
    loaded = engine.pipelines.get(info)
    flow.check_request(request, loaded.family, sampler, prompt, negative, engine,  # SD3 / Flux: what they can't run
                       edits_images=loaded.edits_images)
    if is_flow_family(loaded.family):
        make_scheduler = flow.make_scheduler
    width, height = _working_size(request, loaded, engine.limits)
    controls = _plan_controls(request, engine, loaded, width, height)
    run = _Run(request, engine, loaded, control, prompt, negative, width, height, sampler, make_scheduler, controls)
    return run, info

def _batches(request: GenerationRequest, engine: Engine, run: _Run, control: JobControl, progress: Progress,
             all_seeds: list[int], all_subseeds: list[int], images: list[GeneratedImage]) -> bool:
    """5. one pipeline call per batch, each image saved as soon as it exists; True when interrupted."""
    prompt, negative = run.prompt, run.negative
    interrupted = False
    for batch in range(request.n_iter):
        if control.interrupted.is_set():
            interrupted = True
            break
        control.skipped.clear()
        progress.job_no, progress.step = batch, 0
        progress.text = f"Batch {batch + 1} of {request.n_iter}"
        control.report(progress)
        first = batch * request.batch_size
        seeds = all_seeds[first : first + request.batch_size]
        subseeds = all_subseeds[first : first + request.batch_size]
        pictures = run.batch(seeds, subseeds, progress)
        for index, picture in enumerate(pictures):
            infotext = run.infotext(seeds[index], subseeds[index])
            item = GeneratedImage(picture, seeds[index], subseeds[index], prompt, negative, infotext)
            item = screen_image(item, request.safety, engine.safety)  # the NSFW filter, before anything saves it
            # Saved as soon as it exists, so a later failing batch or a crash loses nothing already made.
            images.append(_saved(engine.store, request.task, item, request.output_format) if request.save_images
                          else item)
        interrupted = interrupted or control.interrupted.is_set()
    return interrupted


class _Run:
    """The per-request state of one ``generate`` call: resolved settings and the task's pipeline call."""

    def __init__(self, request, engine, loaded, control, prompt, negative, width, height, sampler, make_scheduler,
                 controls):
        self.request: GenerationRequest = request
        self.controls: ControlPlan = controls
        self.engine: Engine = engine
        self.loaded: LoadedModel = loaded
        self.control: JobControl = control
        from modules.image.extra_networks import extract_loras

        self.prompt, self.negative = prompt, negative  # as written (with <lora:...>): what the infotext keeps
        self.encode_prompt, self.encode_negative, self.loras = extract_loras(prompt, negative)
        self.network_params: dict[str, str] = {}  # "Lora hashes", "TI hashes" of what was applied
        self.unet_scope = None  # a prompt_conditioning.UnetScope while the job's batches run
        self.width, self.height = width, height
        self.sampler = sampler
        self._make_scheduler = make_scheduler
        self._base_scheduler_config = loaded.scheduler_config
        self.vae = _resolve_vae(engine, loaded, request.vae)
        self.hires_size = request.hires.target_size(width, height) if self._hires_enabled else None
        if self.hires_size:
            check_size(*self.hires_size, engine.limits)

    @property
    def variation_applies(self) -> bool:
        """Variation seeds shape the initial noise of a txt2img first pass; other tasks draw noise inside the
        pipeline, so there they are not applied (and not written to the infotext)."""
        return (self.request.task == "txt2img" and not self.loaded.is_inpainting_model
                and not is_flow_family(self.loaded.family))

    @property
    def _hires_enabled(self) -> bool:
        # An inpainting checkpoint's txt2img is one inpaint pass over a blank canvas: no second pass there.
        return self.request.task == "txt2img" and self.request.hires is not None and not self.loaded.is_inpainting_model

    @property
    def total_steps(self) -> int:
        request = self.request
        steps = request.steps
        if request.uses_init_image and not self.loaded.edits_images:  # Kontext edits over every step
            steps = _effective_steps(request.steps, request.denoising_strength)
        if self.hires_size:
            hires_steps = request.hires.steps or request.steps
            steps += _effective_steps(hires_steps, request.hires.denoising_strength)
        return steps

    # -- the pipeline call ---------------------------------------------------------------------------------
    def _pipe(self, kind: str, second_pass: bool = False) -> Any:
        pipe = self.engine.pipelines.pipeline(self.loaded, kind, vae=self.vae,
                                              controlnet=self.controls.controlnet(second_pass))
        pipe.scheduler = self._make_scheduler(self.sampler, self._base_scheduler_config)
        return pipe

    def _common(self, pipe: Any, seeds: list[int], progress: Progress, step_offset: int, steps: int) -> dict:
        from modules.image import flow
        from modules.image.prompt_conditioning import conditioning_kwargs
        from modules.image.samplers import custom_sigmas

        if is_flow_family(self.loaded.family):  # plain prompts, the model's own flow schedule
            kwargs = flow.prompt_arguments(self.loaded.family, self.encode_prompt, self.encode_negative)
        else:
            # A hires second pass (the only call with an offset) continues the first pass's prompt-editing timeline.
            kwargs = conditioning_kwargs(pipe, self.encode_prompt, self.encode_negative,
                                         clip_skip=self.request.clip_skip, steps=steps,
                                         first_pass_steps=self.request.steps if step_offset else None,
                                         images=len(seeds), scope=self.unet_scope)
            kwargs.update(custom_sigmas(self.sampler, pipe.scheduler, steps, sdxl=self.loaded.family == "sdxl"))
        kwargs.update(
            num_inference_steps=steps,
            guidance_scale=self.request.cfg_scale,
            num_images_per_prompt=len(seeds),
            generator=generators(seeds, self.engine.device, self.request.noise_on_device),
            callback_on_step_end=self._callback(progress, step_offset),
        )
        if self.loaded.edits_images:  # Kontext would rescale any size to its ~1 MP area: keep the working size
            kwargs["max_area"] = self.width * self.height
        return kwargs

    def _callback(self, progress: Progress, offset: int):
        control = self.control

        def on_step_end(pipe: Any, step: int, _timestep: Any, tensors: dict) -> dict:
            if control.interrupted.is_set() or control.skipped.is_set():
                pipe._interrupt = True
            progress.step = offset + step + 1
            interval = control.preview_interval
            if interval and (progress.step % interval == 0) and "latents" in tensors:
                previewer = None if control.preview_method == "full" else self.engine.previewer
                progress.offer_preview(partial(_preview, pipe, tensors["latents"], previewer))
            control.report(progress)
            return {}

        return on_step_end

    def batch(self, seeds: list[int], subseeds: list[int], progress: Progress) -> list[Image.Image]:
        task = self.request.task
        if task == "txt2img":
            if self.loaded.is_inpainting_model:
                return self._txt2img_with_inpainting_model(seeds, progress)
            return self._txt2img(seeds, subseeds, progress)
        if task == "img2img":
            image = image_ops.resize_image(image_ops.to_rgb(self.request.init_image), self.width, self.height,
                                           self.request.resize_mode)
            return self._img2img(image, seeds, progress, self.request.steps, self.request.denoising_strength, 0)
        return self._inpaint(seeds, progress)

    def _txt2img(self, seeds: list[int], subseeds: list[int], progress: Progress) -> list[Image.Image]:
        import torch

        request = self.request
        pipe = self._pipe("txt2img")
        # SD3 / Flux draw their noise from the per-image generators (Flux packs it into tokens itself).
        latents = None if is_flow_family(self.loaded.family) else initial_latents(
            seeds,
            (pipe.unet.config.in_channels, self.height // pipe.vae_scale_factor, self.width // pipe.vae_scale_factor),
            device=self.engine.device,
            dtype=pipe.unet.dtype,
            subseeds=subseeds,
            subseed_strength=request.subseed_strength,
            on_device=request.noise_on_device,
        )
        kwargs = self._common(pipe, seeds, progress, 0, request.steps)
        flow_family = is_flow_family(self.loaded.family)
        controls = self.controls.call_arguments((self.width, self.height), "control_image" if flow_family else "image")
        if controls and self.loaded.family == "flux":
            latents = self._flux_noise(pipe, seeds)
        kwargs.update(controls)
        output_type = "latent" if self.hires_size else "pil"
        with torch.inference_mode(), self.controls.modes(len(seeds)):
            result = pipe(height=self.height, width=self.width, latents=latents, output_type=output_type, **kwargs)
        if not self.hires_size or self.control.interrupted.is_set() or self.control.skipped.is_set():
            return result.images if output_type == "pil" else _decode(pipe, result.images)
        return self._hires(pipe, result.images, seeds, progress)

    def _flux_noise(self, pipe: Any, seeds: list[int]) -> Any:
        """The packed initial noise Flux's own txt2img pipeline draws from these seeds. Flux's ControlNet pipeline
        encodes an InstantX-style unit's control image by sampling the VAE with the job's generators before it
        draws the noise; handing it the noise drawn first keeps a unit from changing the seed's picture by
        itself (at weight 0 the image is the unit-less one)."""
        dtype = pipe.text_encoder_2.dtype if getattr(pipe, "text_encoder_2", None) is not None else pipe.dtype
        noise, _ids = pipe.prepare_latents(len(seeds), pipe.transformer.config.in_channels // 4, self.height,
                                           self.width, dtype, pipe._execution_device,
                                           generators(seeds, self.engine.device, self.request.noise_on_device))
        return noise

    def _hires(self, pipe: Any, latents: Any, seeds: list[int], progress: Progress) -> list[Image.Image]:

        hires = self.request.hires
        width, height = self.hires_size
        if hires.upscaler in LATENT_UPSCALERS:
            scale = pipe.vae_scale_factor
            source = cover_latents(latents.float(), height // scale, width // scale,
                                   LATENT_UPSCALERS[hires.upscaler]).to(latents.dtype)
        else:
            source = [self._upscale_cover(image, (width, height)) for image in _decode(pipe, latents)]
        steps = hires.steps or self.request.steps
        return self._img2img(source, seeds, progress, steps, hires.denoising_strength, self.request.steps,
                             size=(width, height), second_pass=True)

    def _upscale_cover(self, image: Image.Image, size: tuple[int, int]) -> Image.Image:
        """A pixel upscaler (built-in or a model from the upscaler folders) to cover ``size``, then a centre crop:
        A1111 never stretches a hires target of another aspect ratio."""
        from PIL import ImageOps

        from modules.upscaling import LANCZOS, NONE, upscale

        try:
            info = self.engine.upscalers.find(self.request.hires.upscaler)
            if info.builtin and info.name == NONE:  # "None" still has to reach the size: plain Lanczos
                info = self.engine.upscalers.find(LANCZOS)
            scale = max(size[0] / image.width, size[1] / image.height)
            covering = (max(size[0], round(image.width * scale)), max(size[1], round(image.height * scale)))
            upscaled = upscale(image, info, models=self.engine.upscaler_models, size=covering)
        except RequestError as error:
            raise RequestError("hires.upscaler", error.message) from None
        return ImageOps.fit(upscaled, size, Image.Resampling.LANCZOS)

    def _img2img(self, image: Any, seeds: list[int], progress: Progress, steps: int, strength: float, offset: int,
                 size: tuple[int, int] | None = None, second_pass: bool = False) -> list[Image.Image]:
        import torch

        pipe = self._pipe("img2img", second_pass)
        kwargs = self._common(pipe, seeds, progress, offset, steps)
        kwargs.update(self.controls.call_arguments(size or (self.width, self.height), "control_image", second_pass))
        extra = {"width": size[0], "height": size[1]} if size and self.loaded.family == "sdxl" else {}
        if is_flow_family(self.loaded.family):  # their img2img pipelines otherwise draw at the family's 1024 px
            extra = {"width": (size or (self.width, self.height))[0], "height": (size or (self.width, self.height))[1]}
        if self.loaded.edits_images:
            # Kontext sees the image as extra tokens and draws the edit from noise over every step (no strength);
            # it is edited at the working size (the init image's own unless asked), not snapped to Kontext's
            # preferred ~1 MP sizes, so the output has the size the request says.
            with torch.inference_mode():
                return pipe(image=image, output_type="pil", _auto_resize=False, **extra, **kwargs).images
        with torch.inference_mode(), self.controls.modes(len(seeds), second_pass):
            return pipe(image=image, strength=max(strength, 1.0 / steps), output_type="pil", **extra, **kwargs).images

    def _txt2img_with_inpainting_model(self, seeds: list[int], progress: Progress) -> list[Image.Image]:
        """A 9-channel inpainting checkpoint makes a new picture by inpainting a blank canvas entirely."""
        import torch

        pipe = self._pipe("inpaint")
        blank = Image.new("RGB", (self.width, self.height), (127, 127, 127))
        mask = Image.new("L", (self.width, self.height), 255)
        kwargs = self._common(pipe, seeds, progress, 0, self.request.steps)
        kwargs.update(self.controls.call_arguments((self.width, self.height), "control_image"))
        with torch.inference_mode(), self.controls.modes(len(seeds)):
            return pipe(image=blank, mask_image=mask, strength=1.0, height=self.height, width=self.width,
                        output_type="pil", **kwargs).images

    def _inpaint(self, seeds: list[int], progress: Progress) -> list[Image.Image]:
        """Inpaint and outpaint: prepare canvas and mask, repaint, then put every unmasked pixel back."""
        import torch

        request = self.request
        if request.task == "outpaint":
            pad = request.outpaint
            canvas, mask = image_ops.outpaint_canvas(image_ops.to_rgb(request.init_image),
                                                     pad.left, pad.right, pad.top, pad.bottom)
            original = canvas
        else:
            source = request.mask if request.mask is not None else image_ops.mask_from_image(request.init_image)
            mask = image_ops.prepare_mask(source, request.inpainting_mask_invert)
            original = image_ops.to_rgb(request.init_image)
            if original.size != (self.width, self.height):
                original = image_ops.resize_image(original, self.width, self.height, request.resize_mode)
                mask = image_ops.resize_image(mask, self.width, self.height, request.resize_mode)
                mask = mask.point(lambda v: 255 if v >= 128 else 0)
            canvas = original
        if mask.getbbox() is None:
            raise RequestError("mask", "the mask is empty: nothing to repaint")
        # Feather inward only, so a pixel the user left unmasked is never touched.
        soft = ImageChops.darker(image_ops.blur_mask(mask, request.mask_blur), mask)
        crop = None
        if request.inpaint_full_res and request.task == "inpaint":
            crop = image_ops.masked_region(mask, request.inpaint_full_res_padding, self.width, self.height)
            work_image = canvas.crop(crop.box).resize((self.width, self.height), image_ops.RESAMPLE)
            work_mask = mask.crop(crop.box).resize((self.width, self.height), Image.Resampling.NEAREST)
        else:
            work_image, work_mask = canvas, mask
        fill = 0 if request.task == "outpaint" and request.inpainting_fill == 1 else request.inpainting_fill
        work_image = image_ops.fill_masked(work_image, work_mask, fill, seeds[0])
        pipe = self._pipe("inpaint")
        kwargs = self._common(pipe, seeds, progress, 0, request.steps)
        kwargs.update(self.controls.call_arguments(work_image.size, "control_image", crop=crop.box if crop else None,
                                                   full_size=(self.width, self.height)))
        with torch.inference_mode(), self.controls.modes(len(seeds)):
            outputs = pipe(image=work_image, mask_image=work_mask, strength=max(request.denoising_strength,
                           1.0 / request.steps), height=work_image.height, width=work_image.width,
                           output_type="pil", **kwargs).images
        results = []
        for output in outputs:
            if crop is not None:
                patch = output.resize((crop.right - crop.left, crop.bottom - crop.top), image_ops.RESAMPLE)
                placed = original.copy()
                placed.paste(patch, (crop.left, crop.top))
                output = placed
            results.append(image_ops.composite_unmasked(original, output, soft))
        return results

    # -- infotext --------------------------------------------------------------------------------------------
    def infotext(self, seed: int, subseed: int) -> str:
        from modules.image.infotext import format_infotext

        request, info = self.request, self.loaded.info
        params: dict[str, Any] = {
            "Steps": request.steps,
            "Sampler": self.sampler.sampler,
            "Schedule type": None if self.sampler.schedule == "Automatic" else self.sampler.schedule,
            "CFG scale": request.cfg_scale,
            "Seed": seed,
            "Size": f"{self.width}x{self.height}",  # the first pass; hires adds its own keys
            "Model hash": info.short_hash,
            "Model": info.name,
            "VAE hash": self.vae.short_hash if self.vae else None,
            "VAE": self.vae.filename if self.vae else None,
        }
        if request.subseed_strength > 0 and self.variation_applies:
            params["Variation seed"] = subseed
            params["Variation seed strength"] = request.subseed_strength
        if request.uses_init_image and not self.loaded.edits_images:  # a Kontext edit has no strength
            params["Denoising strength"] = request.denoising_strength
        if request.clip_skip > 1:
            params["Clip skip"] = request.clip_skip
        if self.hires_size:
            hires = request.hires
            params["Denoising strength"] = hires.denoising_strength
            if hires.resize_x or hires.resize_y:
                params["Hires resize"] = f"{self.hires_size[0]}x{self.hires_size[1]}"
            else:
                params["Hires upscale"] = hires.scale
            if hires.steps:
                params["Hires steps"] = hires.steps
            params["Hires upscaler"] = hires.upscaler
        if request.task in ("inpaint", "outpaint"):
            params["Mask blur"] = request.mask_blur
        if request.task == "inpaint":
            params["Inpaint area"] = "Only masked" if request.inpaint_full_res else None
            params["Masked area padding"] = request.inpaint_full_res_padding if request.inpaint_full_res else None
        if request.task == "outpaint":
            pad = request.outpaint
            params["Outpaint"] = f"{pad.left},{pad.right},{pad.top},{pad.bottom}"
        params.update(self.network_params)
        params.update(self.controls.infotext(second_pass_runs=bool(self.hires_size)))
        if request.styles:
            params["Styles array"] = list(request.styles)
        params["Version"] = f"sfumato {self.engine.version}"
        return format_infotext(self.prompt, self.negative, params)


def _plan_controls(request: GenerationRequest, engine: Engine, loaded: LoadedModel, width: int,
                   height: int) -> ControlPlan:
    """The request's ControlNet units, loaded and preprocessed before any step (a bad unit fails the job now)."""
    from modules.controlnet.apply import ControlPlan, plan_controls

    if not request.controlnet:
        return ControlPlan()
    init = image_ops.to_rgb(request.init_image) if request.uses_init_image and request.init_image else None
    from modules.models.families import denoiser

    return plan_controls(request.controlnet, registry=engine.controlnets, models=engine.controlnet_models,
                         denoiser=denoiser(loaded.base), device=loaded.base._execution_device, init_image=init,
                         size=(width, height))


def _resolve_vae(engine: Engine, loaded: LoadedModel, query: str | None) -> VaeInfo | None:
    """The request's VAE (None: the checkpoint's own), loaded now so that a bad one fails before any step runs."""
    from modules.models.checkpoints import CheckpointLoadError
    from modules.models.registry import UnknownModelError

    try:
        vae = engine.registry.find_vae(query)
        if vae is not None:
            engine.pipelines.vae(loaded, vae)
    except (UnknownModelError, CheckpointLoadError) as error:
        raise RequestError("vae", str(error)) from None
    return vae


def _effective_steps(steps: int, strength: float) -> int:
    """How many steps an img2img pass really runs (diffusers skips the first 1 - strength of the schedule)."""
    return max(1, min(steps, int(steps * strength)))


def _working_size(request: GenerationRequest, loaded: LoadedModel, limits: Limits) -> tuple[int, int]:
    """Explicit size, else the init image's size (multiples of 8), else the model family's default.

    Outpaint always works on the enlarged canvas, whatever width and height say, and that canvas is checked
    against the limits like any size."""
    if request.width and request.height and request.task != "outpaint":
        return request.width, request.height
    if request.uses_init_image and request.init_image is not None:
        width, height = request.init_image.size
        if request.task == "outpaint":
            pad = request.outpaint
            width, height = width + pad.left + pad.right, height + pad.top + pad.bottom
            width, height = width + (-width) % 8, height + (-height) % 8
        else:
            width, height = max(8, width // 8 * 8), max(8, height // 8 * 8)
    else:
        size = loaded.default_size
        width = request.width or size
        height = request.height or size
    check_size(width, height, limits)
    return width, height


def cover_latents(latents: Any, height: int, width: int, mode: str) -> Any:
    """Latents resized to cover ``height`` x ``width`` (latent units) and centre-cropped: the hires fix keeps the
    picture's proportions when the target's aspect ratio differs, as A1111 does."""
    import math

    import torch

    source_h, source_w = latents.shape[-2:]
    scale = max(height / source_h, width / source_w)
    cover_h, cover_w = max(height, math.ceil(source_h * scale)), max(width, math.ceil(source_w * scale))
    resized = torch.nn.functional.interpolate(latents, size=(cover_h, cover_w), mode=mode)
    top, left = (cover_h - height) // 2, (cover_w - width) // 2
    return resized[..., top:top + height, left:left + width]


def _decode(pipe: Any, latents: Any) -> list[Image.Image]:
    """Latents -> images; a VAE marked ``force_upcast`` (SDXL's overflows in fp16 into black/NaN images) decodes in
    float32 and goes back to its dtype afterwards."""
    import torch

    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
    if upcast:
        vae.to(torch.float32)
    try:
        with torch.inference_mode():
            decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    finally:
        if upcast:
            vae.to(torch.float16)
    return pipe.image_processor.postprocess(decoded.float(), output_type="pil")


def _preview(pipe: Any, latents: Any, previewer: LatentPreviewer | None = None) -> Image.Image | None:
    """The first image of the batch as it stands, for the live preview: approximated from the latents by
    ``previewer`` (cheap), else decoded by the VAE (exact, as costly as a few steps)."""
    try:
        if previewer is not None:
            return previewer.preview(pipe, latents, decode=_decode)
        return _decode(pipe, latents[:1, :4])[0]
    except Exception:  # a preview must never break a generation
        return None


def _saved(store: OutputStore, task: str, item: GeneratedImage, fmt: str) -> GeneratedImage:
    from dataclasses import replace

    path = store.save(item.image, task, item.infotext, item.seed, item.prompt, fmt)
    return replace(item, path=path)


def _grid(images: list[GeneratedImage], request: GenerationRequest, engine: Engine) -> GeneratedImage:
    """A1111's grid: columns = ceil(sqrt(n)), images in order, saved beside the task's folder."""
    count = len(images)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    width, height = images[0].image.size
    grid = Image.new("RGB", (cols * width, rows * height), (0, 0, 0))
    for index, item in enumerate(images):
        grid.paste(item.image.resize((width, height)), ((index % cols) * width, (index // cols) * height))
    first = images[0]
    path = None
    if request.save_images:
        path = engine.store.save(grid, f"{request.task}-grids", first.infotext, first.seed, first.prompt,
                                 request.output_format, suffix="-grid")
    return GeneratedImage(grid, first.seed, first.subseed, first.prompt, first.negative_prompt, first.infotext, path)


def _sd_upscale(request: GenerationRequest, engine: Engine, control: JobControl) -> GenerationResult:
    """SD upscale: the upscaler enlarges, then each tile is an ordinary img2img generation (this function)."""
    from modules.image.sd_upscale import sd_upscale
    from modules.upscaling import upscale

    settings = request.sd_upscale
    try:
        upscaler = engine.upscalers.find(settings.upscaler)
    except RequestError as error:
        raise RequestError("sd_upscale.upscaler", error.message) from None
    size = engine.pipelines.get(engine.resolve_model(request.model)).default_size
    tile = (request.width or size, request.height or size)

    def enlarge(image: Image.Image, target: tuple[int, int]) -> Image.Image:
        return upscale(image, upscaler, models=engine.upscaler_models, size=target,
                       max_pixels=engine.limits.max_upscale_pixels, max_side=engine.limits.max_upscale_side)

    def save(item: GeneratedImage) -> GeneratedImage:
        item = screen_image(item, request.safety, engine.safety)  # the whole picture: its tiles ran unfiltered
        return _saved(engine.store, request.task, item, request.output_format) if request.save_images else item

    return sd_upscale(request, tile, enlarge, lambda sub, sub_control: generate(sub, engine, sub_control), control,
                      save)


def _summary(request, info, prompt, negative, width, height, sampler, version, vae=None) -> GenerationSummary:
    """What ran, after styles, the model's default size and the sampler's resolution."""
    return GenerationSummary(
        prompt=prompt, negative_prompt=negative, width=width, height=height, sampler_name=sampler.sampler,
        scheduler=sampler.schedule, cfg_scale=request.cfg_scale, steps=request.steps, batch_size=request.batch_size,
        n_iter=request.n_iter, subseed_strength=request.subseed_strength, sd_model_name=info.name,
        sd_model_hash=info.short_hash, sd_vae_name=vae.filename if vae else None,
        sd_vae_hash=vae.short_hash if vae else None,
        denoising_strength=request.denoising_strength if request.uses_init_image else None,
        clip_skip=request.clip_skip, styles=tuple(request.styles), job_timestamp=time.strftime("%Y%m%d%H%M%S"),
        version=version,
    )
