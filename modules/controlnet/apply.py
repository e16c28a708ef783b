"""ControlNet units applied to one generation: resolved before any step runs, undone when the job ends.

``plan_controls`` turns the request's units into loaded models and preprocessed control images, failing with a
field-named ``RequestError`` (unknown model, a ControlNet for another family, an unknown preprocessor, no image)
before the job takes a step. Each pipeline pass then asks ``ControlPlan.call_arguments`` for the control images at
its own size, and runs inside ``ControlPlan.modes``, which adds the extension's control modes as forward hooks on
the ControlNets and removes them however the pass ends, so nothing outlives the job:

- "Balanced": the ControlNet's residuals as they are;
- "My prompt is more important": the residuals fade from the deepest block outwards (x 0.825 per block);
- "ControlNet is more important": faded the same way and added to the conditional half of the batch only, so
  classifier-free guidance pushes towards the control image.

On Flux.1 and SD3 the units drive diffusers' transformer ControlNets (``transformer_controlnets``) with the same
images, weights and start / end fractions, in "Balanced" mode only (``modules.image.flow`` refuses the others).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from modules.controlnet.units import NONE_MODULE, RESIZE_MODES, ControlNetUnit, check_unit
from modules.errors import RequestError

if TYPE_CHECKING:
    from modules.controlnet.loading import ControlNetModels
    from modules.controlnet.registry import ControlNetInfo, ControlNetRegistry

SOFT_INJECTION_DECAY = 0.825


@dataclass
class PlannedUnit:
    """One enabled unit, ready to run: its settings, model and preprocessed control image (full size)."""

    index: int
    unit: ControlNetUnit
    info: ControlNetInfo
    model: Any
    control: Image.Image

    def steers(self, second_pass: bool) -> bool:
        option = self.unit.hr_option
        return option == "Both" or (option == "High res only") == second_pass


@dataclass
class ControlPlan:
    """The request's units for one job."""

    units: list[PlannedUnit] = field(default_factory=list)

    def active(self, second_pass: bool = False) -> list[PlannedUnit]:
        return [planned for planned in self.units if planned.steers(second_pass)]

    def controlnet(self, second_pass: bool = False) -> Any:
        """What a ControlNet pipeline's ``controlnet`` takes: one model, a list, or None when no unit steers."""
        models = [planned.model for planned in self.active(second_pass)]
        return None if not models else models[0] if len(models) == 1 else models

    def call_arguments(self, size: tuple[int, int], image_argument: str, second_pass: bool = False,
                       crop: tuple[int, int, int, int] | None = None,
                       full_size: tuple[int, int] | None = None) -> dict[str, Any]:
        """The pipeline call's ControlNet arguments at ``size``; ``image_argument`` is ``image`` for txt2img and
        ``control_image`` where ``image`` is the init image. ``crop`` (a box in the control image fitted to
        ``full_size``) follows inpaint's "only masked" region."""
        active = self.active(second_pass)
        if not active:
            return {}
        images = [control_at(planned, size, crop, full_size) for planned in active]
        single = len(active) == 1
        arguments = {
            image_argument: images[0] if single else images,
            "controlnet_conditioning_scale": active[0].unit.weight if single else [p.unit.weight for p in active],
            "control_guidance_start": [p.unit.guidance_start for p in active],
            "control_guidance_end": [p.unit.guidance_end for p in active],
        }
        if not single and type(active[0].model).__name__ == "FluxControlNetModel":
            # One "no control type" per unit: diffusers' Flux img2img pipeline drops every unit of a several-unit
            # call when this is left unset.
            arguments["control_mode"] = [None] * len(active)
        return arguments

    @contextmanager
    def modes(self, images_per_batch: int, second_pass: bool = False) -> Iterator[None]:
        """Hooks that apply each active unit's control mode for one pipeline call, removed when it returns."""
        active = self.active(second_pass)
        handles = []
        by_model: dict[int, list[str]] = {}
        for planned in active:
            by_model.setdefault(id(planned.model), []).append(planned.unit.control_mode)
        try:
            for planned in active:
                modes = by_model.pop(id(planned.model), None)
                if modes is None or all(mode == "Balanced" for mode in modes):
                    continue
                handles.append(planned.model.register_forward_hook(mode_hook(modes, images_per_batch)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def infotext(self, second_pass_runs: bool = False) -> dict[str, str]:
        """``ControlNet N`` entries, in the extension's wording, so its readers (and ours) recognise them."""
        params = {}
        for number, planned in enumerate(self.units):
            unit = planned.unit
            parts = [f"Module: {unit.module}", f"Model: {planned.info.title}", f"Weight: {unit.weight:g}",
                     f"Resize Mode: {unit.resize_mode}", f"Processor Res: {unit.processor_res}",
                     f"Threshold A: {unit.threshold_a:g}", f"Threshold B: {unit.threshold_b:g}",
                     f"Guidance Start: {unit.guidance_start:g}", f"Guidance End: {unit.guidance_end:g}",
                     f"Pixel Perfect: {unit.pixel_perfect}", f"Control Mode: {unit.control_mode}"]
            if second_pass_runs and unit.hr_option != "Both":
                parts.append(f"Hr Option: {unit.hr_option}")
            params[f"ControlNet {number}"] = ", ".join(parts)
        return params


def mode_hook(modes: list[str], images_per_batch: int) -> Any:
    """A forward hook for one ControlNet used by ``len(modes)`` units (called in unit order each step)."""
    calls = {"count": 0}

    def hook(_module: Any, _inputs: Any, output: Any) -> Any:
        mode = modes[calls["count"] % len(modes)]
        calls["count"] += 1
        if mode == "Balanced":
            return output
        if isinstance(output, tuple):
            down, mid = output[0], output[1]
        else:
            down, mid = output.down_block_res_samples, output.mid_block_res_sample
        residuals = [*down, mid]
        depth = len(residuals) - 1
        scaled = [residual * (SOFT_INJECTION_DECAY ** float(depth - number))
                  for number, residual in enumerate(residuals)]
        if mode == "ControlNet is more important" and scaled[0].shape[0] == 2 * images_per_batch:
            # The batch is [unconditional, conditional] under classifier-free guidance: steer the second half only.
            scaled = [residual * _conditional_half(residual, images_per_batch) for residual in scaled]
        if isinstance(output, tuple):
            return (scaled[:-1], scaled[-1], *output[2:])
        output.down_block_res_samples, output.mid_block_res_sample = tuple(scaled[:-1]), scaled[-1]
        return output

    return hook


def _conditional_half(residual: Any, half: int) -> Any:
    import torch

    mark = torch.ones((2 * half,) + (1,) * (residual.ndim - 1), dtype=residual.dtype, device=residual.device)
    mark[:half] = 0
    return mark


def control_at(planned: PlannedUnit, size: tuple[int, int], crop: tuple[int, int, int, int] | None = None,
               full_size: tuple[int, int] | None = None) -> Image.Image:
    """The unit's control image fitted to ``size`` by its resize mode (a crop box first fits the full size)."""
    image = planned.control
    if crop is not None:
        image = fit(image, full_size or size, planned.unit.resize_mode).crop(crop)
        return image.resize(size, Image.Resampling.BILINEAR)
    return fit(image, size, planned.unit.resize_mode)


def fit(image: Image.Image, size: tuple[int, int], resize_mode: str) -> Image.Image:
    """The extension's resize modes for control images: stretch, cover and crop, or contain and pad with black
    (no control) rather than stretching edges, which would draw false lines."""
    if image.size == size:
        return image
    if resize_mode == RESIZE_MODES[0]:
        return image.resize(size, Image.Resampling.BILINEAR)
    if resize_mode == RESIZE_MODES[1]:
        return ImageOps.fit(image, size, Image.Resampling.BILINEAR)
    return ImageOps.pad(image, size, Image.Resampling.BILINEAR, color=(0, 0, 0))


def plan_controls(units: tuple[ControlNetUnit, ...], *, registry: ControlNetRegistry, models: ControlNetModels,
                  denoiser: Any, device: Any, init_image: Image.Image | None, size: tuple[int, int]) -> ControlPlan:
    """Resolve every unit now, so a bad one fails the job before its first step, naming the unit's field.

    ``denoiser`` is the checkpoint's UNet, or its Flux.1 / SD3 transformer."""
    from modules.controlnet.loading import ControlNetLoadError
    from modules.controlnet.registry import UnknownControlNetError

    plan = ControlPlan()
    for index, unit in enumerate(units):
        check_unit(unit, index)
        prefix = f"controlnet[{index}]"
        try:
            info = registry.find(unit.model)
        except UnknownControlNetError as error:
            raise RequestError(f"{prefix}.model", str(error)) from None
        source = unit.image if unit.image is not None else init_image
        if source is None:
            raise RequestError(f"{prefix}.image", "give the unit a control image (txt2img has no input image to "
                                                  "fall back on)")
        control = preprocess(unit, source, size, prefix, registry.models_dir)
        try:
            model = models.get(info, denoiser, device)
        except ControlNetLoadError as error:
            raise RequestError(f"{prefix}.model", str(error)) from None
        except OSError as error:
            raise RequestError(f"{prefix}.model", f"ControlNet {info.name} cannot be read: {error}") from None
        _check_runs_with(model, plan, prefix, info)
        plan.units.append(PlannedUnit(index, unit, info, model, control))
    return plan


def _check_runs_with(model: Any, plan: ControlPlan, prefix: str, info: ControlNetInfo) -> None:
    """What diffusers' Flux ControlNet pipelines cannot run: a ControlNet-Union, which needs a control type per
    unit (units do not carry one yet), and units mixing XLabs-style ControlNets (which read the control image
    through their own encoder) with InstantX-style ones (which read its VAE latents): the pipeline prepares every
    control image the way the first unit's ControlNet wants."""
    if type(model).__name__ != "FluxControlNetModel":
        return
    if model.config.get("num_mode") is not None:
        raise RequestError(f"{prefix}.model", f"ControlNet {info.name} is a Flux ControlNet-Union "
                                              f"({model.config['num_mode']} control types); choosing its control "
                                              "type is not supported yet: use a single-purpose Flux ControlNet")
    reads_pixels = model.input_hint_block is not None
    for planned in plan.units:
        if type(planned.model).__name__ == "FluxControlNetModel" and (
                planned.model.input_hint_block is not None) != reads_pixels:
            raise RequestError(f"{prefix}.model", f"ControlNet {info.name} cannot run together with "
                                                  f"{planned.info.name} (unit {planned.index}): one reads the "
                                                  "control image's pixels (XLabs style), the other its VAE latents "
                                                  "(InstantX style), and a Flux pipeline prepares all control "
                                                  "images one way")


def preprocess(unit: ControlNetUnit, image: Image.Image, size: tuple[int, int], prefix: str,
               models_dir: Any = None) -> Image.Image:
    """The unit's preprocessor on its image (RGB), at ``processor_res`` or, pixel-perfect, at the output's size."""
    from modules.image.masks import flatten

    rgb = flatten(image) if image.mode != "RGB" else image
    if unit.module.strip().lower() in (NONE_MODULE, ""):
        return rgb
    from modules.controlnet import preprocessors

    resolution = min(size) if unit.pixel_perfect else unit.processor_res
    try:
        return preprocessors.run(unit.module, rgb, resolution, unit.threshold_a, unit.threshold_b,
                                 models_dir=models_dir)
    except RequestError as error:
        raise RequestError(f"{prefix}.{error.field}", error.message) from None
