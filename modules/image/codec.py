"""The image kind's record codec: a ``GenerationRequest`` and its result as plain JSON and back, so a queued job
survives a restart and a finished one keeps its images.

The request's images cannot live in JSON, so they are written as PNG files beside it (lossless: the pixels a job
runs on after a restart are the pixels it was submitted with) and the dict names the files. Decoding ignores keys
it does not know, so a database written by an older or newer version still loads.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from modules.controlnet.units import ControlNetUnit
from modules.errors import RequestError
from modules.image.masks import storable
from modules.image.request import GenerationRequest, HiresFix, Outpaint, SdUpscale
from modules.image.results import GeneratedImage, GenerationResult, GenerationSummary

IMAGE_FIELDS = {"init_image": "init.png", "mask": "mask.png"}
_FIELDS = tuple(item.name for item in dataclasses.fields(GenerationRequest))


def request_to_dict(request: GenerationRequest, image_dir: Path) -> dict[str, Any]:
    """A JSON-safe dict of every field; images are written into ``image_dir`` and named by file."""
    data: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(request, name)
        if name in IMAGE_FIELDS:
            data[name] = write_saved_image(value, Path(image_dir), IMAGE_FIELDS[name]) if value is not None else None
        elif name == "controlnet":
            data[name] = [_unit_to_dict(unit, Path(image_dir), number) for number, unit in enumerate(value)]
        elif isinstance(value, (HiresFix, Outpaint, SdUpscale)):
            data[name] = dataclasses.asdict(value)
        elif isinstance(value, tuple):
            data[name] = list(value)
        else:
            data[name] = value
    return data


def request_from_dict(data: dict[str, Any], image_dir: Path, *, strict: bool = True) -> GenerationRequest:
    """The request ``data`` describes. A missing or unreadable image is a ``RequestError`` naming its field
    (``strict``, for a job about to run) or is left out (not strict, for showing a finished job)."""
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in _FIELDS:
            continue
        if name in IMAGE_FIELDS:
            value = read_saved_image(value, Path(image_dir), name, strict) if value else None
        elif name == "hires":
            value = _known(HiresFix, value) if isinstance(value, dict) else None
        elif name == "sd_upscale":
            value = _known(SdUpscale, value) if isinstance(value, dict) else None
        elif name == "outpaint":
            value = _known(Outpaint, value) if isinstance(value, dict) else Outpaint()
        elif name == "styles":
            value = tuple(value or ())
        elif name == "controlnet":
            value = tuple(_unit_from_dict(item, Path(image_dir), number, strict)
                          for number, item in enumerate(value or ()) if isinstance(item, dict))
        values[name] = value
    return GenerationRequest(**values)


def _unit_to_dict(unit: ControlNetUnit, folder: Path, number: int) -> dict[str, Any]:
    data = {item.name: getattr(unit, item.name) for item in dataclasses.fields(ControlNetUnit) if item.name != "image"}
    data["image"] = write_saved_image(unit.image, folder, f"control-{number}.png") if unit.image is not None else None
    return data


def _unit_from_dict(data: dict[str, Any], folder: Path, number: int, strict: bool) -> ControlNetUnit:
    image = data.get("image")
    values = {key: value for key, value in data.items() if key != "image"}
    unit = _known(ControlNetUnit, values)
    if image:
        unit = unit.replace(image=read_saved_image(image, folder, f"controlnet[{number}].image", strict))
    return unit


def _known(kind: type, data: dict[str, Any]) -> Any:
    names = {item.name for item in dataclasses.fields(kind)}
    return kind(**{key: value for key, value in data.items() if key in names})


def write_saved_image(image: Image.Image, folder: Path, name: str, infotext: str | None = None) -> str:
    """Atomically write a lossless copy into a job's folder and return its name (what the record keeps); a mode
    PNG cannot hold becomes RGB(A) so the write never fails."""
    from modules.image.infotext import save_image_with_infotext

    image = storable(image, "png")
    folder.mkdir(parents=True, exist_ok=True)
    save_image_with_infotext(image, folder / name, infotext, "png")
    return name


def read_saved_image(name: str, folder: Path, field_name: str, strict: bool) -> Image.Image | None:
    """An image a record names, read from the job's folder (never outside it). Missing or damaged: a
    ``RequestError`` naming ``field_name`` when ``strict`` (a job about to run), else None."""
    path = (folder / name).resolve()
    try:
        if os.path.commonpath([path, folder.resolve()]) != str(folder.resolve()):
            raise OSError(f"{name} is outside {folder}")
        return open_image(path)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        if strict:
            raise RequestError(field_name, f"the saved image {path} cannot be read: {error}") from None
        return None


def open_image(path: Path) -> Image.Image:
    """Read and decode an image now, so a damaged file is found here (and reported) rather than later in whoever
    uses the pixels, and no file handle stays open behind the returned image."""
    with Image.open(Path(path)) as image:
        image.load()
    return image


# -- results -----------------------------------------------------------------------------------------------------
def result_to_dict(result: GenerationResult, folder: Path) -> dict[str, Any]:
    """Results as JSON: an image saved to the outputs folder is referenced there; one that was not (the A1111
    API does not save by default) is written to the job's folder, so it can still be fetched later."""
    images = [_image_entry(item, folder, f"{index:03d}-{item.seed}.png") for index, item in enumerate(result.images)]
    grid = _image_entry(result.grid, folder, "grid.png") if result.grid is not None else None
    summary = dataclasses.asdict(result.summary)
    summary["styles"] = list(result.summary.styles)
    return {"images": images, "grid": grid, "summary": summary, "interrupted": result.interrupted,
            "generated_images": result.generated_images, "leading_grids": result.leading_grids,
            "extension_info": result.extension_info}


