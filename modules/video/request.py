"""The video kind's request: what to make, on which model, and in which files, checked once before queueing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image

from modules.errors import RequestError, check_range

VideoFormat = Literal["mp4", "webm", "gif", "webp"]
VIDEO_FORMATS: tuple[str, ...] = ("mp4", "webm", "gif", "webp")
Mode = Literal["txt2vid", "img2vid", "vid2vid"]
MODE_LABELS = {"txt2vid": "text-to-video", "img2vid": "image-to-video", "vid2vid": "video-to-video"}


@dataclass(frozen=True)
class VideoLimits:
    """Bounds a video request must respect (a clip is frames x pixels: both are bounded so one request cannot run
    a shared studio out of memory)."""

    max_frames: int = 257
    max_side: int = 2048
    max_frame_pixels: int = 1920 * 1088
    max_fps: int = 60
    max_steps: int = 150
    max_cfg: float = 30.0
    max_init_frames: int = 257


@dataclass(frozen=True, eq=False)
class VideoRequest:
    """One clip. Fields left None are the studio's to decide at submission (``VideoRunner.resolve``): the model
    (the first installed that fits), the image checkpoint an AnimateDiff motion adapter runs on (the studio's
    default), and the model family's frames, fps, size, steps and CFG.

    The mode follows from the inputs: ``init_video`` frames make video-to-video (AnimateDiff, at ``strength``),
    an ``init_image`` image-to-video (SVD, Wan image-to-video), neither text-to-video. ``motion_bucket_id``,
    ``noise_aug_strength`` and ``decode_chunk_size`` are Stable Video Diffusion's conditioning; ``sampler`` and
    ``motion_end`` (the fraction of the steps the motion adapter acts in; see ``modules/video/motion_end.py``) are
    for AnimateDiff only (the other families sample with their own scheduler). ``output_formats`` lists the
    files to write (the first is the main one); ``save_frames`` adds each frame as a PNG.
    """

    prompt: str = ""
    negative_prompt: str = ""
    model: str | None = None
    checkpoint: str | None = None
    seed: int = -1
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: int | None = None
    sampler: str | None = None
    init_image: Image.Image | None = None
    init_video: tuple[Image.Image, ...] = ()
    strength: float = 0.6
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    decode_chunk_size: int | None = None
    motion_end: float | None = None
    output_formats: tuple[str, ...] = ("mp4",)
    save_frames: bool = False

    def replace(self, **changes: Any) -> VideoRequest:
        return dataclasses.replace(self, **changes)

    @property
    def mode(self) -> Mode:
        if self.init_video:
            return "vid2vid"
        return "img2vid" if self.init_image is not None else "txt2vid"


def validate_fields(request: VideoRequest, limits: VideoLimits) -> None:
    """The checks that need nothing but the request; the model and its family are checked by the runner."""
    if not isinstance(request.prompt, str) or not isinstance(request.negative_prompt, str):
        raise RequestError("prompt", "the prompt must be text")
    if request.init_image is not None and request.init_video:
        raise RequestError("init_image", "give an init image or an init video, not both")
    check_range("seed", request.seed, -1, 2**32 - 1)
    if request.steps is not None:
        check_range("steps", request.steps, 1, limits.max_steps)
    if request.cfg_scale is not None:
        check_range("cfg_scale", request.cfg_scale, 0.0, limits.max_cfg)
    if request.frames is not None:
        check_range("frames", request.frames, 1, limits.max_frames)
    if request.fps is not None:
        check_range("fps", request.fps, 1, limits.max_fps)
    for name in ("width", "height"):
        value = getattr(request, name)
        if value is not None:
            check_range(name, value, 8, limits.max_side)
    if request.width is not None and request.height is not None and \
            request.width * request.height > limits.max_frame_pixels:
        raise RequestError("width", f"{request.width}x{request.height} is over this studio's "
                                    f"{limits.max_frame_pixels} pixels a frame")
    check_range("strength", request.strength, 0.0, 1.0)
    check_range("motion_bucket_id", request.motion_bucket_id, 0, 1023)
    check_range("noise_aug_strength", request.noise_aug_strength, 0.0, 1.0)
    if request.motion_end is not None:
        check_range("motion_end", request.motion_end, 0.0, 1.0)
    if request.decode_chunk_size is not None:
        check_range("decode_chunk_size", request.decode_chunk_size, 1, limits.max_frames)
    if len(request.init_video) > limits.max_init_frames:
        raise RequestError("init_video", f"{len(request.init_video)} frames; this studio takes at most "
                                         f"{limits.max_init_frames}")
    if not request.output_formats:
        raise RequestError("output_format", f"choose at least one of {', '.join(VIDEO_FORMATS)}")
    for fmt in request.output_formats:
        if fmt not in VIDEO_FORMATS:
            raise RequestError("output_format", f"{fmt!r} is not a video format; use one of "
                                                f"{', '.join(VIDEO_FORMATS)}")
