"""Frames to video files, with the parameters inside them, and reading both back.

MP4 (H.264, yuv420p) and WebM (VP9) are written by the ffmpeg that imageio-ffmpeg bundles (no system ffmpeg
needed); animated GIF and WebP by Pillow. Every file carries the A1111-style parameters text (MP4/WebM: the
``comment`` tag, with the parameters as JSON in ``description``; GIF: its comment; WebP: the EXIF image
description), so PNG info can read a clip's parameters back. Callers write to a staging name and rename it into
place (``modules.runtime.outputs``): an interrupted encode never leaves a half-written file under its real name.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

EXTENSIONS = {"mp4": "mp4", "webm": "webm", "gif": "gif", "webp": "webp"}
MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "gif": "image/gif", "webp": "image/webp"}
_EXIF_DESCRIPTION = 0x010E
_FFMPEG_CODECS = {
    "mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-preset", "medium", "-movflags", "+faststart",
            "-f", "mp4"],
    "webm": ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", "30", "-b:v", "0", "-f", "webm"],
}


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def write_video(frames: list[Image.Image], path: Path, fmt: str, fps: int, infotext: str,
                parameters: dict[str, Any]) -> None:
    """Write ``frames`` as a ``fmt`` file at ``path`` (which the caller renames into place)."""
    if not frames:
        raise ValueError("no frames to write")
    if fmt in _FFMPEG_CODECS:
        _write_ffmpeg(frames, path, fmt, fps, infotext, parameters)
    elif fmt == "gif":
        _write_pillow(frames, path, "GIF", fps, comment=infotext.encode("utf-8"), disposal=2, optimize=False)
    elif fmt == "webp":
        exif = Image.Exif()
        exif[_EXIF_DESCRIPTION] = infotext
        _write_pillow(frames, path, "WEBP", fps, exif=exif.tobytes(), lossless=False, quality=90)
    else:
        raise ValueError(f"unknown video format {fmt!r}")


def _write_pillow(frames: list[Image.Image], path: Path, pillow_format: str, fps: int, **options: Any) -> None:
    rgb = [frame.convert("RGB") for frame in frames]
    duration = max(1, round(1000 / fps))
    rgb[0].save(path, format=pillow_format, save_all=True, append_images=rgb[1:], duration=duration, loop=0,
                **options)


def _write_ffmpeg(frames: list[Image.Image], path: Path, fmt: str, fps: int, infotext: str,
                  parameters: dict[str, Any]) -> None:
    width, height = frames[0].size
    # yuv420p halves the chroma planes: odd sides are padded by one pixel (the edge repeated) rather than cut.
    pad = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"] if width % 2 or height % 2 else []
    command = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", str(fps), "-i", "-", *pad, *_FFMPEG_CODECS[fmt],
               "-metadata", f"comment={infotext}",
               "-metadata", f"description={json.dumps(parameters, sort_keys=True)}", str(path)]
    data = b"".join(frame.convert("RGB").resize((width, height)).tobytes() for frame in frames)
    completed = subprocess.run(command, input=data, capture_output=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write the {fmt} file: {completed.stderr.decode(errors='replace')}")


# -- reading back -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    """What a user checks in a clip: its frames, size and rate."""

    frames: int
    width: int
    height: int
    fps: float


def probe(path: Path) -> VideoInfo:
    """Decode the whole file (every frame counted, not the container's claim) and report its shape."""
    path = Path(path)
    if path.suffix.lower() in (".gif", ".webp"):
        with Image.open(path) as image:
            count = getattr(image, "n_frames", 1)
            duration = image.info.get("duration") or 0
            return VideoInfo(count, image.width, image.height, 1000 / duration if duration else 0.0)
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    count = sum(1 for _frame in reader)
    width, height = meta["size"]
    return VideoInfo(count, int(width), int(height), float(meta["fps"]))


def read_frames(path: Path) -> list[Image.Image]:
    """Every frame of a video file as RGB images (for video-to-video inputs and tests)."""
    path = Path(path)
    if path.suffix.lower() in (".gif", ".webp"):
        from PIL import ImageSequence

        with Image.open(path) as image:
            return [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    size = tuple(meta["size"])
    return [Image.frombytes("RGB", size, bytes(frame)) for frame in reader]


def read_tags(path: Path) -> dict[str, str]:
    """A media file's container tags (lower-case names), read with ffmpeg's metadata writer."""
    command = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"]
    completed = subprocess.run(command, capture_output=True, check=False)
    if completed.returncode != 0:
        return {}
    return parse_ffmetadata(completed.stdout.decode("utf-8", errors="replace"))


def parse_ffmetadata(text: str) -> dict[str, str]:
    """The global section of an ffmetadata text: ``key=value`` lines, where ``\\`` escapes ``=;#\\`` and newlines."""
    tags: dict[str, str] = {}
    chars = iter(text)
    current: list[str] = []
    lines: list[str] = []
    for char in chars:  # split on unescaped newlines, keeping escapes for the key/value split
        if char == "\\":
            current.append(char + next(chars, ""))
        elif char == "\n":
            lines.append("".join(current))
            current = []
        else:
            current.append(char)
    lines.append("".join(current))
    for line in lines:
        if line.startswith("["):
            break  # a stream or chapter section: only the file's own tags matter here
        if not line or line.startswith((";", "#")):
            continue
        parts = _split_escaped(line)
        if parts is None:
            continue
        tags[parts[0].lower()] = parts[1]
    return tags


def _split_escaped(line: str) -> tuple[str, str] | None:
    out: list[str] = []
    key: str | None = None
    index = 0
    while index < len(line):
        char = line[index]
        if char == "\\" and index + 1 < len(line):
            out.append(line[index + 1])
            index += 2
            continue
        if char == "=" and key is None:
            key, out = "".join(out), []
        else:
            out.append(char)
        index += 1
    return (key, "".join(out)) if key is not None else None


def read_video_infotext(path: Path) -> str:
    """The parameters text embedded by ``write_video`` (empty when the file has none)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".gif", ".webp"):
        with Image.open(path) as image:
            if suffix == ".gif":
                comment = image.info.get("comment", b"")
                return comment.decode("utf-8", errors="replace") if isinstance(comment, bytes) else str(comment)
            return str(image.getexif().get(_EXIF_DESCRIPTION, ""))
    return read_tags(path).get("comment", "")


def read_video_parameters(path: Path) -> dict[str, Any]:
    """The parameters as JSON (MP4 / WebM ``description``); empty when the file has none."""
    try:
        data = json.loads(read_tags(Path(path)).get("description", ""))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
