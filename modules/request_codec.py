"""A ``GenerationRequest`` as plain JSON and back, so a queued job survives a restart.

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

from modules.request import GenerationRequest, HiresFix, Outpaint, RequestError

IMAGE_FIELDS = {"init_image": "init.png", "mask": "mask.png"}
_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")
_FIELDS = tuple(item.name for item in dataclasses.fields(GenerationRequest))


def request_to_dict(request: GenerationRequest, image_dir: Path) -> dict[str, Any]:
    """A JSON-safe dict of every field; images are written into ``image_dir`` and named by file."""
    data: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(request, name)
        if name in IMAGE_FIELDS:
            data[name] = _write_image(value, Path(image_dir), IMAGE_FIELDS[name]) if value is not None else None
        elif isinstance(value, (HiresFix, Outpaint)):
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
            value = _read_image(value, Path(image_dir), name, strict) if value else None
        elif name == "hires":
            value = _known(HiresFix, value) if isinstance(value, dict) else None
        elif name == "outpaint":
            value = _known(Outpaint, value) if isinstance(value, dict) else Outpaint()
        elif name == "styles":
            value = tuple(value or ())
        values[name] = value
    return GenerationRequest(**values)


def _known(kind: type, data: dict[str, Any]) -> Any:
    names = {item.name for item in dataclasses.fields(kind)}
    return kind(**{key: value for key, value in data.items() if key in names})


def _write_image(image: Image.Image, folder: Path, name: str) -> str:
    """Atomically write a lossless copy; a mode PNG cannot hold becomes RGB(A) so the write never fails."""
    from modules.infotext import save_image_with_infotext

    if image.mode not in _PNG_MODES:
        has_alpha = "A" in image.mode or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    folder.mkdir(parents=True, exist_ok=True)
    save_image_with_infotext(image, folder / name, None, "png")
    return name


def _read_image(name: str, folder: Path, field_name: str, strict: bool) -> Image.Image | None:
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
