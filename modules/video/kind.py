"""The video kind of work: a clip from a prompt, an image or a video, through the job queue.

``VideoRunner.resolve`` is the one place a video request's defaults are decided (the model, the checkpoint an
AnimateDiff motion adapter animates, the family's frames / fps / size / steps / CFG, a random seed), so the stored
job says exactly what will run. ``validate`` refuses, naming the field, what the chosen family cannot make (SVD
asked for text-to-video, an SDXL motion adapter on an SD 1.x checkpoint, a Wan size that is not a multiple of 16).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.errors import RequestError
from modules.image.codec import read_saved_image, write_saved_image
from modules.jobs.artifacts import Artifact
from modules.jobs.control import JobControl, Progress
from modules.jobs.kinds import Kind
from modules.video.defaults import SVD_DECODE_CHUNK, model_defaults
from modules.video.registry import FAMILY_LABELS, VideoModel, VideoModelRegistry
from modules.video.request import MODE_LABELS, VideoLimits, VideoRequest, validate_fields

if TYPE_CHECKING:
    from modules.models.registry import CheckpointInfo, ModelRegistry
    from modules.runtime.outputs import OutputStore
    from modules.video.pipelines import VideoPipelines

VIDEO = "video"
OUTPUT_FOLDER = "videos"
FRAMES_FOLDER = "video-frames"
# What each family's pipeline needs its sides to be a multiple of (its VAE's downscale, times Wan's 2x2 patches).
SIZE_MULTIPLE = {"animatediff": 8, "svd": 8, "wan": 16}


@dataclass(frozen=True, eq=False)
class SavedVideo:
    path: Path
    format: str


@dataclass(frozen=True, eq=False)
class VideoResult:
    """A finished clip: its files (the first is the main one), its frames as PNGs when asked, what made it."""

    videos: list[SavedVideo] = field(default_factory=list)
    frames: list[Path] = field(default_factory=list)
    infotext: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def artifacts(self) -> list[Artifact]:
        items = [Artifact(type="video", path=video.path, infotext=self.infotext, parameters=self.parameters)
                 for video in self.videos]
        items += [Artifact(type="image", path=path, infotext=self.infotext, parameters=self.parameters)
                  for path in self.frames]
        return items

    @property
    def counted_images(self) -> int:
        return 1 if self.videos else 0


class VideoRunner:
    """Resolves, checks and runs video requests; ``run`` is called on the worker thread, which owns the pipelines."""

    def __init__(self, registry: VideoModelRegistry, checkpoints: ModelRegistry,
                 pipelines: VideoPipelines | None, store: OutputStore, limits: VideoLimits | None = None,
                 default_checkpoint: Callable[[], str | None] = lambda: None) -> None:
        self.registry = registry
        self.checkpoints = checkpoints
        self.pipelines = pipelines
        self.store = store
        self.limits = limits or VideoLimits()
        self.default_checkpoint = default_checkpoint

    # -- before queueing -------------------------------------------------------------------------------------------
    def default_model(self, mode: str) -> VideoModel | None:
        """The first installed model that makes ``mode`` (motion adapters first, the embedded one leading; for
        AnimateDiff, one that fits the default checkpoint)."""
        checkpoint = self._checkpoint(None)
        for model in self.registry.list():
            if mode not in model.modes:
                continue
            if model.is_motion_adapter:
                if checkpoint is None:
                    continue
                from modules.video.pipelines import check_adapter_fits

                try:
                    check_adapter_fits(model, checkpoint)
                except RequestError:
                    continue
            return model
        return None

    def _checkpoint(self, query: str | None) -> CheckpointInfo | None:
        from modules.models.registry import UnknownModelError

        wanted = query or self.default_checkpoint()
        try:
            if wanted:
                return self.checkpoints.find(wanted)
        except UnknownModelError as error:
            if query:
                raise RequestError("checkpoint", str(error)) from None
        models = self.checkpoints.list()
        return models[0] if models else None

    def model_of(self, request: VideoRequest) -> VideoModel:
        if request.model:
            try:
                return self.registry.find(request.model)
            except RequestError:
                if self._is_image_checkpoint(request.model):  # a common slip: say which field it belongs in
                    raise RequestError("model", f"{request.model!r} is an image checkpoint, not a video model; "
                                                "choose it as the image checkpoint an AnimateDiff motion adapter "
                                                "animates") from None
                raise
        found = self.default_model(request.mode)
        if found is None:
            what = MODE_LABELS[request.mode]
            raise RequestError("model", f"no installed video model makes {what}; put AnimateDiff motion adapters "
                                        f"in {self.registry.motion_roots[0]} or SVD / Wan folders in "
                                        f"{self.registry.video_root}")
        return found

    def _is_image_checkpoint(self, name: str) -> bool:
        from modules.models.registry import UnknownModelError

        try:
            self.checkpoints.find(name)
        except UnknownModelError:
            return False
        return True

    def resolve(self, request: VideoRequest) -> VideoRequest:
        """The request with every default decided (see the module docstring); set values are never changed."""
        validate_fields(request, self.limits)  # a bad field is named before any default is looked up
        model = self.model_of(request)
        changes: dict[str, Any] = {"model": model.name}
        checkpoint_size = None
        if model.is_motion_adapter:
            checkpoint = self._checkpoint(request.checkpoint)
            if checkpoint is None:
                raise RequestError("checkpoint", f"AnimateDiff needs an image checkpoint; put one in "
                                                 f"{self.checkpoints.checkpoint_roots[0]}")
            changes["checkpoint"] = checkpoint.title
            from modules.models.checkpoints import default_size

            try:
                checkpoint_size = default_size(checkpoint.family or "sd1", None, checkpoint.path)
            except (ValueError, KeyError, OSError):
                checkpoint_size = None
        elif request.checkpoint:
            raise RequestError("checkpoint", f"{FAMILY_LABELS[model.family]} models are whole pipelines; an image "
                                             "checkpoint is only for AnimateDiff motion adapters")
        defaults = model_defaults(model, checkpoint_size)
        for name in ("fps", "steps", "cfg_scale", "width", "height"):
            if getattr(request, name) is None:
                changes[name] = getattr(defaults, name)
        if request.frames is None:
            changes["frames"] = len(request.init_video) if request.init_video else defaults.frames
        if request.seed == -1:
            changes["seed"] = random.randrange(2**32)
        if request.sampler is None and defaults.sampler and model.is_motion_adapter:
            changes["sampler"] = defaults.sampler
        if request.motion_end is None:
            changes["motion_end"] = defaults.motion_end  # 1 for families without a motion adapter
        if model.family == "svd" and request.decode_chunk_size is None:
            changes["decode_chunk_size"] = SVD_DECODE_CHUNK
        return request.replace(**changes)

    def validate(self, request: VideoRequest) -> None:
        validate_fields(request, self.limits)
        model = self.model_of(request)
        if request.mode not in model.modes:
            field_name = {"txt2vid": "init_image", "img2vid": "init_image", "vid2vid": "init_video"}[request.mode]
            makes = " and ".join(MODE_LABELS[mode] for mode in model.modes)
            raise RequestError(field_name, f"{model.label} makes {makes}, not {MODE_LABELS[request.mode]}"
                               + (": give it an init image" if "img2vid" in model.modes else ""))
        if model.is_motion_adapter:
            from modules.video.pipelines import check_adapter_fits

            checkpoint = self._checkpoint(request.checkpoint)
            if checkpoint is None:
                raise RequestError("checkpoint", "AnimateDiff needs an image checkpoint")
            check_adapter_fits(model, checkpoint)
            if request.mode == "vid2vid" and checkpoint.family == "sdxl":
                raise RequestError("init_video", "video-to-video with AnimateDiff runs on SD 1.x checkpoints only; "
                                                 f"{checkpoint.title} is SDXL")
        else:
            if request.sampler:
                raise RequestError("sampler", f"{FAMILY_LABELS[model.family]} samples with its own scheduler; "
                                              "leave the sampler empty")
            if request.motion_end is not None and request.motion_end != 1.0:
                raise RequestError("motion_end", f"{FAMILY_LABELS[model.family]} has no motion adapter to end "
                                                 "early; motion_end is for AnimateDiff")
        if request.sampler:
            from modules.image.samplers import UnknownSamplerError, resolve_sampler

            try:
                resolve_sampler(request.sampler)
            except UnknownSamplerError as error:
                raise RequestError("sampler", str(error)) from None
        multiple = SIZE_MULTIPLE[model.family]
        for name in ("width", "height"):
            value = getattr(request, name)
            if value is not None and value % multiple:
                raise RequestError(name, f"{FAMILY_LABELS[model.family]} needs a multiple of {multiple}, got {value}")
        if model.family == "wan" and request.frames is not None and (request.frames - 1) % 4:
            raise RequestError("frames", f"Wan makes 4k+1 frames (its VAE packs 4 frames into one); "
                                         f"{request.frames} is not (try {(request.frames - 1) // 4 * 4 + 1})")
        if model.family == "animatediff" and request.frames is not None and request.mode == "txt2vid" \
                and model.path.is_dir():
            from modules.video.defaults import _read_json

            longest = _read_json(model.path / "config.json").get("motion_max_seq_length")
            if isinstance(longest, int) and request.frames > longest:
                raise RequestError("frames", f"{model.name} animates at most {longest} frames, asked {request.frames}")

    # -- running ---------------------------------------------------------------------------------------------------
    def run(self, request: VideoRequest, control: JobControl) -> VideoResult:
        from modules.video.pipelines import VideoInterrupted, make_frames, set_sampler

        assert self.pipelines is not None, "a video runner without pipelines only checks requests"
        model = self.model_of(request)
        checkpoint = self._checkpoint(request.checkpoint) if model.is_motion_adapter else None
        progress = Progress(job_count=1, steps=int(request.steps or 1), text=f"Loading {model.name}")
        control.report(progress)
        loaded = self.pipelines.get(model, request.mode, checkpoint)
        sampler = set_sampler(loaded, request.sampler)

        def on_step(done: int, total: int) -> None:
            progress.steps = max(1, total or progress.steps)
            progress.step = min(done, progress.steps)
            progress.text = "Decoding frames" if progress.step >= progress.steps else \
                f"Denoising step {progress.step}/{progress.steps}"
            control.report(progress)

        progress.text = "Denoising"
        control.report(progress)
        try:
            frames = make_frames(loaded, request, on_step, lambda: control.interrupted.is_set())
        except VideoInterrupted:
            return VideoResult(interrupted=True)
        progress.step, progress.text = progress.steps, "Encoding video"
        control.report(progress)
        parameters = self.parameters(request, model, sampler)
        return self.save(request, frames, parameters)

    def parameters(self, request: VideoRequest, model: VideoModel, sampler: str) -> dict[str, Any]:
        """What made the clip, in A1111's infotext vocabulary where it has a word for it."""
        values: dict[str, Any] = {"Steps": request.steps, "Sampler": sampler, "CFG scale": request.cfg_scale,
                                  "Seed": request.seed, "Size": f"{request.width}x{request.height}"}
        if request.checkpoint:
            values["Model"] = request.checkpoint
        values.update({"Video model": model.name, "Video family": model.family, "Video mode": request.mode,
                       "Frames": request.frames, "FPS": request.fps})
        if model.family == "svd":
            values.update({"Motion bucket": request.motion_bucket_id,
                           "Noise augmentation": request.noise_aug_strength,
                           "Decode chunk size": request.decode_chunk_size})
        elif request.decode_chunk_size:
            values["Decode chunk size"] = request.decode_chunk_size
        if model.is_motion_adapter and request.motion_end is not None and request.motion_end < 1.0:
            values["Motion end"] = request.motion_end
        if request.mode == "vid2vid":
            values["Denoising strength"] = request.strength
        return values

    def save(self, request: VideoRequest, frames: list[Any], parameters: dict[str, Any]) -> VideoResult:
        from modules.image.infotext import format_infotext
        from modules.runtime.outputs import prompt_slug
        from modules.video.encode import EXTENSIONS, write_video

        infotext = format_infotext(request.prompt, request.negative_prompt, parameters)
        record = {"prompt": request.prompt, "negative_prompt": request.negative_prompt, **parameters}
        stem = f"{request.seed}-{prompt_slug(request.prompt, limit=40) if request.prompt else 'video'}"
        videos = []
        for fmt in dict.fromkeys(request.output_formats):
            path = self.store.save_file(OUTPUT_FOLDER, stem, EXTENSIONS[fmt], lambda staging, fmt=fmt: write_video(
                frames, staging, fmt, int(request.fps), infotext, record))
            videos.append(SavedVideo(path, fmt))
        saved_frames = []
        if request.save_frames:
            for index, frame in enumerate(frames):
                saved_frames.append(self.store.save_named(frame, FRAMES_FOLDER, infotext,
                                                          f"{stem}-frame{index:03d}", "png"))
        return VideoResult(videos=videos, frames=saved_frames, infotext=infotext, parameters=record)


