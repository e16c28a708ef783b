"""The upscale kind's request: A1111 Extras' fields by name, checked once before the job is queued."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from PIL import Image

from modules.errors import RequestError, check_range
from modules.formats import IMAGE_FORMATS, ImageFormat

RESIZE_MODES = ("scale by", "scale to")  # A1111's resize_mode 0 and 1
OUTPUT_FORMATS = IMAGE_FORMATS


@dataclass(frozen=True, eq=False)
class UpscaleRequest:
    """Upscale one image, several, or a folder of them (A1111's Extras: single, batch, batch from directory).

    ``resize_mode`` 0 multiplies the size by ``scale``; 1 makes it ``width`` x ``height`` (covering the box and
    centre-cropping it when ``crop``, else keeping the aspect ratio inside it, as A1111 does). ``upscaler_2`` is
    blended over ``upscaler``'s result at ``upscaler_2_visibility``. ``tile_size``/``tile_overlap`` None take the
    device's defaults; 0 tiles nothing.
    """

    images: tuple[Image.Image, ...] = ()
    names: tuple[str, ...] = ()  # one per image (file names for outputs and the record); may be empty
    input_dir: str | None = None  # a folder of images to upscale as well (batch from directory)
    upscaler: str = "Lanczos"
    upscaler_2: str = "None"
    upscaler_2_visibility: float = 0.0
    resize_mode: int = 0
    scale: float = 2.0
    width: int = 512
    height: int = 512
    crop: bool = True
    tile_size: int | None = None
    tile_overlap: int | None = None
    save_images: bool = True
    output_format: ImageFormat = "png"

    def replace(self, **changes: Any) -> UpscaleRequest:
        return dataclasses.replace(self, **changes)

    def name_of(self, index: int) -> str:
        return self.names[index] if index < len(self.names) and self.names[index] else f"image-{index + 1}"


def validate_fields(request: UpscaleRequest, max_side: int) -> None:
    """The checks that need nothing but the request; models, folders and sizes are checked by the kind."""
    if not request.images and not request.input_dir:
        raise RequestError("image", "give an image to upscale (or several, or a folder)")
    if request.names and len(request.names) != len(request.images):
        raise RequestError("names", f"{len(request.names)} names for {len(request.images)} images")
    check_range("resize_mode", request.resize_mode, 0, len(RESIZE_MODES) - 1)
    check_range("upscaler_2_visibility", request.upscaler_2_visibility, 0.0, 1.0)
    if request.resize_mode == 0:
        if not 0 < request.scale <= 8:  # NaN fails too
            raise RequestError("upscaling_resize", f"the scale must be above 0 and at most 8, got {request.scale:g}")
    else:
        check_range("upscaling_resize_w", request.width, 1, max_side)
        check_range("upscaling_resize_h", request.height, 1, max_side)
    if request.output_format not in OUTPUT_FORMATS:
        raise RequestError("output_format", f"must be one of {', '.join(OUTPUT_FORMATS)}")
    for name in ("tile_size", "tile_overlap"):
        value = getattr(request, name)
        if value is not None:
            check_range(name, value, 0, 4096)
