"""The one request type every front end builds, and the checks it must pass before it is queued.

The UI, the A1111 API, the OpenAI and Stability dialects all translate their own wire format into a
``GenerationRequest``; nothing downstream knows who asked. A model, sampler or setting for one request is a
field here, never a global to flip. Validation happens once, here, so every front end reports the same clear
message for the same mistake and the worker never sees a request it cannot run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

from modules.controlnet.units import ControlNetUnit, check_unit
from modules.errors import RequestError, check_range
from modules.formats import IMAGE_FORMATS, ImageFormat
from modules.image.masks import has_transparency
from modules.safety import SafetyMode, check_mode

Task = Literal["txt2img", "img2img", "inpaint", "outpaint"]
TASKS: tuple[str, ...] = ("txt2img", "img2img", "inpaint", "outpaint")
RESIZE_MODES = ("just resize", "crop and resize", "resize and fill")
INPAINT_FILLS = ("fill", "original", "latent noise", "latent nothing")


@dataclass(frozen=True)
class Limits:
    """Bounds a request must respect; set from the command line so a shared studio cannot be run out of memory."""

    max_pixels: int = 2048 * 2048
    max_side: int = 4096
    max_steps: int = 150
    max_batch_size: int = 8
    max_batch_count: int = 100
    max_cfg: float = 30.0
    max_upscale_pixels: int = 8192 * 8192  # an upscaler's output (a 2048 px image at 4x fits)
    max_upscale_side: int = 16384
    max_upscale_inputs: int = 1000  # images in one upscale job (a folder, a batch)


@dataclass(frozen=True)
class HiresFix:
    """txt2img's second pass: upscale the first image (in latent or pixel space) and denoise it again."""

    scale: float = 2.0
    upscaler: str = "Latent"
    steps: int = 0  # 0 = as many as the first pass
    denoising_strength: float = 0.7
    resize_x: int = 0
    resize_y: int = 0

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The second pass size: explicit resize if given (one side 0 keeps the aspect), else scale; multiples of 8."""
        if self.resize_x or self.resize_y:
            tw = self.resize_x or round(self.resize_y * width / height)
            th = self.resize_y or round(self.resize_x * height / width)
        else:
            tw, th = round(width * self.scale), round(height * self.scale)
        return max(8, tw // 8 * 8), max(8, th // 8 * 8)


@dataclass(frozen=True)
class Outpaint:
    """Pixels to add on each side of the init image."""

    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0

    @property
    def any(self) -> bool:
        return any((self.left, self.right, self.top, self.bottom))


@dataclass(frozen=True)
class SdUpscale:
    """A1111's "SD upscale": enlarge the init image with an upscaler, then redraw it tile by tile with img2img at
    the request's denoising strength (tiles of the request's width x height, or the model's size), blending the
    ``overlap`` pixels between tiles so no seam shows."""

    scale: float = 2.0
    upscaler: str = "Lanczos"
    overlap: int = 64


@dataclass(frozen=True, eq=False)
class GenerationRequest:
    """Everything one generation needs. Immutable: derive variants with ``dataclasses.replace``."""

    task: Task = "txt2img"
    prompt: str = ""
    negative_prompt: str = ""
    styles: tuple[str, ...] = ()
    model: str | None = None  # checkpoint title/name/hash; None = the studio's default
    vae: str | None = None  # None = the checkpoint's own VAE
    sampler_name: str = "Euler"
    scheduler: str = "Automatic"
    steps: int = 0  # 0 = the model's default (20 for SD 1.x/2.x/XL, 28 for SD3 and Flux.1-dev, 4 for schnell)
    cfg_scale: float | None = None  # None = the model's default (7; Flux.1-dev's distilled guidance 3.5)
    width: int = 0  # 0 = the model family's default size
    height: int = 0
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int = 1
    noise_on_device: bool = False  # False: draw initial noise on the CPU so a seed gives the same image anywhere
    # img2img / inpaint / outpaint
    init_image: Image.Image | None = None
    mask: Image.Image | None = None  # white = repaint; None with an RGBA init image = use its alpha
    denoising_strength: float = 0.75
    resize_mode: int = 0  # index into RESIZE_MODES
    mask_blur: int = 4
    inpainting_fill: int = 1  # index into INPAINT_FILLS
    inpaint_full_res: bool = False  # "only masked"
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: bool = False
    outpaint: Outpaint = field(default_factory=Outpaint)
    hires: HiresFix | None = None
    sd_upscale: SdUpscale | None = None  # img2img only
    controlnet: tuple[ControlNetUnit, ...] = ()  # ControlNet units, applied for this request only
    make_grid: bool = True
    save_images: bool = True
    output_format: ImageFormat = "png"
    safety: SafetyMode | None = None  # NSFW filter: off, blur, black; None = the studio's or the API key's default
    extensions: dict[str, dict[str, Any]] = field(default_factory=dict)  # settings by extension name

    def replace(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    @property
    def uses_init_image(self) -> bool:
        return self.task != "txt2img"


def check_size(width: int, height: int, limits: Limits) -> None:
    """Sizes must be multiples of 8 (the VAE's factor) and fit the configured limits."""
    for name, value in (("width", width), ("height", height)):
        if value % 8:
            raise RequestError(name, f"must be a multiple of 8, got {value} (try {max(8, round(value / 8) * 8)})")
        check_range(name, value, 8, limits.max_side)
    if width * height > limits.max_pixels:
        raise RequestError(
            "width", f"{width}x{height} is {width * height:,} pixels, over this studio's limit of {limits.max_pixels:,}"
        )


def validate_request(request: GenerationRequest, limits: Limits) -> None:
    """Reject what cannot run, naming the field. Model- and sampler-dependent checks happen where those resolve."""
    if request.task not in TASKS:
        raise RequestError("task", f"unknown task {request.task!r}; expected one of {', '.join(TASKS)}")
    check_range("width", request.width, 0, limits.max_side)
    check_range("height", request.height, 0, limits.max_side)
    if request.width or request.height:  # a side left 0 takes the model's default: its full size is checked then
        check_size(request.width or 8, request.height or 8, limits)
    check_range("steps", request.steps, 0, limits.max_steps)  # 0: the model's default, filled in at submission
    if request.cfg_scale is not None:
        check_range("cfg_scale", request.cfg_scale, 0.0, limits.max_cfg)
    check_range("batch_size", request.batch_size, 1, limits.max_batch_size)
    check_range("n_iter", request.n_iter, 1, limits.max_batch_count)
    check_range("clip_skip", request.clip_skip, 1, 12)
    check_range("subseed_strength", request.subseed_strength, 0.0, 1.0)
    check_range("denoising_strength", request.denoising_strength, 0.0, 1.0)
    check_range("mask_blur", request.mask_blur, 0, 64)
    check_range("inpaint_full_res_padding", request.inpaint_full_res_padding, 0, 256)
    check_range("resize_mode", request.resize_mode, 0, len(RESIZE_MODES) - 1)
    check_range("inpainting_fill", request.inpainting_fill, 0, len(INPAINT_FILLS) - 1)
    for name in ("seed", "subseed"):
        value = getattr(request, name)
        if value != -1:
            check_range(name, value, 0, 2**32 - 1)
    if request.output_format not in IMAGE_FORMATS:
        raise RequestError("output_format", "must be png, jpeg or webp")
    check_mode(request.safety)
    if request.uses_init_image and request.init_image is None:
        raise RequestError("init_image", f"{request.task} needs an input image")
    if request.task == "inpaint" and request.mask is None and not has_transparency(request.init_image):
        raise RequestError("mask", "inpaint needs a mask: draw one, upload one, or give an image with transparency")
    if request.mask is not None and request.init_image is not None and request.mask.size != request.init_image.size:
        raise RequestError(
            "mask", f"mask is {request.mask.size[0]}x{request.mask.size[1]} but the image is "
            f"{request.init_image.size[0]}x{request.init_image.size[1]}; they must match"
        )
    if request.task == "outpaint":
        for side in ("left", "right", "top", "bottom"):
            check_range(f"outpaint.{side}", getattr(request.outpaint, side), 0, limits.max_side)
        if not request.outpaint.any:
            raise RequestError("outpaint", "say how many pixels to add on at least one side")
    if request.sd_upscale is not None:
        if request.task != "img2img":
            raise RequestError("sd_upscale", "SD upscale redraws an input image: use it with img2img")
        check_range("sd_upscale.scale", request.sd_upscale.scale, 1.0, 8.0)
        check_range("sd_upscale.overlap", request.sd_upscale.overlap, 0, 512)
        if request.init_image is not None:
            width = round(request.init_image.width * request.sd_upscale.scale)
            height = round(request.init_image.height * request.sd_upscale.scale)
            if width * height > limits.max_upscale_pixels or max(width, height) > limits.max_upscale_side:
                raise RequestError("sd_upscale.scale", f"{width}x{height} is over this studio's limit of "
                                   f"{limits.max_upscale_pixels:,} pixels ({limits.max_upscale_side} a side)")
    for index, unit in enumerate(request.controlnet):
        check_unit(unit, index)
    if request.controlnet and request.sd_upscale is not None:
        raise RequestError("controlnet", "SD upscale redraws tile by tile and cannot take ControlNet units yet: "
                                         "use one or the other")
    if request.hires is not None:
        check_range("hires.scale", request.hires.scale, 1.0, 4.0)
        check_range("hires.denoising_strength", request.hires.denoising_strength, 0.0, 1.0)
        check_range("hires.steps", request.hires.steps, 0, limits.max_steps)
        check_hires_size(request, limits)


def check_hires_size(request: GenerationRequest, limits: Limits) -> None:
    """The second pass's size must fit the limits like the first's, refused at submission naming the hires field
    that asks for it (not, minutes later, as a failed job blaming ``width``). With the model's default size (width
    and height 0, resolved when the model loads) only explicit sizes can be checked here; the rest is checked
    again when the job runs."""
    hires = request.hires
    if hires is None:
        return
    for name, value in (("hires.resize_x", hires.resize_x), ("hires.resize_y", hires.resize_y)):
        check_range(name, value, 0, limits.max_side)
    field = "hires.resize_x" if hires.resize_x else "hires.resize_y" if hires.resize_y else "hires.scale"
    if request.width and request.height:
        target = hires.target_size(request.width, request.height)
    elif hires.resize_x and hires.resize_y:
        target = (hires.resize_x, hires.resize_y)
    else:
        return
    width, height = target
    if max(width, height) > limits.max_side:
        raise RequestError(field, f"the second pass would be {width}x{height}, over this studio's limit of "
                                  f"{limits.max_side} pixels a side")
    if width * height > limits.max_pixels:
        raise RequestError(field, f"the second pass would be {width}x{height} = {width * height:,} pixels, over "
                                  f"this studio's limit of {limits.max_pixels:,}")



