"""The ControlNet models a user has in ``models/ControlNet``: diffusers folders and single files.

Names follow the sd-webui-controlnet extension, because clients send what ``/controlnet/model_list`` showed them
or what an old infotext says: the title is ``"<name> [<hash>]"`` with the extension's 8-digit legacy hash (SHA-256
of 64 KiB read at 1 MiB; cheap even for multi-gigabyte files, so listing never waits on hashing), and a request
may name a title, a name, a file name or the hash alone. The folder is scanned on every call: it is small, and
users drop files in while the studio runs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modules.models.registry import CONTROLNET_DIR

FILE_SUFFIXES = (".safetensors", ".pth", ".ckpt", ".bin", ".pt")
FOLDER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                  "diffusion_pytorch_model.fp16.safetensors")
NO_MODEL = ("none", "")  # what clients send for "no model" (webuiapi's default is "None")
LEGACY_OFFSET, LEGACY_LENGTH = 0x100000, 0x10000


class UnknownControlNetError(ValueError):
    """No ControlNet matches what a request asked for; the message lists what is installed."""


@dataclass(frozen=True)
class ControlNetInfo:
    """One ControlNet model as the UI, the API and the infotext name it."""

    name: str  # the file name without extension, or the folder's name (as the extension lists models)
    path: Path
    kind: Literal["diffusers", "file"]
    short_hash: str

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]"

    @property
    def weights(self) -> Path:
        """The file the hash is taken from (a folder's weight file)."""
        if self.kind == "file":
            return self.path
        return next((self.path / name for name in FOLDER_WEIGHTS if (self.path / name).is_file()), self.path)


def legacy_hash(path: Path) -> str:
    """The extension's (and A1111's old) model hash: 8 hex digits of SHA-256 over 64 KiB at offset 1 MiB (or of
    the whole file when it is smaller)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(LEGACY_OFFSET if size > LEGACY_OFFSET else 0)
        digest.update(handle.read(LEGACY_LENGTH))
    return digest.hexdigest()[:8]


class ControlNetRegistry:
    """Finds ControlNet models under ``models_dir/ControlNet``."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    @property
    def root(self) -> Path:
        return self.models_dir / CONTROLNET_DIR

    def list(self) -> list[ControlNetInfo]:
        """Every ControlNet, sorted by name; folders that hold no weights and preprocessor weights are skipped."""
        found: list[ControlNetInfo] = []
        if not self.root.is_dir():
            return found
        for folder, dirnames, filenames in os.walk(self.root, followlinks=True):
            here = Path(folder)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "annotators")
            if here != self.root and (here / "config.json").is_file() and any(
                    (here / name).is_file() for name in FOLDER_WEIGHTS):
                found.append(self._info(here, "diffusers"))
                dirnames[:] = []
                continue
            for filename in filenames:
                if filename.lower().endswith(FILE_SUFFIXES) and not filename.startswith("."):
                    found.append(self._info(here / filename, "file"))
        return sorted(found, key=lambda info: info.name.lower())

    def _info(self, path: Path, kind: Literal["diffusers", "file"]) -> ControlNetInfo:
        name = path.name if kind == "diffusers" else path.stem
        info = ControlNetInfo(name, path, kind, "")
        try:
            short = legacy_hash(info.weights)
        except OSError:
            short = "00000000"
        return ControlNetInfo(name, path, kind, short)

    def _relative(self, info: ControlNetInfo) -> str:
        relative = info.path.relative_to(self.root).as_posix()
        return relative if info.kind == "diffusers" else relative.rsplit(".", 1)[0]

    def find(self, query: str) -> ControlNetInfo:
        """A title, a name (with or without folders), a file name, or the hash; a title whose hash is stale (the
        file changed since) still finds the file by its name."""
        wanted = str(query or "").strip().replace("\\", "/")
        models = self.list()
        lowered = wanted.lower()
        bare = wanted.split(" [", 1)[0] if wanted.endswith("]") and " [" in wanted else wanted
        checks = (
            lambda c: c.title == wanted,
            lambda c: c.name == bare or self._relative(c) in (bare, bare.rsplit(".", 1)[0]),
            lambda c: lowered == c.short_hash,
            lambda c: c.path.name == bare,
            lambda c: bare.lower() in (c.name.lower(), c.path.name.lower(), self._relative(c).lower()),
        )
        for check in checks:
            matches = [c for c in models if check(c)]
            if len(matches) > 1:
                raise UnknownControlNetError(f"ControlNet {query!r} is ambiguous; it matches: "
                                             + ", ".join(c.title for c in matches))
            if matches:
                return matches[0]
        available = ", ".join(c.title for c in models) or f"none (put ControlNet models in {self.root})"
        raise UnknownControlNetError(f"ControlNet {query!r} not found. Available: {available}")
