"""Saved prompt styles, in A1111's ``styles.csv`` so users bring their file over unchanged.

Columns are ``name,prompt,negative_prompt`` with an optional ``description`` (older files call the prompt column
``text``). A style's prompt containing ``{prompt}`` wraps the user's prompt; any other style text is appended with
", ". Every change rewrites the file atomically, so a crash never loses the user's styles.
"""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modules.runtime.files import atomic_write

PROMPT_PLACEHOLDER = "{prompt}"


class UnknownStyleError(ValueError):
    """A request named a style that does not exist; the message lists the ones that do."""

    def __init__(self, name: str, available: list[str]) -> None:
        listed = ", ".join(available) if available else "none are saved"
        super().__init__(f"unknown style {name!r}; available styles: {listed}")
        self.name = name
        self.available = available


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


class StyleStore:
    """The styles in one CSV file; safe to share between the UI and API threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._styles: dict[str, Style] = {}
        self._has_description = False
        self.reload()

    def reload(self) -> None:
        """Read the file again (a missing file means no styles); later rows win over earlier ones of the same name."""
        styles: dict[str, Style] = {}
        has_description = False
        if self.path.is_file():
            with self.path.open(encoding="utf-8-sig", newline="") as file:
                reader = csv.DictReader(file, skipinitialspace=True)
                has_description = "description" in (reader.fieldnames or [])
                for row in reader:
                    name = (row.get("name") or "").strip()
                    if not name:
                        continue
                    styles[name] = Style(
                        name=name,
                        prompt=row.get("prompt") or row.get("text") or "",
                        negative_prompt=row.get("negative_prompt") or "",
                        description=row.get("description") or "",
                    )
        with self._lock:
            self._styles = styles
            self._has_description = has_description

    def list(self) -> list[Style]:
        with self._lock:
            return list(self._styles.values())

    def names(self) -> list[str]:
        with self._lock:
            return list(self._styles)

    def get(self, name: str) -> Style:
        with self._lock:
            style = self._styles.get(name)
            if style is None:
                raise UnknownStyleError(name, list(self._styles))
            return style

    def save(self, style: Style) -> None:
        """Add a style, or replace the one of the same name in place (the file keeps its order)."""
        if not style.name.strip():
            raise ValueError("a style needs a name")
        with self._lock:
            self._styles[style.name] = style
            self._write()

    def delete(self, name: str) -> None:
        with self._lock:
            if name not in self._styles:
                raise UnknownStyleError(name, list(self._styles))
            del self._styles[name]
            self._write()

    def apply(self, prompt: str, negative_prompt: str, names: Sequence[str]) -> tuple[str, str]:
        """The prompt and negative prompt with each named style applied in turn."""
        styles = [self.get(name) for name in names]
        for style in styles:
            prompt = merge_prompt(style.prompt, prompt)
            negative_prompt = merge_prompt(style.negative_prompt, negative_prompt)
        return prompt, negative_prompt

    def _write(self) -> None:
        fields = ["name", "prompt", "negative_prompt"]
        if self._has_description or any(style.description for style in self._styles.values()):
            fields.append("description")
            self._has_description = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path, newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fields, quoting=csv.QUOTE_MINIMAL)
            writer.writeheader()
            for style in self._styles.values():
                row = {"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt}
                if "description" in fields:
                    row["description"] = style.description
                writer.writerow(row)
