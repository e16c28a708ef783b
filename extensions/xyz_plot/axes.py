"""Axis types of the X/Y/Z plot and A1111's value syntax.

Users, their saved infotexts and their API scripts name axes the AUTOMATIC1111 way ("CFG Scale", "Checkpoint name")
and write values in its syntax (``1-5``, ``1-10 (+2)``, ``1-10 [5]``, comma lists), so those are the interface.
An axis type knows how to read its values and how to put one value into a request; any numeric request field
(``mask_blur``) is an axis too, by its field name.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import StringIO
from typing import Any

from modules.extensions.api import GenerationRequest, RequestError

MAX_VALUES = 1000  # per axis: a typo like "1-100000" is refused before anything is built
Apply = Callable[[GenerationRequest, Any, Sequence[Any]], GenerationRequest]


@dataclass(frozen=True)
class AxisType:
    """One kind of axis: how its values are read and applied, and what its legend shows."""

    label: str  # A1111's label, shown in legends and infotexts
    kind: type  # int, float or str: how a value is read
    apply: Apply
    cost: float = 0.0  # what changing it costs (a checkpoint load): the costliest axis is the outer loop
    catalog: str | None = None  # the studio catalog its values must be in ("sampler", "checkpoint", ...)
    show_label: bool = True  # legend "Steps: 20"; False for self-explanatory values ("Euler a")
    aliases: tuple[str, ...] = ()

    def legend(self, value: Any) -> str:
        text = format_value(value)
        if self.label == "Checkpoint name":
            text = text.replace("\\", "/").rsplit("/", 1)[-1]
        return f"{self.label}: {text}" if self.show_label else text


def format_value(value: Any) -> str:
    """A value as a legend shows it: floats without float noise, whole floats without ".0"."""
    if isinstance(value, float):
        value = round(value, 8)
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


# -- applying a value -------------------------------------------------------------------------------------------


def set_field(name: str) -> Apply:
    def apply(request: GenerationRequest, value: Any, values: Sequence[Any]) -> GenerationRequest:
        return request.replace(**{name: value})

    return apply


def set_hires(name: str) -> Apply:
    """A field of the hires fix; the request must have it on (checked when the plot is planned)."""

    def apply(request: GenerationRequest, value: Any, values: Sequence[Any]) -> GenerationRequest:
        return request.replace(hires=dataclasses.replace(request.hires, **{name: value}))

    return apply


def apply_denoising(request: GenerationRequest, value: float, values: Sequence[Any]) -> GenerationRequest:
    """As in A1111: a txt2img with hires fix denoises in its second pass, anything else in its only pass."""
    if request.task == "txt2img" and request.hires is not None:
        return request.replace(hires=dataclasses.replace(request.hires, denoising_strength=value))
    return request.replace(denoising_strength=value)


def apply_prompt_sr(request: GenerationRequest, value: str, values: Sequence[Any]) -> GenerationRequest:
    """Prompt S/R: the first value is searched for, and each value replaces it in both prompts."""
    search = values[0]
    return request.replace(prompt=request.prompt.replace(search, value),
                           negative_prompt=request.negative_prompt.replace(search, value))


def apply_vae(request: GenerationRequest, value: str, values: Sequence[Any]) -> GenerationRequest:
    return request.replace(vae=None if value.strip().lower() in ("automatic", "auto", "none", "") else value)


def apply_styles(request: GenerationRequest, value: str, values: Sequence[Any]) -> GenerationRequest:
    added = tuple(name.strip() for name in value.split(",") if name.strip())
    return request.replace(styles=(*request.styles, *added))


def apply_size(request: GenerationRequest, value: str, values: Sequence[Any]) -> GenerationRequest:
    width, height = parse_size(value)
    return request.replace(width=width, height=height)


def parse_size(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
    if match is None:
        raise ValueError(f"{value!r} is not a size like 512x768")
    return int(match.group(1)), int(match.group(2))


AXIS_TYPES: tuple[AxisType, ...] = (
    AxisType("Seed", int, set_field("seed")),
    AxisType("Var. seed", int, set_field("subseed"), aliases=("Variation seed", "subseed")),
    AxisType("Var. strength", float, set_field("subseed_strength"),
             aliases=("Variation seed strength", "Variation strength", "subseed_strength")),
    AxisType("Steps", int, set_field("steps")),
    AxisType("Hires steps", int, set_hires("steps"), aliases=("hires.steps",)),
    AxisType("CFG Scale", float, set_field("cfg_scale"), aliases=("CFG", "cfg_scale")),
    AxisType("Prompt S/R", str, apply_prompt_sr, show_label=False, aliases=("Prompt SR", "Prompt search/replace")),
    AxisType("Sampler", str, set_field("sampler_name"), catalog="sampler", show_label=False,
             aliases=("sampler_name",)),
    AxisType("Checkpoint name", str, set_field("model"), cost=1.0, catalog="checkpoint", show_label=False,
             aliases=("Checkpoint", "Model", "sd_model_checkpoint")),
    AxisType("Schedule type", str, set_field("scheduler"), catalog="schedule",
             aliases=("Schedule", "Scheduler")),
    AxisType("Clip skip", int, set_field("clip_skip"), aliases=("clip_skip",)),
    AxisType("Denoising", float, apply_denoising, aliases=("Denoising strength", "denoising_strength")),
    AxisType("Hires upscaler", str, set_hires("upscaler"), catalog="upscaler", aliases=("hires.upscaler",)),
    AxisType("VAE", str, apply_vae, cost=0.7, catalog="vae", aliases=("SD VAE", "sd_vae")),
    AxisType("Styles", str, apply_styles),
    AxisType("Size", str, apply_size),
    AxisType("Width", int, set_field("width")),
    AxisType("Height", int, set_field("height")),
)

# A1111 1.10's axis list, in order (scripts/xyz_grid.py ``axis_options``). Its clients send an axis as an index into
# the list their tab shows: txt2img leaves out the img2img-only axes and img2img the txt2img-only ones.
A1111_AXES: tuple[tuple[str, str | None], ...] = (
    ("Nothing", None), ("Seed", None), ("Var. seed", None), ("Var. strength", None), ("Steps", None),
    ("Hires steps", "txt2img"), ("CFG Scale", None), ("Image CFG Scale", "img2img"), ("Prompt S/R", None),
    ("Prompt order", None), ("Sampler", "txt2img"), ("Hires sampler", "txt2img"), ("Sampler", "img2img"),
    ("Checkpoint name", None), ("Negative Guidance minimum sigma", None), ("Sigma Churn", None), ("Sigma min", None),
    ("Sigma max", None), ("Sigma noise", None), ("Schedule type", None), ("Schedule min sigma", None),
    ("Schedule max sigma", None), ("Schedule rho", None), ("Beta schedule alpha", None), ("Beta schedule beta", None),
    ("Eta", None), ("Clip skip", None), ("Denoising", None), ("Initial noise multiplier", None),
    ("Extra noise", None), ("Hires upscaler", "txt2img"), ("Cond. Image Mask Weight", "img2img"), ("VAE", None),
    ("Styles", None), ("UniPC Order", None), ("Face restore", None), ("Token merging ratio", None),
    ("Token merging ratio high-res", None), ("Always discard next-to-last sigma", None),
    ("SGM noise multiplier", None), ("Refiner checkpoint", None), ("Refiner switch at", None), ("RNG source", None),
    ("FP8 mode", None), ("Size", None),
)
NOTHING = ("", "nothing", "none")


def a1111_labels(task: str) -> list[str]:
    """The axis list an A1111 tab shows: its indexes are what A1111 clients send as ``x_type``."""
    tab = "txt2img" if task == "txt2img" else "img2img"
    return [label for label, only in A1111_AXES if only in (None, tab)]


def _key(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name).strip().casefold()


def _numeric_fields() -> dict[str, type]:
    """Request fields that hold a plain number: each is an axis by its field name."""
    kinds = {"int": int, "float": float}
    return {f.name: kinds[f.type] for f in dataclasses.fields(GenerationRequest) if f.type in kinds}


def field_axis(name: str, kind: type) -> AxisType:
    return AxisType(name, kind, set_field(name))


def axis_names(task: str = "txt2img") -> list[str]:
    """What a user can pick, in the order a dropdown shows them (A1111's first, then Sfumato's own)."""
    supported = {_key(axis.label) for axis in AXIS_TYPES}
    names = ["Nothing"] + [label for label in a1111_labels(task)[1:] if _key(label) in supported]
    return names + [axis.label for axis in AXIS_TYPES if axis.label not in names]


def find_axis(setting: Any, task: str, field: str) -> AxisType | None:
    """The axis a setting names: an A1111 index, an A1111 label, an alias or a numeric request field; None for
    "Nothing". Raises ``RequestError`` (on ``field``) for anything else, listing what is available."""
    if isinstance(setting, bool):
        raise RequestError(field, f"expected an axis name or A1111 index, got {setting!r}")
    if setting is None:
        return None
    if isinstance(setting, int) or (isinstance(setting, str) and setting.strip().isdigit()):
        labels = a1111_labels(task)
        index = int(setting)
        if not 0 <= index < len(labels):
            raise RequestError(field, f"A1111 axis index {index} is out of range (0-{len(labels) - 1} for {task})")
        setting = labels[index]
    if not isinstance(setting, str):
        raise RequestError(field, f"expected an axis name or A1111 index, got {setting!r}")
    wanted = _key(setting)
    if wanted in NOTHING:
        return None
    for axis in AXIS_TYPES:
        if wanted in {_key(axis.label), *(_key(alias) for alias in axis.aliases)}:
            return axis
    fields = _numeric_fields()
    for name, kind in fields.items():
        if wanted == _key(name):
            return field_axis(name, kind)
    if wanted in {_key(label) for label, _only in A1111_AXES}:
        raise RequestError(field, f"the A1111 axis {setting!r} has no equivalent in Sfumato; available: "
                                  + ", ".join(axis_names(task)))
    raise RequestError(field, f"unknown axis type {setting!r}; available: {', '.join(axis_names(task))}, "
                              f"or a numeric request field ({', '.join(fields)})")


# -- reading values ---------------------------------------------------------------------------------------------

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_RANGE = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})\s*(?:\(\s*({_NUMBER})\s*\)|\[\s*(\d+)\s*\])?\s*")


def split_values(text: str) -> list[str]:
    """A1111's comma list: CSV, so a value with a comma can be quoted ("a, b"), each value stripped."""
    rows = csv.reader(StringIO(text), skipinitialspace=True)
    return [value.strip() for row in rows for value in row]


