"""Where finished images go: ``outputs/<task>/<YYYY-MM-DD>/NNNNN-<seed>-<prompt words>.<ext>``.

Each file is written to a temporary name in its folder and renamed into place, so a crash never leaves a
half-written image, and every path is checked to stay inside the output folder whatever a prompt contains.

A job killed after writing some images but before the queue recorded its result runs again after the restart,
and its first attempt's images would be left behind, owned by no job. So while a job runs (``recording``) every
file it is about to name is first written to the job's *manifest* (one JSON line: the path and the SHA-256 of the
file's content, flushed to disk before the name is taken); a run that starts with a manifest already there is a
rerun, and removes the files its earlier attempt recorded before it writes its own. The digest makes the removal
safe: a name another process took in between holds other bytes and is left alone. File names stay A1111's.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image

from modules.formats import FILE_EXTENSIONS
from modules.image.infotext import save_image_with_infotext

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"  # + pid-thread.ext: an image being written (see modules.runtime.files.clean_leftovers)


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
        self._running = threading.local()  # the manifest of the job this thread is running, if any

    @contextlib.contextmanager
    def recording(self, manifest: Path | None) -> Iterator[None]:
        """Record in ``manifest`` every file this thread saves until the block ends (one job's run on the worker),
        first removing what an earlier attempt of the same job recorded there (see the module's docstring)."""
        if manifest is None:
            yield
            return
        removed = self.remove_recorded(manifest)
        if removed:
            log.info("removed %d image(s) of an earlier, unfinished run of this job: %s", len(removed),
                     ", ".join(path.name for path in removed))
        previous = getattr(self._running, "manifest", None)
        self._running.manifest = manifest
        try:
            yield
        finally:
            self._running.manifest = previous

    def remove_recorded(self, manifest: Path) -> list[Path]:
        """Delete the files ``manifest`` lists that are still what was written (same digest, inside this store),
        then the manifest; the paths removed."""
        try:
            lines = manifest.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        removed = []
        for line in lines:
            try:
                entry = json.loads(line)
                path = (self.root / entry["path"]).resolve()
                digest = str(entry["sha256"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the crash: its file was never named
            if os.path.commonpath([path, self.root]) != str(self.root) or not path.is_file():
                continue
            if _sha256(path) == digest:
                path.unlink(missing_ok=True)
                removed.append(path)
        manifest.unlink(missing_ok=True)
        return removed

    def _record(self, path: Path, digest: str) -> None:
        """Before ``path`` is taken: the line that lets a rerun of the running job remove it, on disk."""
        manifest = getattr(self._running, "manifest", None)
        if manifest is None:
            return
        manifest.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"path": path.relative_to(self.root).as_posix(), "sha256": digest})
        with open(manifest, "a", encoding="utf-8") as file:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())

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
        return self._save_staged(lambda staging: save_image_with_infotext(image, staging, infotext, fmt), task, stem,
                                 FILE_EXTENSIONS[fmt])

    def save_bytes(self, data: bytes, task: str, stem: str, ext: str) -> Path:
        """Write an encoded file (a sound, a video) as ``NNNNN-<stem>.<ext>``, atomically and numbered like images."""
        return self._save_staged(lambda staging: staging.write_bytes(data), task, stem, ext)

    def save_file(self, task: str, stem: str, ext: str, write: Callable[[Path], object]) -> Path:
        """Write a file that ``write(staging)`` makes at a path (a video ffmpeg encodes) the same way."""
        return self._save_staged(write, task, stem, ext)

    def _save_staged(self, write: Callable[[Path], object], task: str, stem: str, ext: str) -> Path:
        folder = self.folder(task)
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f"{STAGING_PREFIX}{os.getpid()}-{threading.get_ident()}.{ext}"
        write(staging)
        try:
            digest = _sha256(staging) if getattr(self._running, "manifest", None) is not None else ""
            with self._lock:
                number = self._next_number(folder)
                while True:
                    path = folder / f"{number:05d}-{stem}.{ext}"
                    if digest:
                        self._record(path, digest)
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
