"""The icon buttons draw on a machine with no emoji font (the Debian Chromium the browser tests use).

An emoji such as the arrows or the dice other studios put on their buttons needs a colour-emoji font; without one
the browser draws an empty box, and the button says nothing to a sighted user.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from app.ui import accessible

APP = Path(__file__).resolve().parents[1] / "app"
GLYPHS = {name: getattr(accessible, name) for name in dir(accessible) if name.endswith("_GLYPH")}


def test_every_icon_glyph_is_in_an_installed_font():
    if shutil.which("fc-list") is None:
        pytest.skip("fontconfig's fc-list is not installed")
    assert GLYPHS, "app/ui/accessible.py names no icon glyphs"
    for name, glyph in GLYPHS.items():
        fonts = subprocess.run(["fc-list", f":charset={ord(glyph):x}", "family"], capture_output=True, text=True,
                               check=True).stdout
        assert fonts.strip(), f"{name} ({glyph!r}) is in no font installed here: the browser would draw a box"


def test_no_emoji_in_the_ui_sources():
    """Pictographs (U+1F000 and above) only draw with an emoji font; the UI's code uses the glyphs above instead."""
    found = [f"{path.relative_to(APP.parent)}:{number}"
             for path in sorted(APP.rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if any(ord(char) >= 0x1F000 for char in line)]
    assert not found, f"emoji in the UI sources: {found}"
