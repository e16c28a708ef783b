"""Images on the wire: raw base64 or data URLs in, raw base64 PNG (with its infotext) out."""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, UnidentifiedImageError

from app.api.errors import ApiError

MAX_DECODED_BYTES = 64 * 1024 * 1024


def decode_image(data: str | bytes | None, field: str) -> Image.Image:
    """A base64 string (raw or ``data:image/...;base64,``) or raw bytes -> a loaded PIL image, or a 4xx naming
    the field."""
    return open_image_bytes(decode_bytes(data, field, "image"), field)


def decode_bytes(data: str | bytes | None, field: str, what: str = "image") -> bytes:
    """A base64 string (raw or a ``data:`` URL) or raw bytes -> the bytes, or a 4xx naming the field."""
    if data is None or (isinstance(data, str) and not data.strip()):
        raise ApiError(422, f"no {what} given", field)
    if isinstance(data, str):
        text = data.strip()
        if text.startswith("data:"):
            header, _, text = text.partition(",")
            if ";base64" not in header:
                raise ApiError(422, "data URL must be base64-encoded", field)
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
        except (binascii.Error, ValueError) as error:
            raise ApiError(422, f"not valid base64 ({error})", field) from error
    else:
        raw = bytes(data)
    if len(raw) > MAX_DECODED_BYTES:
        raise ApiError(413, f"{what} is larger than {MAX_DECODED_BYTES // (1024 * 1024)} MB", field)
    return raw


def open_image_bytes(raw: bytes, field: str) -> Image.Image:
    """Bytes of an image file -> a fully loaded PIL image, or a 4xx naming the field."""
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ApiError(422, "not a readable image (PNG, JPEG or WEBP expected)", field) from error
    return image


def png_bytes(image: Image.Image, infotext: str | None = None) -> bytes:
    """PNG bytes with the A1111 ``parameters`` chunk, so a saved API image carries its settings like a UI one."""
    from PIL.PngImagePlugin import PngInfo

    meta = None
    if infotext:
        meta = PngInfo()
        meta.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    return buffer.getvalue()


def encode_png_base64(image: Image.Image, infotext: str | None = None) -> str:
    return base64.b64encode(png_bytes(image, infotext)).decode("ascii")
