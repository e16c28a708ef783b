"""A1111 "infotext": the generation parameters written into every image, and read back from any.

Civitai, ``sd-parsers``, ``sd-prompt-reader`` and every "PNG info" tab read this exact text, so it is written the
way AUTOMATIC1111 writes it (REFERENCE.md §2): the prompt, an optional ``Negative prompt:`` line, then one line of
``Key: value`` pairs. PNGs carry it in the ``parameters`` text chunk; JPEG and WEBP in the EXIF UserComment as
``UNICODE\\0`` + UTF-16 big-endian (what A1111 writes through piexif). The EXIF block is built by hand so the tag
gets the UNDEFINED type that piexif-based readers require, without a piexif dependency.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

from PIL import Image

from modules.formats import normal_format
from modules.image.masks import storable
from modules.runtime.files import atomic_write

# Fixed head of the parameter line, in A1111's order; extras follow in insertion order, then Version.
KEY_ORDER: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Seed",
    "Size",
    "Model hash",
    "Model",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Denoising strength",
    "Clip skip",
)
REQUIRED_KEYS: tuple[str, ...] = ("Steps", "Sampler", "CFG scale", "Seed", "Size")
# Schedule names that old infotexts glued onto the sampler ("DPM++ 2M Karras"); longest first so "SGM Uniform"
# wins over "Uniform".
SCHEDULE_SUFFIXES: tuple[str, ...] = (
    "Align Your Steps",
    "Polyexponential",
    "SGM Uniform",
    "KL Optimal",
    "Exponential",
    "Karras",
    "Uniform",
    "Simple",
    "Normal",
    "Beta",
)

# A1111's parameter pattern (modules/infotext_utils.py): a key, then a JSON string or anything up to a comma.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_KEY = re.compile(r"^\w[\w \-/]+$")
_RE_SIZE = re.compile(r"^(\d+)x(\d+)$")
_NEGATIVE = "Negative prompt:"

# EXIF: the Exif sub-IFD pointer in IFD0, and UserComment inside it.
EXIF_IFD_POINTER = 0x8769
USER_COMMENT = 0x9286
_UNDEFINED = 7
_LONG = 4
_JPEG_SEGMENT_LIMIT = 65533
# Pillow info keys that are image properties, not text a user put there (A1111's IGNORED_INFO_KEYS).
_IGNORED_INFO_KEYS = frozenset(
    {
        "jfif",
        "jfif_version",
        "jfif_unit",
        "jfif_density",
        "dpi",
        "exif",
        "loop",
        "background",
        "timestamp",
        "duration",
        "progressive",
        "progression",
        "icc_profile",
        "chromaticity",
        "photoshop",
        "parameters",
    }
)


# --- writing the text -------------------------------------------------------------------------------------------


def format_value(value: object) -> str:
    """A value as A1111 prints it: integral floats without ".0", (w, h) as WxH, awkward text as a JSON string."""
    if isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        text = f"{value[0]}x{value[1]}"
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, ensure_ascii=False)  # e.g. "Styles array", as A1111 writes it
    else:
        text = str(value)
    # A1111 quotes values holding "," ":" or a newline. A value that starts with a quote or a space is quoted too,
    # or a reader would take `"abc"` for a JSON string, or drop the space.
    if any(ch in text for ch in ",:\n\r") or text.startswith('"') or text[:1].isspace():
        return json.dumps(text, ensure_ascii=False)
    return text


def _clip_skip_shown(value: object) -> bool:
    try:
        return int(float(str(value))) > 1
    except ValueError:
        return True


def format_parameters(params: dict[str, object]) -> str:
    """The ``Steps: ..., Sampler: ...`` line alone."""
    missing = [key for key in REQUIRED_KEYS if params.get(key) is None]
    if missing:
        raise ValueError(f"infotext needs {', '.join(missing)}")
    ordered: list[tuple[str, object]] = [(key, params[key]) for key in KEY_ORDER if key in params]
    ordered += [(key, value) for key, value in params.items() if key not in KEY_ORDER and key != "Version"]
    if "Version" in params:
        ordered.append(("Version", params["Version"]))
    parts = []
    for key, value in ordered:
        if value is None or (key == "Clip skip" and not _clip_skip_shown(value)):
            continue
        if not _RE_KEY.match(key):
            raise ValueError(f"infotext key {key!r} cannot be read back (letters, digits, spaces, '-', '/' only)")
        parts.append(f"{key}: {format_value(value)}")
    return ", ".join(parts)


def format_infotext(prompt: str, negative_prompt: str, params: dict[str, object]) -> str:
    """The full infotext, byte for byte as A1111's ``create_infotext`` builds it."""
    negative = f"\n{_NEGATIVE} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{format_parameters(params)}".strip()