# -- the record codec -----------------------------------------------------------------------------------------------
_FIELDS = tuple(item.name for item in dataclasses.fields(VideoRequest) if item.name not in ("init_image", "init_video"))


def request_to_dict(request: VideoRequest, folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = {name: getattr(request, name) for name in _FIELDS}
    data["output_formats"] = list(request.output_formats)
    data["init_image"] = write_saved_image(request.init_image, folder, "init.png") \
        if request.init_image is not None else None
    data["init_video"] = [write_saved_image(frame, folder, f"init-frame-{index:04d}.png")
                          for index, frame in enumerate(request.init_video)]
    return data


def request_from_dict(data: dict[str, Any], folder: Path, strict: bool) -> VideoRequest:
    values = {key: value for key, value in data.items() if key in _FIELDS}
    values["output_formats"] = tuple(values.get("output_formats") or ("mp4",))
    image = read_saved_image(data["init_image"], folder, "init_image", strict) if data.get("init_image") else None
    frames = [read_saved_image(name, folder, "init_video", strict) for name in data.get("init_video") or []]
    return VideoRequest(init_image=image, init_video=tuple(frame for frame in frames if frame is not None), **values)


def result_to_dict(result: VideoResult, folder: Path) -> dict[str, Any]:
    return {"videos": [{"file": str(Path(video.path).resolve()), "format": video.format} for video in result.videos],
            "frames": [str(Path(path).resolve()) for path in result.frames], "infotext": result.infotext,
            "parameters": result.parameters, "interrupted": result.interrupted}


def result_from_dict(data: dict[str, Any], folder: Path) -> tuple[VideoResult, list[str]]:
    problems: list[str] = []
    videos = []
    for entry in data.get("videos") or []:
        path = Path(str(entry.get("file", "")))
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        videos.append(SavedVideo(path, str(entry.get("format", path.suffix.lstrip(".")))))
    frames = []
    for name in data.get("frames") or []:
        path = Path(str(name))
        if path.is_file():
            frames.append(path)
        else:
            problems.append(f"{path}: missing")
    return VideoResult(videos=videos, frames=frames, infotext=str(data.get("infotext", "")),
                       parameters=dict(data.get("parameters") or {}),
                       interrupted=bool(data.get("interrupted"))), problems


def video_kind(runner: VideoRunner) -> Kind:
    def describe(request: VideoRequest) -> str:
        what = request.prompt or ("an image" if request.init_image is not None else "a video")
        return f"{what} ({request.frames or '?'} frames with {request.model or '?'})"

    return Kind(
        name=VIDEO,
        request_type=VideoRequest,
        validate=runner.validate,
        run=runner.run,
        encode_request=request_to_dict,
        decode_request=request_from_dict,
        encode_result=result_to_dict,
        decode_result=result_from_dict,
        resolve=runner.resolve,
        initial_progress=lambda request: Progress(job_count=1, steps=int(request.steps or 1)),
        requested_images=lambda _request: 1,
        label=lambda request: request.mode,
        describe=describe,
    )