def result_from_dict(data: dict[str, Any], folder: Path) -> tuple[GenerationResult, list[str]]:
    """The stored result with its images read back, and a line per image file that is missing or damaged (such
    an image is left out rather than failing the whole job). Rows written before results were typed carry
    A1111's ``info`` dict instead of ``summary``; its fields have the same names."""
    problems: list[str] = []
    images = [image for entry in data.get("images") or [] if (image := _load_image(entry, folder, problems))]
    grid = _load_image(data["grid"], folder, problems) if data.get("grid") else None
    summary_data = dict(data.get("summary") or data.get("info") or {})
    summary_data["styles"] = tuple(summary_data.get("styles") or ())
    generated = data.get("generated_images")
    return GenerationResult(
        images=images, grid=grid, summary=_known(GenerationSummary, summary_data),
        interrupted=bool(data.get("interrupted")), generated_images=int(generated) if generated is not None else None,
        leading_grids=int(data.get("leading_grids") or 0), extension_info=dict(data.get("extension_info") or {}),
    ), problems


def _image_entry(item: GeneratedImage, folder: Path, name: str) -> dict[str, Any]:
    from modules.image.infotext import save_image_with_infotext

    if item.path is not None:
        file = str(Path(item.path).resolve())
    else:
        folder.mkdir(parents=True, exist_ok=True)
        save_image_with_infotext(item.image, folder / name, item.infotext, "png")
        file = name  # relative: the job's folder, wherever the data folder has moved
    entry = {"file": file, "seed": item.seed, "subseed": item.subseed, "prompt": item.prompt,
             "negative_prompt": item.negative_prompt, "infotext": item.infotext}
    if item.nsfw is not None:
        entry["nsfw"] = item.nsfw
    return entry


def _load_image(entry: dict[str, Any], folder: Path, problems: list[str]) -> GeneratedImage | None:
    path = Path(str(entry.get("file", "")))
    path = path if path.is_absolute() else folder / path
    try:
        image = open_image(path)
    except (OSError, ValueError) as error:  # missing, unreadable or not an image (PIL raises OSError subclasses)
        problems.append(f"{path}: {'missing' if not path.exists() else error}")
        return None
    return GeneratedImage(image=image, seed=int(entry.get("seed", -1)), subseed=int(entry.get("subseed", -1)),
                          prompt=str(entry.get("prompt", "")), negative_prompt=str(entry.get("negative_prompt", "")),
                          infotext=str(entry.get("infotext", "")), path=path,
                          nsfw=bool(entry["nsfw"]) if entry.get("nsfw") is not None else None)
