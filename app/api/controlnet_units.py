"""ControlNet units in the sd-webui-controlnet extension's wire shape, and its model list.

Clients (``webuiapi.ControlNetUnit``, ComfyUI bridges, Photoshop plug-ins) send units as
``alwayson_scripts: {"controlnet": {"args": [unit, ...]}}``, each a dict with the extension's names. They become
``ControlNetUnit`` fields of the one request type, so ControlNet runs through the same queue as everything else.
Names the extension accepts for the same thing (control mode 0/1/2 or its label, resize mode 0/1/2, its old
"Inner Fit" / "Outer Fit" labels, ``input_image`` for ``image``) are accepted here too; anything else is a 4xx
naming ``alwayson_scripts.controlnet.args[i].<field>``.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter

from app.api.errors import ApiError
from app.api.images import decode_image
from app.api.requests_common import ServicesDep
from modules.controlnet.registry import NO_MODEL
from modules.controlnet.units import CONTROL_MODES, RESIZE_MODE_ALIASES, RESIZE_MODES, ControlNetUnit

SCRIPT_NAME = "controlnet"
WIRE_PREFIX = "alwayson_scripts.controlnet.args"

router = APIRouter(prefix="/controlnet", tags=["ControlNet"])


@router.get("/model_list")
def model_list(services: ServicesDep, update: bool = True) -> dict[str, list[str]]:
    """Installed ControlNets as ``"name [hash]"`` titles (the folder is read afresh on each call)."""
    return {"model_list": [info.title for info in services.engine.controlnets.list()]}


@router.get("/settings")
def settings() -> dict[str, int]:
    """How many units the UI offers per tab (clients size their unit lists by it)."""
    from app.ui.controlnet_panel import UNIT_COUNT

    return {"control_net_unit_count": UNIT_COUNT}


def is_controlnet_script(title: Any) -> bool:
    return str(title).strip().lower() == SCRIPT_NAME


def units_from_wire(entry: Any) -> tuple[ControlNetUnit, ...]:
    """The enabled units of an ``alwayson_scripts.controlnet`` entry (``{"args": [...]}`` or the list itself)."""
    args = entry.get("args", []) if isinstance(entry, dict) else entry
    if args is None:
        return ()
    if not isinstance(args, (list, tuple)):
        raise ApiError(422, "args must be a list of ControlNet units", WIRE_PREFIX)
    units = []
    for index, item in enumerate(args):
        field = f"{WIRE_PREFIX}[{index}]"
        if not isinstance(item, dict):
            raise ApiError(422, "each ControlNet unit is an object with the extension's fields (module, model, "
                                "image, weight, ...)", field)
        unit = _unit(item, field)
        if unit is not None:
            units.append(unit)
    return tuple(units)


def _unit(item: dict[str, Any], field: str) -> ControlNetUnit | None:
    if not _flag(item.get("enabled", True), f"{field}.enabled"):
        return None
    model = item.get("model")
    module = str(item.get("module") or "none")
    image = _image(item, field)
    if model is None or str(model).strip().lower() in NO_MODEL:
        if image is None and module.lower() == "none":
            return None  # an empty unit, as clients send to fill the extension's slots
        raise ApiError(422, "name the ControlNet model to use (GET /controlnet/model_list)", f"{field}.model")
    values: dict[str, Any] = {"model": str(model), "module": module, "image": image}
    for name in ("weight", "guidance_start", "guidance_end", "threshold_a", "threshold_b"):
        if item.get(name) is not None:
            values[name] = _number(item[name], f"{field}.{name}")
    if item.get("processor_res") is not None:
        values["processor_res"] = int(_number(item["processor_res"], f"{field}.processor_res"))
    if item.get("pixel_perfect") is not None:
        values["pixel_perfect"] = _flag(item["pixel_perfect"], f"{field}.pixel_perfect")
    mode = item.get("control_mode", item.get("guessmode"))
    if mode is not None:
        values["control_mode"] = _choice(mode, CONTROL_MODES, {}, f"{field}.control_mode")
    if item.get("resize_mode") is not None:
        values["resize_mode"] = _choice(item["resize_mode"], RESIZE_MODES, RESIZE_MODE_ALIASES,
                                        f"{field}.resize_mode")
    if item.get("hr_option") is not None:
        values["hr_option"] = str(item["hr_option"])
    return ControlNetUnit(**values)


def _image(item: dict[str, Any], field: str):
    """``image`` (raw base64, a data URL, or ``{"image": ..., "mask": ...}``) or the older ``input_image``."""
    for name in ("image", "input_image"):
        value = item.get(name)
        if isinstance(value, dict):
            value = value.get("image")
            name = f"{name}.image"
        if value:
            if not isinstance(value, str):
                raise ApiError(422, "must be a base64 image", f"{field}.{name}")
            return decode_image(value, f"{field}.{name}")
    return None


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(422, "must be a number", field)
    try:
        number = float(value)
    except ValueError:
        raise ApiError(422, f"must be a number, got {value!r}", field) from None
    if not math.isfinite(number):
        raise ApiError(422, "must be a finite number", field)
    return number


def _flag(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ApiError(422, "must be true or false", field)


def _choice(value: Any, choices: tuple[str, ...], aliases: dict[str, str], field: str) -> str:
    """An index into ``choices`` or one of its labels (case-insensitive), or an alias of one."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return choices[value]
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and int(text) < len(choices):
            return choices[int(text)]
        for label in (*choices, *aliases):
            if label.lower() == text.lower():
                return aliases.get(label, label)
    raise ApiError(422, f"unknown value {value!r}; expected one of {', '.join(choices)} (or 0-{len(choices) - 1})",
                   field)
