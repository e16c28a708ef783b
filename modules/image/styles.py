"""Saved prompt styles, in A1111's ``styles.csv`` so users bring their file over unchanged.

Columns are ``name,prompt,negative_prompt`` with an optional ``description`` (older files call the prompt column
``text``); any other column a file has (another tool's) is kept as it was. A style's prompt containing ``{prompt}``
wraps the user's prompt; any other style text is appended with ", ".

The file is the truth and the store a cache of it: readers pick up an outside edit (by hand, or by an A1111 sharing
the file) when the file's identity changes, and a write reads the file again under the lock before changing one
style, so an edit made elsewhere is kept rather than overwritten with a stale copy. Every change rewrites the file
atomically (temporary file + ``os.replace``), so a crash never leaves half a file, and a file that cannot be read
is never overwritten.
"""

from __future__ import annotations

import csv
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from modules.errors import RequestError
from modules.runtime.files import atomic_write

log = logging.getLogger(__name__)

PROMPT_PLACEHOLDER = "{prompt}"
COLUMNS = ("name", "prompt", "negative_prompt")  # A1111's, in its order
LEGACY_PROMPT_COLUMN = "text"
MAX_NAME_LENGTH = 200
# Far above any real style (A1111's long ones are a few hundred characters) and low enough that a paste of the
# wrong clipboard does not turn every prompt into megabytes.
MAX_TEXT_LENGTH = 10_000


class UnknownStyleError(ValueError):
    """A request named a style that does not exist; the message lists the ones that do."""

    def __init__(self, name: str, available: list[str]) -> None:
        listed = ", ".join(available) if available else "none are saved"
        super().__init__(f"unknown style {name!r}; available styles: {listed}")
        self.name = name
        self.available = available


class StylesFileError(ValueError):
    """The styles file exists but cannot be read; nothing is written over it, so the user's styles are not lost."""


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""
    description: str = ""