def parse_values(setting: Any, kind: type, field: str) -> list[Any]:
    """The values of one axis from its text (``"1-10 (+2), 15"``) or a list; raises ``RequestError`` on ``field``."""
    if isinstance(setting, str):
        tokens: list[Any] = split_values(setting)
    elif isinstance(setting, (list, tuple)):
        tokens = [item.strip() if isinstance(item, str) else item for item in setting]
    elif isinstance(setting, (int, float)) and not isinstance(setting, bool):
        tokens = [setting]
    else:
        raise RequestError(field, f"expected values as text like '1,2,3' or a list, got {setting!r}")
    if kind is str:
        values = [str(token) for token in tokens]
    else:
        values = [value for token in tokens if token != "" for value in _numbers(token, kind, field)]
    if not values or (kind is str and not any(values)):
        raise RequestError(field, "no values given")
    if len(values) > MAX_VALUES:
        raise RequestError(field, f"{len(values)} values; an axis takes at most {MAX_VALUES}")
    return values


def _numbers(token: Any, kind: type, field: str) -> list[Any]:
    if isinstance(token, bool):
        raise RequestError(field, f"{token!r} is not a number")
    if isinstance(token, (int, float)):
        return [_typed(token, kind, field, str(token))]
    text = str(token)
    match = _RANGE.fullmatch(text)
    if match is None:
        try:
            number = float(text)
        except ValueError:
            raise RequestError(field, f"{text!r} is not a number or a range like 1-5, 1-10 (+2), 1-10 [5]") from None
        return [_typed(number, kind, field, text)]
    start, end = float(match.group(1)), float(match.group(2))
    if match.group(4) is not None:
        return _counted(start, end, int(match.group(4)), kind, field, text)
    step = float(match.group(3)) if match.group(3) is not None else (1.0 if end >= start else -1.0)
    return _stepped(start, end, step, kind, field, text)


