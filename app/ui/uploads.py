"""Uploads that are not images reach the handler, which names the field, instead of failing inside Gradio.

``gr.Image`` opens an upload with Pillow before any handler runs; a corrupt file or a text file renamed .png makes
that step raise, and the page shows only a bare "Error" badge on every output. ``named_upload`` lets such an
upload through as the path of the file as received, so the handler's own reading (``load_image``) reports
"<field>: not a readable image" in the tab's status and a toast, as for any other bad input.
"""

from __future__ import annotations

from typing import Any

from PIL import UnidentifiedImageError


def named_upload(component: Any) -> Any:
    """``component`` (a ``gr.Image``) with its upload reading made tolerant of files Pillow cannot open."""
    read = component.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return read(payload)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):  # what Pillow raises on broken files
            return getattr(payload, "path", None)

    component.preprocess = preprocess
    return component
