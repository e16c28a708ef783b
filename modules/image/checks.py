"""The image kind's checks before a job is queued: request fields, then what needs the studio's models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modules.errors import RequestError
from modules.image.request import GenerationRequest, Limits, check_size, validate_request

if TYPE_CHECKING:
    from modules.extensions.manager import ExtensionManager
    from modules.image.generation import Engine


def check_request(request: GenerationRequest, engine: Engine, extensions: ExtensionManager | None = None) -> None:
    """Everything the worker would refuse before its first step, checked at submission so the caller hears it at
    once: the image kind's validation, the same for every dialect and the UI (the worker checks again as it
    runs, for what changed in between, e.g. a model file removed)."""
    from modules.image.samplers import UnknownSamplerError, UnknownScheduleError, resolve_sampler
    from modules.models.registry import UnknownModelError
    from modules.upscaling.names import LATENT_UPSCALERS

    validate_request(request, engine.limits)
    try:
        resolve_sampler(request.sampler_name, request.scheduler)
    except UnknownSamplerError as error:
        raise RequestError("sampler_name", str(error)) from None
    except UnknownScheduleError as error:
        raise RequestError("scheduler", str(error)) from None
    info = engine.resolve_model(request.model)
    try:
        prompt, negative = engine.styles.apply(request.prompt, request.negative_prompt, request.styles)
    except ValueError as error:
        raise RequestError("styles", str(error)) from None
    from modules.image import flow
    from modules.models.families import FLUX_KONTEXT_DEFAULTS, checkpoint_defaults

    kontext = checkpoint_defaults(info.family, info.path) == FLUX_KONTEXT_DEFAULTS
    flow.check_request(request, info.family, resolve_sampler(request.sampler_name, request.scheduler), prompt,
                       negative, engine, edits_images=kontext)
    _check_loras(prompt, negative, engine)
    if request.vae:
        try:
            engine.registry.find_vae(request.vae)
        except UnknownModelError as error:
            raise RequestError("vae", str(error)) from None
    if request.hires is not None and request.hires.upscaler not in LATENT_UPSCALERS:
        try:
            engine.upscalers.find(request.hires.upscaler)
        except RequestError as error:
            raise RequestError("hires.upscaler", f"{error.message}; or a latent mode: {', '.join(LATENT_UPSCALERS)}"
                               ) from None
    if request.sd_upscale is not None:
        try:
            engine.upscalers.find(request.sd_upscale.upscaler)
        except RequestError as error:
            raise RequestError("sd_upscale.upscaler", error.message) from None
    _check_canvas(request, engine.limits)
    _check_controlnets(request, engine)
    if request.safety not in (None, "off") and engine.safety is not None:
        engine.safety.require("safety")  # never run a filtered request without a checker: refuse it now
    if extensions is not None:
        extensions.check_request(request)


def _check_loras(prompt: str, negative: str, engine: Engine) -> None:
    """Every ``<lora:name:w>`` of the styled prompts names a LoRA file: refused at submit, naming the prompt
    field and the name, rather than failing (or, worse, running without it) once queued."""
    from modules.image.extra_networks import split_loras

    for field_name, text in (("prompt", prompt), ("negative_prompt", negative)):
        for use in split_loras(text, field_name)[1]:
            engine.networks.find_lora(use.name, field_name)


def _check_controlnets(request: GenerationRequest, engine: Engine) -> None:
    """Each unit names an installed ControlNet and has an image to read (its own, or img2img's input image); the
    preprocessor name is known; a ControlNet whose files say it is for another family (Flux, SD3, SD) than the
    checkpoint is refused. Loading the model waits for the worker: it may take seconds."""
    from modules.controlnet.registry import UnknownControlNetError
    from modules.controlnet.transformer_controlnets import family_refusal
    from modules.controlnet.units import NONE_MODULE

    checkpoint_family = engine.resolve_model(request.model).family if request.controlnet else None
    for index, unit in enumerate(request.controlnet):
        try:
            info = engine.controlnets.find(unit.model)
        except UnknownControlNetError as error:
            raise RequestError(f"controlnet[{index}].model", str(error)) from None
        refusal = family_refusal(info, checkpoint_family)
        if refusal:
            raise RequestError(f"controlnet[{index}].model", refusal)
        if unit.image is None and not (request.uses_init_image and request.init_image is not None):
            raise RequestError(f"controlnet[{index}].image", "give the unit a control image (txt2img has no input "
                                                             "image to fall back on)")
        if unit.module.strip().lower() not in (NONE_MODULE, ""):
            from modules.controlnet import preprocessors

            preprocessors.check_runnable(unit.module, f"controlnet[{index}].module", engine.controlnets.models_dir)


def _check_canvas(request: GenerationRequest, limits: Limits) -> None:
    """The size an init image or an outpaint canvas implies must fit the limits too (the engine checks it later)."""
    image = request.init_image
    if not request.uses_init_image or image is None:
        return
    if request.task == "outpaint":
        pad = request.outpaint
        width, height = image.width + pad.left + pad.right, image.height + pad.top + pad.bottom
        check_size(width + (-width) % 8, height + (-height) % 8, limits)
    elif not (request.width and request.height):
        check_size(max(8, image.width // 8 * 8), max(8, image.height // 8 * 8), limits)
