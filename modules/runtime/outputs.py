"""Where finished images go: ``outputs/<task>/<YYYY-MM-DD>/NNNNN-<seed>-<prompt words>.<ext>``.

Each file is written to a temporary name in its folder and renamed into place, so a crash never leaves a
half-written image, and every path is checked to stay inside the output folder whatever a prompt contains.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import threading
from pathlib import Path

from PIL import Image

from modules.image.infotext import save_image_with_infotext

_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def prompt_slug(prompt: str, limit: int = 48) -> str:
    """A readable, filesystem-safe fragment of the prompt."""
    words = re.sub(r"[^\w\s-]", " ", prompt, flags=re.UNICODE).split()
    slug = "-".join(words)[:limit].strip("-_")
    return slug or "image"


class OutputStore:
    """Numbered, atomic writes under one root; safe to share between the worker and UI threads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._lock = threading.Lock()

    def folder(self, task: str, when: _dt.date | None = None) -> Path:
        day = (when or _dt.date.today()).isoformat()
        folder = (self.root / task / day).resolve()
        if os.path.commonpath([folder, self.root]) != str(self.root):
            raise ValueError(f"refusing to write outside {self.root}")
        return folder

    def save(
        self,
        image: Image.Image,
        task: str,
        infotext: str,
        seed: int,
        prompt: str,
        fmt: str = "png",
        suffix: str = "",
    ) -> Path:
        """Write one image with its infotext and return its path.

        The finished file is linked to its numbered name with ``os.link``, which fails rather than overwrite, so two
        studios sharing one output folder (or a second process) never replace each other's images.
        """
        return self.save_named(image, task, infotext, f"{seed}-{prompt_slug(prompt)}{suffix}", fmt)

    def save_named(self, image: Image.Image, task: str, infotext: str | None, stem: str, fmt: str = "png") -> Path:
        """Write one image as ``NNNNN-<stem>.<ext>`` under ``task``'s folder of the day (the upscaler names its
        outputs after their source files; generations after seed and prompt)."""
        folder = self.folder(task)
        folder.mkdir(parents=True, exist_ok=True)
        ext = _EXTENSIONS[fmt]
        staging = folder / f".staging-{os.getpid()}-{threading.get_ident()}.{ext}"
        save_image_with_infotext(image, staging, infotext, fmt)
        try:
            with self._lock:
                number = self._next_number(folder)
                while True:
                    path = folder / f"{number:05d}-{stem}.{ext}"
                    if _claim_name(staging, path):
                        return path
                    number += 1
        finally:
            staging.unlink(missing_ok=True)

    @staticmethod
    def _next_number(folder: Path) -> int:
        highest = -1
        for entry in folder.iterdir():
            head = entry.name.split("-", 1)[0]
            if head.isdigit():
                highest = max(highest, int(head))
        return highest + 1


def _claim_name(staging: Path, path: Path) -> bool:
    """Give the staged file its final name unless that name exists; False when it does."""
    try:
        os.link(staging, path)
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: fall back to an existence check and a rename
        if path.exists():
            return False
        os.replace(staging, path)
    return True
