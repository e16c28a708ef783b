"""What the one generation function does differently on the flow-matching families (SD3 / SD3.5, Flux.1).

The request keeps its shape; this module only decides, for these families:

* **defaults**: a request that leaves ``steps`` (0) or ``cfg_scale`` (None) unset gets the model's own
  (``families.checkpoint_defaults``): SD3 28 steps at CFG 7, Flux.1-dev 28 steps at distilled guidance 3.5,
  Flux.1-schnell 4 steps (guidance ignored). SD 1.x / 2.x / XL keep A1111's 20 steps at CFG 7.
* **sampler**: they are trained for flow matching, so "Euler" (the request's default) means diffusers'
  ``FlowMatchEulerDiscreteScheduler`` built from the model's own scheduler config (its shift); the SD samplers
  (DPM++, Euler a, ...) assume a noise-prediction model and are refused naming ``sampler_name``.
* **prompts**: the pipelines encode plain text with their own CLIP + T5 encoders; A1111's weighting syntax
  (``(word:1.2)``, ``[word]``, ``BREAK``) is not understood by them, so it is removed and the words kept (the
  infotext keeps the prompt as written). Flux has no negative prompt (it is guidance-distilled, without
  classifier-free guidance): a non-empty one is refused rather than silently dropped.
* **LoRAs** (``<lora:name:w>``) apply, loaded by diffusers' own reader of these families' LoRA formats.
* **ControlNet units** apply (Flux.1: txt2img and img2img; SD3: txt2img), "Balanced" only: the other control
  modes re-weight a UNet ControlNet's residuals by depth and lean on a classifier-free-guidance batch, neither of
  which these transformer ControlNets (one residual per block) or Flux (no CFG batch) have.
* **what does not apply yet** is refused naming the field instead of crashing mid-job: embeddings,
  prompt editing / alternation / ``AND``, hires fix, a user VAE, clip skip and inpainting; variation
  seeds are not applied (the pipelines draw their own noise from the seed), as on img2img.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modules.errors import RequestError
from modules.models import families
from modules.models.families import is_flow_family
from modules.models.registry import OWN_VAE_CHOICES

if TYPE_CHECKING:
    from modules.image.generation import Engine
    from modules.image.request import GenerationRequest
    from modules.image.samplers import SamplerChoice

FLOW_SAMPLER = "Euler"
_LABELS = {"sd3": "Stable Diffusion 3", "flux": "Flux.1"}


def with_model_defaults(request: GenerationRequest, engine: Engine) -> GenerationRequest:
    """The request with unset steps / CFG filled from its checkpoint's family; set values are never changed."""
    if request.steps and request.cfg_scale is not None:
        return request
    try:
        info = engine.resolve_model(request.model)
    except RequestError:  # no such checkpoint: the request's checks name it, after the fields they check first
        defaults = families.SD_DEFAULTS
    else:
        defaults = families.checkpoint_defaults(info.family, info.path)
    return request.replace(steps=request.steps or defaults.steps,
                           cfg_scale=defaults.cfg_scale if request.cfg_scale is None else request.cfg_scale)


