"""Which upscalers exist: the built-in resizers, then the model files in A1111's upscaler folders.

Listing looks at file names only, never inside files, so it is cheap enough to redo on every call: users drop
models into the folders while the app runs, and A1111 clients poll ``/sdapi/v1/upscalers``. What a file really is
(its architecture and exact scale) is learnt when it is loaded (see ``loading``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from modules.errors import RequestError

NONE = "None"
LANCZOS = "Lanczos"
NEAREST = "Nearest"
BUILTIN_UPSCALERS: tuple[str, ...] = (NONE, LANCZOS, NEAREST)
# A1111's folders for spandrel-loadable upscalers, in the order their models are listed.
UPSCALER_FOLDERS: tuple[str, ...] = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT")
MODEL_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".safetensors")
_LISTED_IN_ERRORS = 20

# "4x-UltraSharp", "4x_NMKD-Siax", "2xNomosUni" / "RealESRGAN_x4plus", "DAT_x3", "HAT-L_SRx4", "realesr-general-x4v3"
_SCALE_BEFORE_X = re.compile(r"(?:^|[^a-z0-9])([1-8])x", re.IGNORECASE)
_SCALE_AFTER_X = re.compile(r"(?:^|[^a-z0-9]|sr)x([1-8])(?![0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class UpscalerInfo:
    """One choice in the upscaler list.

    ``name`` is what users and A1111 clients pick it by (a file's stem, like A1111). ``path`` is None for the
    built-ins. ``folder`` is the A1111 folder the file sits in (the upscaler family A1111 would report as the
    scaler). ``scale`` is read from the file name ("4x-UltraSharp", "RealESRGAN_x2plus") and None when the name
    does not say; the loaded model knows its true scale. ``display_path`` ("models/ESRGAN/x.pth") names the file in
    messages without exposing where the models folder lives on the server.
    """

    name: str
    path: Path | None = None
    folder: str | None = None
    scale: int | None = None
    display_path: str | None = None

    @property
    def builtin(self) -> bool:
        """A resize done by Pillow, with no model file to load."""
        return self.path is None


def scale_from_name(stem: str) -> int | None:
    """The scale a model's file name announces, following the community's naming habits; None if it says none."""
    match = _SCALE_BEFORE_X.search(stem) or _SCALE_AFTER_X.search(stem)
    return int(match.group(1)) if match else None


def _model_files(folder: Path) -> list[Path]:
    """Model files under ``folder``, recursively, skipping hidden files and folders and symlink loops."""
    found: list[Path] = []
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=str.casefold)
        for file in sorted(files, key=str.casefold):
            if not file.startswith(".") and file.lower().endswith(MODEL_SUFFIXES):
                found.append(Path(root) / file)
    return found


class UpscalerRegistry:
    """The upscalers a models folder offers: "None", "Lanczos", "Nearest", then every model file, folder by folder."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    def list(self) -> tuple[UpscalerInfo, ...]:
        """Scan the folders again (names only) and return every upscaler, built-ins first.

        Two files with the same stem (say ``ESRGAN/x.pth`` and ``DAT/x.safetensors``) cannot share a name, so the
        first keeps the stem and later ones are named by their path under the models folder.
        """
        infos = [UpscalerInfo(name) for name in BUILTIN_UPSCALERS]
        taken = {name.casefold() for name in BUILTIN_UPSCALERS}
        for folder in UPSCALER_FOLDERS:
            directory = self.models_dir / folder
            if not directory.is_dir():
                continue
            for path in _model_files(directory):
                relative = path.relative_to(self.models_dir).as_posix()
                name = path.stem if path.stem.casefold() not in taken else relative
                taken.add(name.casefold())
                infos.append(UpscalerInfo(name=name, path=path, folder=folder, scale=scale_from_name(path.stem),
                                          display_path=f"{self.models_dir.name}/{relative}"))
        return tuple(infos)

    def names(self) -> list[str]:
        """Every upscaler's name, in list order (what a dropdown offers)."""
        return [info.name for info in self.list()]

    def find(self, name: str) -> UpscalerInfo:
        """The upscaler called ``name`` (any case), or whose file name or path under the models folder is ``name``.

        Raises ``RequestError`` on the "upscaler" field, listing what is available, so a typo in an API call gets
        an answer the user can act on.
        """
        infos = self.list()
        wanted = str(name).strip().replace("\\", "/").casefold()
        for matches in (
            lambda info: info.name.casefold() == wanted,
            lambda info: info.path is not None and info.path.name.casefold() == wanted,
            lambda info: info.path is not None and info.path.relative_to(self.models_dir).as_posix().casefold()
            == wanted,
        ):
            for info in infos:
                if matches(info):
                    return info
        names = [info.name for info in infos]
        shown = ", ".join(names[:_LISTED_IN_ERRORS])
        if len(names) > _LISTED_IN_ERRORS:
            shown += f" and {len(names) - _LISTED_IN_ERRORS} more"
        raise RequestError("upscaler", f"unknown upscaler {name!r}; available: {shown}")
