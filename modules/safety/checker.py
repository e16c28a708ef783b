"""Finding and running the NSFW checker installed under ``models/safety_checker/``.

Two kinds of model are understood, both read from local files only (nothing is downloaded):

- diffusers' ``StableDiffusionSafetyChecker`` (the ``safety_checker/`` folder of an SD 1.x repository), with the
  ``CLIPImageProcessor`` config from that repository's ``feature_extractor/`` beside it or inside it;
- a transformers image classifier (``AutoModelForImageClassification`` + ``AutoImageProcessor``, e.g. a ViT
  fine-tuned on nsfw/normal), whose labels say which classes count as flagged.

The folder may hold one checker directly or one sub-folder per checker (the first by name is used). The model is
loaded on the worker the first time a job asks for filtering and kept; a request that asks for filtering when no
checker is installed is refused at submission, so images are never passed through unchecked.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from modules.errors import RequestError
from modules.safety import SAFETY_FOLDER

PREPROCESSOR_CONFIG = "preprocessor_config.json"
SD_CHECKER_CLASS = "StableDiffusionSafetyChecker"
# Classifier labels that mean "do not show" (lower case); their probabilities are summed against ``threshold``.
FLAGGED_LABELS = frozenset({"nsfw", "porn", "hentai", "explicit", "unsafe", "sexual"})


@dataclass(frozen=True)
class CheckerInfo:
    """An installed checker: its folder, its kind (``"sd"`` or ``"classifier"``), where its preprocessor config is,
    and the latest change to its files (a checker replaced in place is loaded again)."""

    path: Path
    kind: str
    processor_dir: Path
    stamp: int = 0

    @property
    def name(self) -> str:
        return self.path.name


def find_checker(root: Path) -> CheckerInfo | None:
    """The checker in ``root`` itself, else in its first sub-folder (by name) that holds one; None when none."""
    if not root.is_dir():
        return None
    candidates = [root, *sorted(child for child in root.iterdir() if child.is_dir())]
    for folder in candidates:
        info = _describe(folder)
        if info is not None:
            return info
    return None


def _describe(folder: Path) -> CheckerInfo | None:
    config_file = folder / "config.json"
    if not config_file.is_file():
        return None
    processor = next((place for place in (folder, folder / "feature_extractor", folder.parent / "feature_extractor")
                      if (place / PREPROCESSOR_CONFIG).is_file()), None)
    if processor is None:
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    architectures = config.get("architectures") or []
    kind = "sd" if SD_CHECKER_CLASS in architectures else "classifier"
    stamp = max((item.stat().st_mtime_ns for item in (*folder.iterdir(), *processor.iterdir()) if item.is_file()),
                default=0)
    return CheckerInfo(folder, kind, processor, stamp)


class SafetyCheckers:
    """The studio's checker: looked up in ``models/safety_checker`` on demand (a checker dropped in is used by the
    next job), loaded lazily on the worker, kept until the folder's checker changes."""

    def __init__(self, models_dir: Path | str, device: Callable[[], str] | str = "cpu", threshold: float = 0.5) -> None:
        self.root = Path(models_dir) / SAFETY_FOLDER
        self._device = device
        self.threshold = threshold
        self._lock = threading.Lock()
        self._loaded: tuple[CheckerInfo, Any, Any] | None = None

    @property
    def device(self) -> str:
        return self._device() if callable(self._device) else self._device

    def find(self) -> CheckerInfo | None:
        return find_checker(self.root)

    def require(self, field: str = "safety") -> CheckerInfo:
        """The installed checker, or a ``RequestError`` naming ``field`` and the folder to put one in."""
        info = self.find()
        if info is None:
            raise RequestError(field, f"NSFW filtering was asked for but no safety checker is installed: put a "
                                      f"diffusers StableDiffusionSafetyChecker folder (with its feature_extractor's "
                                      f"{PREPROCESSOR_CONFIG}) or a transformers image classifier in {self.root}")
        return info

    def flags(self, images: list[Image.Image], field: str = "safety") -> list[bool]:
        """One verdict per image: True = flagged. Loads the checker on first use."""
        if not images:
            return []
        info, model, processor = self._model(field)
        import torch

        pixels = [image.convert("RGB") for image in images]
        inputs = processor(images=pixels, return_tensors="pt")
        values = inputs["pixel_values"].to(device=model.device, dtype=model.dtype)
        with torch.inference_mode():
            if info.kind == "sd":
                placeholder = torch.zeros(len(pixels), 1, device=values.device)
                _, flagged = model.forward_onnx(values, placeholder)
                return [bool(value) for value in flagged.tolist()]
            probabilities = model(pixel_values=values).logits.float().softmax(dim=-1).cpu()
        labels = {int(index): str(label).lower() for index, label in model.config.id2label.items()}
        columns = [index for index, label in labels.items() if label in FLAGGED_LABELS]
        if not columns:
            raise RequestError(field, f"the safety checker {info.path} is a classifier without an NSFW label "
                                      f"(its labels: {', '.join(labels.values())}; expected one of "
                                      f"{', '.join(sorted(FLAGGED_LABELS))})")
        scores = probabilities[:, columns].sum(dim=-1)
        return [bool(score > self.threshold) for score in scores.tolist()]

    def unload(self) -> None:
        with self._lock:
            self._loaded = None

    def _model(self, field: str) -> tuple[CheckerInfo, Any, Any]:
        info = self.require(field)
        with self._lock:
            if self._loaded is not None and self._loaded[0] == info:
                return self._loaded
            try:
                model, processor = _load(info, self.device)
            except (OSError, ValueError, KeyError, RuntimeError) as error:
                raise RequestError(field, f"the safety checker in {info.path} cannot be loaded: {error}") from None
            self._loaded = (info, model, processor)
            return self._loaded


def _load(info: CheckerInfo, device: str) -> tuple[Any, Any]:
    """Model and image processor from local files; half precision on a GPU (the checker is a CLIP-L tower)."""
    import torch

    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    if info.kind == "sd":
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        model = StableDiffusionSafetyChecker.from_pretrained(info.path, local_files_only=True, dtype=dtype)
        processor = CLIPImageProcessor.from_pretrained(info.processor_dir, local_files_only=True)
    else:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(info.path, local_files_only=True, dtype=dtype)
        processor = AutoImageProcessor.from_pretrained(info.processor_dir, local_files_only=True)
    return model.to(device).eval(), processor
