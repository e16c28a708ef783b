"""One ControlNet unit: the part of a request that steers a generation with a control image.

A unit is a field of ``GenerationRequest`` (``controlnet``, a tuple of units), so it travels through the queue,
is persisted with the job and is applied for that request only. The names and choices follow the
sd-webui-controlnet extension, whose API shape clients such as ``webuiapi.ControlNetUnit`` already send.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from PIL import Image

from modules.errors import RequestError, check_range

CONTROL_MODES: tuple[str, ...] = ("Balanced", "My prompt is more important", "ControlNet is more important")
RESIZE_MODES: tuple[str, ...] = ("Just Resize", "Crop and Resize", "Resize and Fill")
# Older clients of the extension sent these names for the same three modes.
RESIZE_MODE_ALIASES: dict[str, str] = {
    "Envelope (Outer Fit)": "Crop and Resize",
    "Scale to Fit (Inner Fit)": "Resize and Fill",
}
HR_OPTIONS: tuple[str, ...] = ("Both", "Low res only", "High res only")
NONE_MODULE = "none"


@dataclass(frozen=True, eq=False)
class ControlNetUnit:
    """A control image, how to preprocess it, which ControlNet reads it and how strongly, over which steps."""

    model: str  # a ControlNet title / name / hash from models/ControlNet
    image: Image.Image | None = None  # None in img2img / inpaint: the init image is used, as the extension does
    module: str = NONE_MODULE  # the preprocessor; "none" = the image already is a control image
    weight: float = 1.0
    guidance_start: float = 0.0  # fraction of the steps where the unit starts acting
    guidance_end: float = 1.0  # ... and where it stops
    control_mode: str = "Balanced"
    resize_mode: str = "Crop and Resize"
    processor_res: int = 512
    threshold_a: float = -1.0  # preprocessor-specific (canny: low threshold); -1 = the preprocessor's default
    threshold_b: float = -1.0
    pixel_perfect: bool = False  # preprocess at the generation size instead of processor_res
    hr_option: str = "Both"  # with the hires fix: which passes the unit steers

    def replace(self, **changes) -> ControlNetUnit:
        return dataclasses.replace(self, **changes)


def check_unit(unit: ControlNetUnit, index: int) -> None:
    """Refuse what no model can run, naming the unit's field (``controlnet[0].weight``)."""
    prefix = f"controlnet[{index}]"
    if not unit.model or not str(unit.model).strip():
        raise RequestError(f"{prefix}.model", "name the ControlNet model to use (see /controlnet/model_list)")
    check_range(f"{prefix}.weight", unit.weight, 0.0, 2.0)
    check_range(f"{prefix}.guidance_start", unit.guidance_start, 0.0, 1.0)
    check_range(f"{prefix}.guidance_end", unit.guidance_end, 0.0, 1.0)
    if unit.guidance_start >= unit.guidance_end:
        raise RequestError(f"{prefix}.guidance_end", f"must be after guidance_start ({unit.guidance_start:g}), "
                                                     f"got {unit.guidance_end:g}")
    if unit.control_mode not in CONTROL_MODES:
        raise RequestError(f"{prefix}.control_mode", f"unknown control mode {unit.control_mode!r}; expected one of "
                                                     f"{', '.join(CONTROL_MODES)} (or 0, 1, 2)")
    if unit.resize_mode not in RESIZE_MODES:
        raise RequestError(f"{prefix}.resize_mode", f"unknown resize mode {unit.resize_mode!r}; expected one of "
                                                    f"{', '.join(RESIZE_MODES)} (or 0, 1, 2)")
    if unit.hr_option not in HR_OPTIONS:
        raise RequestError(f"{prefix}.hr_option", f"unknown option {unit.hr_option!r}; expected one of "
                                                  f"{', '.join(HR_OPTIONS)}")
    check_range(f"{prefix}.processor_res", unit.processor_res, 64, 2048)