def check_request(request: GenerationRequest, family: str | None, sampler: SamplerChoice, prompt: str,
                  negative: str, engine: Engine | None = None, edits_images: bool = False) -> None:
    """Refuse, naming the field, what a flow model cannot run (see the module docstring); no-op for SD models.
    ``edits_images``: the model is Flux.1 Kontext, whose img2img is an edit through its own pipeline."""
    if not is_flow_family(family):
        return
    label = _LABELS[family]
    if sampler.sampler != FLOW_SAMPLER:
        raise RequestError("sampler_name", f"{sampler.sampler!r} is a sampler for SD 1.x/2.x/XL models; "
                           f"{label} models are sampled by flow matching: use {FLOW_SAMPLER!r}")
    if sampler.schedule != "Automatic":
        raise RequestError("scheduler", f"{label} models use their own flow-matching schedule: use 'Automatic'")
    if family == "flux" and negative.strip():
        raise RequestError("negative_prompt", "Flux.1 models have no negative prompt (they are guidance-distilled, "
                                              "without classifier-free guidance): leave it empty")
    refusals = (
        (request.hires is not None and request.task == "txt2img", "hires", "hires fix"),
        (bool(request.vae) and request.vae.strip().lower() not in OWN_VAE_CHOICES, "vae", "a user VAE"),
        (request.clip_skip > 1, "clip_skip", "clip skip"),
        (request.task in ("inpaint", "outpaint"), "task", request.task),
        (request.sd_upscale is not None, "sd_upscale", "SD upscale"),
    )
    for refused, field, what in refusals:
        if refused:
            raise RequestError(field, f"{what} is not supported on {label} models yet")
    check_controlnet_units(request, family)
    if edits_images and request.controlnet and request.task != "txt2img":
        raise RequestError("controlnet", "Flux.1 Kontext edits the init image through its own pipeline, which takes "
                                         "no ControlNet (diffusers has none for Kontext): remove the units, or use "
                                         "txt2img or a Flux.1-dev model")
    from modules.image.extra_networks import extract_loras
    from modules.image.prompt_schedule import prompt_schedule, split_and

    plain, plain_negative, _loras = extract_loras(prompt, negative)  # LoRAs apply (networks.applied_loras)
    for field, text in (("prompt", plain), ("negative_prompt", plain_negative)):
        if len(split_and(text)) > 1 or len(prompt_schedule(text, 20)) > 1:
            raise RequestError(field, f"prompt editing ([a:b:0.5]), alternation ([a|b]) and AND change the "
                                      f"conditioning of an SD UNet step by step; {label} models take plain prompts")
    embeddings = engine.networks.mentioned_embeddings(prompt, negative) if engine and engine.networks else []
    if embeddings:
        names = ", ".join(item.name for item in embeddings)
        raise RequestError("prompt", f"textual-inversion embeddings ({names}) are for SD 1.x/2.x/XL text encoders, "
                                     f"not {label}'s: remove them from the prompt")


def check_controlnet_units(request: GenerationRequest, family: str) -> None:
    """What ControlNet units can do on these families: diffusers has Flux.1 ControlNet pipelines for txt2img and
    img2img, and an SD3 one for txt2img only; each unit acts in "Balanced" mode only (see the module docstring)."""
    if not request.controlnet:
        return
    label = _LABELS[family]
    if family == "sd3" and request.task != "txt2img":
        raise RequestError("controlnet", f"ControlNet units run in txt2img on {label} models (diffusers has no SD3 "
                                         f"ControlNet {request.task} pipeline): remove the units or use txt2img")
    for index, unit in enumerate(request.controlnet):
        if unit.control_mode != "Balanced":
            raise RequestError(f"controlnet[{index}].control_mode", f"{unit.control_mode!r} re-weights an SD UNet "
                               "ControlNet's residuals from its deepest block outwards and steers only the "
                               f"conditional half of a classifier-free-guidance batch; a {label} ControlNet adds one "
                               "residual per transformer block"
                               + (" and Flux.1 has no such batch" if family == "flux" else "")
                               + ": use 'Balanced'")


def plain_prompt(text: str) -> str:
    """A prompt without A1111's weighting syntax: the words of ``(word:1.2)``, ``[word]`` and ``BREAK`` parts."""
    from modules.image.prompt_parser import is_break, parse_prompt_attention

    segments, current = [], []
    for fragment in parse_prompt_attention(text):
        if is_break(fragment):
            segments.append("".join(current))
            current = []
        else:
            current.append(fragment[0])
    segments.append("".join(current))
    return " ".join(" ".join(segments).split())


def prompt_arguments(family: str, prompt: str, negative: str) -> dict[str, Any]:
    """The pipeline's prompt arguments: plain text (see ``plain_prompt``); a negative prompt only for SD3."""
    arguments: dict[str, Any] = {"prompt": plain_prompt(prompt)}
    if family == "sd3":
        arguments["negative_prompt"] = plain_prompt(negative)
    return arguments


def make_scheduler(choice: SamplerChoice, base_config: dict[str, Any]) -> Any:
    """The flow-matching Euler scheduler from the model's own scheduler config (its shift, dynamic shifting)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(base_config)