def merge_prompt(style_text: str, prompt: str) -> str:
    """One style applied to one prompt, exactly as A1111's ``merge_prompts``."""
    if PROMPT_PLACEHOLDER in style_text:
        return style_text.replace(PROMPT_PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def check_style(style: Style) -> Style:
    """The style as it will be saved (its name without surrounding spaces, as every reader strips it), or a
    ``RequestError`` naming the field: a style the file could not give back unchanged is refused, not mangled."""
    name = style.name.strip() if isinstance(style.name, str) else ""
    if not name:
        raise RequestError("name", "a style needs a name")
    if any(ord(char) < 32 or char == "\x7f" for char in name):
        raise RequestError("name", "must be one line of text (no line breaks or control characters)")
    if len(name) > MAX_NAME_LENGTH:
        raise RequestError("name", f"is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed")
    for field_name in ("prompt", "negative_prompt", "description"):
        text = getattr(style, field_name)
        if not isinstance(text, str):
            raise RequestError(field_name, "must be text")
        if len(text) > MAX_TEXT_LENGTH:
            raise RequestError(field_name, f"is {len(text)} characters long; at most {MAX_TEXT_LENGTH} are allowed")
        if "\x00" in text:
            raise RequestError(field_name, "contains a NUL character")
    return replace(style, name=name)


class StyleStore:
    """The styles in one CSV file; safe to share between the UI and API threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._styles: dict[str, Style] = {}
        self._columns: list[str] = list(COLUMNS)
        self._extra: dict[str, dict[str, str]] = {}  # style name -> values of columns Sfumato does not use
        self._signature: tuple[int, int, int] | None = None
        self._unreadable: tuple[int, int, int] | None = None  # the broken version already logged
        with self._lock:
            self._refresh(strict=False)

    def reload(self) -> None:
        """Read the file again (a missing file means no styles); later rows win over earlier ones of the same name.
        Raises ``StylesFileError`` when the file cannot be read."""
        with self._lock:
            self._signature = None
            self._refresh(strict=True)

    def list(self) -> list[Style]:
        with self._lock:
            self._refresh(strict=False)
            return list(self._styles.values())

    def names(self) -> list[str]:
        with self._lock:
            self._refresh(strict=False)
            return list(self._styles)

    def get(self, name: str) -> Style:
        with self._lock:
            self._refresh(strict=False)
            style = self._styles.get(name)
            if style is None:
                raise UnknownStyleError(name, list(self._styles))
            return style

    def save(self, style: Style) -> Style | None:
        """Add a style, or replace the one of the same name in place (the file keeps its order); the style it
        replaced, or None. Raises ``RequestError`` (naming the field) for a style that cannot be saved."""
        style = check_style(style)
        with self._lock:
            self._refresh(strict=True)
            previous = self._styles.get(style.name)
            self._write({**self._styles, style.name: style})
            return previous

    def delete(self, name: str) -> Style:
        """Remove a style; the removed style, so the caller can offer to put it back."""
        with self._lock:
            self._refresh(strict=True)
            if name not in self._styles:
                raise UnknownStyleError(name, list(self._styles))
            styles = dict(self._styles)
            removed = styles.pop(name)
            self._write(styles)
            return removed

    def apply(self, prompt: str, negative_prompt: str, names: Sequence[str]) -> tuple[str, str]:
        """The prompt and negative prompt with each named style applied in turn."""
        styles = [self.get(name) for name in names]
        for style in styles:
            prompt = merge_prompt(style.prompt, prompt)
            negative_prompt = merge_prompt(style.negative_prompt, negative_prompt)
        return prompt, negative_prompt

    # -- the file (callers hold the lock) --

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _refresh(self, strict: bool) -> None:
        """Read the file when it changed since it was last read. A file that cannot be read raises when
        ``strict`` (before a write), else the last good styles are kept and the problem is logged once."""
        signature = self._stat()
        if signature is not None and signature == self._signature:
            return
        if signature is None:
            self._styles, self._columns, self._extra, self._signature = {}, list(COLUMNS), {}, None
            return
        try:
            self._styles, self._columns, self._extra = self._read()
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            problem = StylesFileError(f"{self.path} cannot be read ({error}); fix or move it, nothing was written")
            if strict:
                raise problem from error
            if self._unreadable != signature:
                log.warning("%s", problem)
                self._unreadable = signature
            return
        self._signature = signature

    def _read(self) -> tuple[dict[str, Style], list[str], dict[str, dict[str, str]]]:
        styles: dict[str, Style] = {}
        extra: dict[str, dict[str, str]] = {}
        with self.path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.DictReader(file, skipinitialspace=True)
            header = [column for column in (reader.fieldnames or []) if column]
            known = {*COLUMNS, LEGACY_PROMPT_COLUMN, "description"}
            for row in reader:
                name = (row.get("name") or "").strip()
                if not name:
                    continue
                styles[name] = Style(
                    name=name,
                    prompt=row.get("prompt") or row.get(LEGACY_PROMPT_COLUMN) or "",
                    negative_prompt=row.get("negative_prompt") or "",
                    description=row.get("description") or "",
                )
                extra[name] = {column: row.get(column) or "" for column in header if column not in known}
        columns = [*COLUMNS, *(column for column in header if column not in (*COLUMNS, LEGACY_PROMPT_COLUMN))]
        return styles, columns, extra

    def _write(self, styles: dict[str, Style]) -> None:
        columns = list(self._columns)
        if "description" not in columns and any(style.description for style in styles.values()):
            columns.append("description")
        try:
            mode = self.path.stat().st_mode & 0o777  # keep the permissions the user gave the file
        except FileNotFoundError:
            mode = 0o644
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path, newline="", permissions=mode) as file:
            writer = csv.DictWriter(file, fieldnames=columns, quoting=csv.QUOTE_MINIMAL, extrasaction="ignore")
            writer.writeheader()
            for style in styles.values():
                row = {**self._extra.get(style.name, {}), "name": style.name, "prompt": style.prompt,
                       "negative_prompt": style.negative_prompt, "description": style.description}
                writer.writerow(row)
        self._styles, self._columns = styles, columns
        self._extra = {name: values for name, values in self._extra.items() if name in styles}
        self._signature = self._stat()