def _typed(number: float, kind: type, field: str, text: str) -> int | float:
    if kind is int:
        if not float(number).is_integer():
            raise RequestError(field, f"{text!r}: this axis takes whole numbers")
        return int(number)
    return round(float(number), 8)


def _stepped(start: float, end: float, step: float, kind: type, field: str, text: str) -> list[Any]:
    """``a-b (+s)``: from a to b inclusive, every s (down when s is negative)."""
    if kind is int:
        for value in (start, end, step):
            _typed(value, int, field, text)
    if step == 0 or (end - start) * step < 0:
        raise RequestError(field, f"{text!r}: a step of {format_value(step)} never goes from "
                                  f"{format_value(start)} to {format_value(end)}")
    count = math.floor((end - start) / step + 1e-9) + 1
    _check_count(count, field, text)
    return [_typed(start + index * step, kind, field, text) for index in range(count)]


def _counted(start: float, end: float, count: int, kind: type, field: str, text: str) -> list[Any]:
    """``a-b [n]``: n values evenly spread from a to b (whole numbers rounded down, as A1111 does)."""
    _check_count(count, field, text)
    if kind is int:
        for value in (start, end):
            _typed(value, int, field, text)
    spread = [start] if count == 1 else [start + (end - start) * index / (count - 1) for index in range(count)]
    return [int(value) for value in spread] if kind is int else [round(value, 8) for value in spread]


def _check_count(count: int, field: str, text: str) -> None:
    if count < 1:
        raise RequestError(field, f"{text!r} gives no values")
    if count > MAX_VALUES:
        raise RequestError(field, f"{text!r} gives {count} values; an axis takes at most {MAX_VALUES}")
