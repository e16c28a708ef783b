"""The term lists the CLIP ranking chooses from: data files, one term a line, not code.

Built-in lists live in ``term_lists/`` beside this module; a ``.txt`` file in ``models/interrogate/`` adds a list
or replaces the built-in one of the same name, so users tune them without touching the studio. As in A1111's
``interrogate/`` folder, ``flavors.top3.txt`` means "the list *flavors*, add its 3 best matches" (one by default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent / "term_lists"
_TOP = re.compile(r"^(?P<name>.+?)\.top(?P<top>\d+)$")
MAX_TERMS = 5000  # per list: a user's huge list would make every interrogation slow


@dataclass(frozen=True)
class Category:
    """One list: its name, how many of its best terms to add, and the terms in file order."""

    name: str
    top: int
    terms: tuple[str, ...]


def read_category(path: Path) -> Category:
    """A list file: blank lines and ``#`` comments skipped, duplicates dropped, order kept."""
    stem = path.stem
    match = _TOP.match(stem)
    name, top = (match["name"], int(match["top"])) if match else (stem, 1)
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        term = line.strip()
        if term and not term.startswith("#"):
            seen.setdefault(term, None)
    return Category(name=name, top=max(1, top), terms=tuple(seen)[:MAX_TERMS])


def load_categories(builtin_dir: Path = BUILTIN_DIR, user_dir: Path | None = None) -> list[Category]:
    """The built-in lists with the user's added or replacing them by name, sorted by name (a stable order makes
    the appended terms read the same way every time); empty lists are left out."""
    found: dict[str, Category] = {}
    for folder in (builtin_dir, user_dir):
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.txt")):
            if path.is_file() and not path.name.startswith("."):
                category = read_category(path)
                found[category.name] = category
    return [found[name] for name in sorted(found) if found[name].terms]