# --- reading the text -------------------------------------------------------------------------------------------


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return str(json.loads(value))
        except ValueError:
            return value
    return value


def parse_infotext(text: str) -> dict[str, Any]:
    """Prompt, negative prompt and every ``Key: value`` as strings, like A1111's ``parse_generation_parameters``.

    ``Size: 512x768`` is kept and also split into A1111's ``Size-1``/``Size-2`` (same for any ``WxH`` value).
    """
    *lines, last = text.strip().replace("\r\n", "\n").split("\n")
    if len(_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        if not in_negative and line.startswith(_NEGATIVE):
            in_negative = True
            line = line[len(_NEGATIVE) :].lstrip(" ")
        (negative if in_negative else prompt).append(line)
    result: dict[str, Any] = {"Prompt": "\n".join(prompt).strip(), "Negative prompt": "\n".join(negative).strip()}
    for key, raw in _RE_PARAM.findall(last):
        value = _unquote(raw)
        result[key] = value
        size = _RE_SIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
    return result


def split_sampler(name: str) -> tuple[str, str | None]:
    """Split an old combined name: "DPM++ 2M Karras" -> ("DPM++ 2M", "Karras"); other names come back whole."""
    for suffix in SCHEDULE_SUFFIXES:
        if name.endswith(" " + suffix) and len(name) > len(suffix) + 1:
            return name[: -len(suffix) - 1], suffix
    return name, None


def _typed(value: Any, kind: type) -> Any:
    if kind is int:
        return int(float(value))
    return kind(value)


# (infotext key, request field, type)
_FIELD_MAP: tuple[tuple[str, str, type], ...] = (
    ("Steps", "steps", int),
    ("CFG scale", "cfg_scale", float),
    ("Seed", "seed", int),
    ("Size-1", "width", int),
    ("Size-2", "height", int),
    ("Denoising strength", "denoising_strength", float),
    ("Clip skip", "clip_skip", int),
    ("Variation seed", "subseed", int),
    ("Variation seed strength", "subseed_strength", float),
    ("Hires upscale", "hr_scale", float),
    ("Hires steps", "hr_second_pass_steps", int),
    ("Hires upscaler", "hr_upscaler", str),
    ("Hires resize-1", "hr_resize_x", int),
    ("Hires resize-2", "hr_resize_y", int),
    ("Mask blur", "mask_blur", int),
    ("Model hash", "model_hash", str),
    ("Model", "model_name", str),
    ("VAE", "vae_name", str),
    ("VAE hash", "vae_hash", str),
)


def infotext_to_request_fields(parsed: dict[str, Any]) -> dict[str, Any]:
    """Parsed infotext -> typed request fields (A1111 API names), for "send to txt2img" and the png-info API.

    Values that do not convert (text from some other tool) are left out rather than failing the whole image.
    """
    fields: dict[str, Any] = {
        "prompt": parsed.get("Prompt", ""),
        "negative_prompt": parsed.get("Negative prompt", ""),
    }
    for key, name, kind in _FIELD_MAP:
        if key in parsed:
            with contextlib.suppress(ValueError, TypeError):
                fields[name] = _typed(parsed[key], kind)
    sampler = parsed.get("Sampler")
    if sampler:
        schedule = parsed.get("Schedule type")
        if not schedule:
            sampler, schedule = split_sampler(sampler)
        fields["sampler_name"] = sampler
        fields["scheduler"] = schedule or "Automatic"
    elif parsed.get("Schedule type"):
        fields["scheduler"] = parsed["Schedule type"]
    if "Steps" in parsed and "clip_skip" not in fields:
        fields["clip_skip"] = 1  # A1111 leaves Clip skip out when it is 1
    if any(key.startswith("Hires ") for key in parsed):
        fields["enable_hr"] = True
    _inpaint_fields(parsed, fields)
    return fields


def _inpaint_fields(parsed: dict[str, Any], fields: dict[str, Any]) -> None:
    """The inpaint and outpaint settings Sfumato writes (A1111's names where it has them), and the styles."""
    if "Inpaint area" in parsed:
        fields["inpaint_full_res"] = str(parsed["Inpaint area"]).strip().lower() == "only masked"
    if "Masked area padding" in parsed:
        with contextlib.suppress(ValueError, TypeError):
            fields["inpaint_full_res_padding"] = _typed(parsed["Masked area padding"], int)
    if "Outpaint" in parsed:
        with contextlib.suppress(ValueError, TypeError):
            sides = [int(part) for part in str(parsed["Outpaint"]).split(",")]
            if len(sides) == 4:
                fields["outpaint"] = dict(zip(("left", "right", "top", "bottom"), sides, strict=True))
    styles = parsed.get("Styles array")
    if isinstance(styles, str):
        with contextlib.suppress(ValueError):
            styles = json.loads(styles)
    if isinstance(styles, list) and all(isinstance(style, str) for style in styles):
        fields["styles"] = styles


# --- EXIF UserComment -------------------------------------------------------------------------------------------


def encode_user_comment(text: str) -> bytes:
    """UserComment bytes as piexif's ``UserComment.dump(encoding="unicode")`` writes them."""
    return b"UNICODE\0" + text.encode("utf-16-be")


def _decode_utf16(data: bytes) -> str:
    if data[:2] in (b"\xfe\xff", b"\xff\xfe"):
        return data.decode("utf-16")
    data = data[: len(data) // 2 * 2]
    # No byte order mark: the spec says big-endian, but some writers use little-endian. Mostly-ASCII text has its
    # zero bytes first in big-endian order; pick the order that fits.
    zeros_first = data[0::2].count(0)
    zeros_second = data[1::2].count(0)
    return data.decode("utf-16-le" if zeros_second > zeros_first else "utf-16-be", errors="replace")


def decode_user_comment(data: bytes | str) -> str:
    """Text from UserComment bytes with a UNICODE, ASCII, JIS or undefined character-code prefix."""
    if isinstance(data, str):
        return data
    prefix, body = data[:8], data[8:]
    if prefix == b"UNICODE\0":
        return _decode_utf16(body)
    if prefix == b"ASCII\0\0\0":
        return body.decode("ascii", errors="replace")
    if prefix == b"JIS\0\0\0\0\0":
        return body.decode("shift_jis", errors="replace")
    if prefix == b"\0" * 8:
        return body.decode("utf-8", errors="replace")
    return data.decode("utf-8", errors="replace")


def infotext_to_exif(infotext: str) -> bytes:
    """A minimal big-endian EXIF block (with the ``Exif\\0\\0`` header) holding only the UserComment.

    Layout: TIFF header, IFD0 with one entry pointing at the Exif IFD, the Exif IFD with one UNDEFINED UserComment
    entry, then the comment bytes.
    """
    comment = encode_user_comment(infotext)
    ifd0_offset = 8
    exif_ifd_offset = ifd0_offset + 2 + 12 + 4
    data_offset = exif_ifd_offset + 2 + 12 + 4
    tiff = b"MM\0*" + struct.pack(">I", ifd0_offset)
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", EXIF_IFD_POINTER, _LONG, 1, exif_ifd_offset) + b"\0" * 4
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", USER_COMMENT, _UNDEFINED, len(comment), data_offset)
    tiff += b"\0" * 4 + comment
    return b"Exif\0\0" + tiff


# --- images -----------------------------------------------------------------------------------------------------


def _normal_format(fmt: str | None) -> str:
    normal = normal_format((fmt or "png").lstrip("."))
    if normal is None:
        raise ValueError(f"unsupported image format {fmt!r}; expected png, jpeg or webp")
    return normal


def embed_infotext(image: Image.Image, infotext: str | None, fmt: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``image.save`` that carry the infotext in ``fmt`` (default: the image's own format).

    PNG gets a ``pnginfo`` (the image's other text chunks are kept); JPEG and WEBP get ``exif`` bytes.
    """
    from PIL.PngImagePlugin import PngInfo

    fmt = _normal_format(fmt or image.format)
    if fmt == "png":
        info = PngInfo()
        for key, value in getattr(image, "text", {}).items():
            if key != "parameters" and isinstance(value, str):
                info.add_text(key, value)
        if infotext:
            info.add_text("parameters", infotext)
        return {"pnginfo": info}
    return {"exif": infotext_to_exif(infotext)} if infotext else {}


def read_infotext(image: Image.Image) -> str | None:
    """The infotext in a PNG ``parameters`` chunk or a JPEG/WEBP EXIF UserComment; None when there is none."""
    text = image.info.get("parameters")
    if isinstance(text, str) and text:
        return text
    comment = None
    with contextlib.suppress(Exception):  # a broken EXIF block means "no infotext", never a crash
        comment = image.getexif().get_ifd(EXIF_IFD_POINTER).get(USER_COMMENT)
    if comment:
        decoded = decode_user_comment(comment).rstrip("\0")
        if decoded:
            return decoded
    jpeg_comment = image.info.get("comment")  # where an over-long JPEG infotext goes (see save_image_with_infotext)
    if isinstance(jpeg_comment, bytes):
        jpeg_comment = jpeg_comment.decode("utf-8", errors="replace")
    return jpeg_comment or None


def read_image_info(image: Image.Image) -> tuple[str | None, dict[str, str]]:
    """(infotext, other text items) for the PNG-info tab and the ``png-info`` API; image properties are left out."""
    infotext = read_infotext(image)
    items: dict[str, str] = {}
    for key, value in (image.info or {}).items():
        if key in _IGNORED_INFO_KEYS or not isinstance(key, str):
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(value, str) and value != infotext:
            items[key] = value
    return infotext, items


def save_image_with_infotext(
    image: Image.Image,
    path: str | os.PathLike[str],
    infotext: str | None,
    fmt: str = "png",
    *,
    quality: int = 95,
    lossless: bool = False,
) -> Path:
    """Write ``image`` with its infotext, atomically: a temporary file in the same folder, then ``os.replace``.

    A JPEG's EXIF segment holds at most 64 KiB; an infotext too long for it (UTF-16 doubles its size) goes into
    the JPEG comment segment as UTF-8 instead, which ``read_infotext`` also reads.
    """
    fmt = _normal_format(fmt)
    path = Path(path)
    image = storable(image, fmt)
    kwargs = embed_infotext(image, infotext, fmt)
    if fmt == "jpeg":
        kwargs["quality"] = quality
        if infotext and len(kwargs["exif"]) + 2 > _JPEG_SEGMENT_LIMIT:
            del kwargs["exif"]
            kwargs["comment"] = infotext.encode("utf-8")
            if len(kwargs["comment"]) > _JPEG_SEGMENT_LIMIT:
                raise ValueError("infotext is too long to store in a JPEG; save as PNG instead")
    elif fmt == "webp":
        kwargs.update(quality=quality, lossless=lossless)
    # readable like any file the user saves (a temporary file starts private)
    with atomic_write(path, "wb", permissions=0o644) as file:
        image.save(file, format=fmt.upper(), **kwargs)
    return path
