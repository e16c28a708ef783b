"""Whole-file writes that a crash cannot leave half done: a temporary file in the same folder, flushed to disk,
then renamed over the target (``os.replace`` is atomic on one filesystem); and, at start-up, the removal of the
temporary files a crash left behind."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", *, encoding: str = "utf-8",
                 newline: str | None = None, permissions: int | None = None) -> Iterator[IO[Any]]:
    """Yield a file to write ``path``'s new content into; it replaces ``path`` only when the block ends cleanly.

    ``permissions`` sets the file's mode (the temporary file starts private, 0600); on any error the temporary
    file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = {} if "b" in mode else {"encoding": encoding, "newline": newline}
        with os.fdopen(handle, mode, **text) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        if permissions is not None:
            os.chmod(temp_name, permissions)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


# What our own writers leave behind when the process is killed mid-write, and nothing else: an image being staged
# before it takes its numbered name (modules.runtime.outputs, the X/Y/Z plot's grids), the temporary file of
# ``atomic_write`` (``mkstemp``: a dot, the target's name, eight random characters, ``.tmp``), and the hidden
# folders an extension install or the tokenizer build assembles before renaming them into place.
LEFTOVER_FILES = re.compile(r"^\.staging-(?:xyz-)?\d+-\d+\.[A-Za-z0-9]{1,5}$|^\..+\.[a-z0-9_]{8}\.tmp$")
LEFTOVER_FOLDERS = re.compile(r"^\.(?:installing|tokenizer)-[a-z0-9_]{8}$")
LEFTOVER_AGE_SECONDS = 60.0


def clean_leftovers(roots: Iterable[str | os.PathLike[str]], older_than: float = LEFTOVER_AGE_SECONDS,
                    now: float | None = None) -> list[Path]:
    """Remove crash leftovers of our own writers (``LEFTOVER_FILES``, ``LEFTOVER_FOLDERS``) under ``roots``; the
    paths removed.

    Called at start-up by the composition root's wiring (``Services.start``) with the outputs and data folders: a
    kill during a write leaves these hidden files behind, and nothing else would ever remove them. Only entries
    untouched for ``older_than`` seconds go, so a second studio sharing the folders keeps the file it is writing
    right now; symbolic links are neither followed nor removed, and ``.git`` folders are not searched."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    for root in dict.fromkeys(Path(item) for item in roots):
        if not root.is_dir():
            continue
        for folder, dirnames, filenames in os.walk(root):
            base = Path(folder)
            for name in list(dirnames):
                path = base / name
                if name == ".git" or path.is_symlink():
                    dirnames.remove(name)
                elif LEFTOVER_FOLDERS.match(name) and _older(path, now, older_than):
                    dirnames.remove(name)
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
            for name in filenames:
                path = base / name
                if LEFTOVER_FILES.match(name) and not path.is_symlink() and _older(path, now, older_than):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(path)
    return removed


def _older(path: Path, now: float, seconds: float) -> bool:
    try:
        return now - path.lstat().st_mtime > seconds
    except OSError:
        return False
