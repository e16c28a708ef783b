"""Where interrogate models live, and which folder is which: read from ``config.json``, never downloaded.

- ``models/BLIP/<folder>``: a captioning model saved by transformers (``save_pretrained``: ``config.json``, the
  weights and the processor's files), e.g. a copy of Salesforce/blip-image-captioning-base. A1111 users know the
  folder; Sfumato reads the transformers layout, not A1111's single ``.pth``.
- ``models/interrogate/<folder>``: the CLIP model that ranks the terms (e.g. openai/clip-vit-large-patch14, in the
  same layout), and ``models/interrogate/*.txt``: term lists of one's own (see ``terms``). A captioner put here is
  found too: each folder is told apart by the ``model_type`` its ``config.json`` names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modules.errors import RequestError

CAPTION_DIR = "BLIP"
INTERROGATE_DIR = "interrogate"
RANKER_TYPES = ("clip",)  # config.json model_type of the models that rank terms
Role = Literal["captioner", "ranker"]


@dataclass(frozen=True)
class InterrogatorInfo:
    """One model folder: its name (the folder's), where it is, what it does, and its transformers model type."""

    name: str
    path: Path
    role: Role
    model_type: str

    @property
    def shown(self) -> str:
        """``models/BLIP/name``: what messages show instead of the server's full path."""
        return f"models/{self.path.parent.name}/{self.name}"


class MissingInterrogateModel(RequestError):
    """No model of the role needed is installed (or the named one is not): says which folder to fill."""


class InterrogatorFolders:
    """The model folders under ``models_dir``, re-read on each call (a folder dropped in is found without a
    restart; there are only a few and reading their ``config.json`` costs nothing)."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    @property
    def terms_dir(self) -> Path:
        return self.models_dir / INTERROGATE_DIR

    def list(self) -> list[InterrogatorInfo]:
        found: dict[tuple[str, str], InterrogatorInfo] = {}
        for sub in (CAPTION_DIR, INTERROGATE_DIR):
            root = self.models_dir / sub
            if not root.is_dir():
                continue
            for folder in sorted(root.iterdir(), key=lambda path: path.name.lower()):
                model_type = _model_type(folder)
                if model_type is None:
                    continue
                role: Role = "ranker" if model_type in RANKER_TYPES else "captioner"
                found.setdefault((role, folder.name.lower()), InterrogatorInfo(folder.name, folder, role, model_type))
        return list(found.values())

    def of_role(self, role: Role) -> list[InterrogatorInfo]:
        return [info for info in self.list() if info.role == role]

    def find(self, role: Role, name: str | None, field: str) -> InterrogatorInfo:
        """The named folder of ``role`` (any case), or the first one when ``name`` is None; a
        ``MissingInterrogateModel`` naming ``field`` and the folder to fill otherwise."""
        candidates = self.of_role(role)
        if name is None and candidates:
            return candidates[0]
        for info in candidates:
            if name is not None and info.name.lower() == name.strip().lower():
                return info
        raise MissingInterrogateModel(field, self.missing_message(role, name, candidates))

    def missing_message(self, role: Role, name: str | None, candidates: list[InterrogatorInfo]) -> str:
        if role == "captioner":
            what = ("no captioning model is installed: put a transformers BLIP folder (config.json, weights and "
                    f"processor files, e.g. a copy of Salesforce/blip-image-captioning-base) in "
                    f"models/{CAPTION_DIR}/")
        else:
            what = ("no CLIP model is installed for ranking terms: put a transformers CLIP folder (config.json, "
                    f"weights and processor files, e.g. a copy of openai/clip-vit-large-patch14) in "
                    f"models/{INTERROGATE_DIR}/")
        if name is None or not candidates:
            return what if name is None else f"{name!r} is not installed; {what}"
        return f"{name!r} is not installed; installed: {', '.join(info.name for info in candidates)}"


def _model_type(folder: Path) -> str | None:
    """The ``model_type`` a transformers folder's config names, or None for anything else."""
    config = folder / "config.json"
    if not folder.is_dir() or folder.name.startswith(".") or not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model_type = data.get("model_type") if isinstance(data, dict) else None
    return model_type.lower() if isinstance(model_type, str) and model_type else None
