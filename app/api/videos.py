"""Video inputs on the wire: a base64 video file (MP4, WebM, GIF, animated WebP) decoded into frames, or a 4xx
naming the field, before anything is queued."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from app.api.errors import ApiError
from app.api.images import decode_bytes

VIDEO_SUFFIXES = {b"\x1a\x45\xdf\xa3": ".webm", b"GIF8": ".gif"}


def _suffix(raw: bytes) -> str:
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return ".webp"
    return next((suffix for magic, suffix in VIDEO_SUFFIXES.items() if raw.startswith(magic)), ".mp4")


def decode_video(data: str | bytes | None, field: str) -> tuple[Image.Image, ...]:
    """The frames of a base64 (or raw) video file; 422 naming ``field`` when it is not a readable video."""
    from modules.video.encode import read_frames

    raw = decode_bytes(data, field, "video")
    with tempfile.TemporaryDirectory(prefix="sfumato-video-") as folder:
        path = Path(folder) / f"input{_suffix(raw)}"
        path.write_bytes(raw)
        try:
            frames = read_frames(path)
        except (OSError, RuntimeError, ValueError, StopIteration) as error:
            raise ApiError(422, f"not a readable video (MP4, WebM, GIF or WebP expected): {error}", field) from None
    if not frames:
        raise ApiError(422, "the video has no frames", field)
    return tuple(frames)
