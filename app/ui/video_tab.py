"""The Video tab: a clip from a prompt (AnimateDiff, Wan), an image (SVD, Wan image-to-video) or a video
(AnimateDiff video-to-video), through the video kind of job.

Choosing a model fills frames, fps, size, steps and CFG with that family's defaults, asked of the video kind's own
``resolve`` (the one place defaults are decided), so the tab shows exactly what a job left to the studio would
get. Generate queues one job with its progress (denoising steps, then decoding) and interrupt; the clip plays in
the tab and its files land in ``outputs/videos`` with their parameters inside.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.ui.accessible import REFRESH_GLYPH, icon_button
from app.ui.form import Form, Values
from app.ui.generate import failure, follow_job, interrupt, status_html
from app.ui.request_form import load_image
from app.ui.uploads import named_upload
from modules.errors import RequestError
from modules.video.request import VIDEO_FORMATS, VideoRequest

if TYPE_CHECKING:
    from modules.jobs.queue import Job
    from modules.runtime.services import Services

AUTOMATIC = "Automatic"
DEFAULT_FIELDS = ("width", "height", "frames", "fps", "steps", "cfg_scale", "motion_end")
FOLLOWED = ("job", "progress", "preview", "status")


def video_models(services: Services) -> list[tuple[str, str]]:
    """(label, name) of every installed video model, motion adapters first (the embedded one leading)."""
    from modules.video.registry import VideoModelRegistry

    return [(model.label, model.name) for model in VideoModelRegistry(services.config.models_dir).list()]


def checkpoints(services: Services) -> list[str]:
    return [AUTOMATIC, *(info.title for info in services.engine.registry.list())]


def resolved_defaults(services: Services, model: str | None, checkpoint: str | None,
                      with_image: bool = False) -> dict[str, Any]:
    """What a job on ``model`` that leaves the shape to the studio would get (empty when it cannot tell)."""
    from modules.jobs.kinds import UnknownKind

    try:
        kind = services.queue.kinds.get("video")
    except UnknownKind:  # a queue wired without the video kind (some tests' stand-in queues): nothing to show
        return {}
    probe = VideoRequest(model=model or None, checkpoint=None if checkpoint in (None, "", AUTOMATIC) else checkpoint,
                         init_image=_PROBE_IMAGE() if with_image else None)
    try:
        resolved = kind.resolve(probe)
    except RequestError:
        return {}
    return {"model": resolved.model, **{name: getattr(resolved, name) for name in DEFAULT_FIELDS}}


def _PROBE_IMAGE() -> Any:  # noqa: N802 - a stand-in image only for asking which model makes image-to-video
    from PIL import Image

    return Image.new("RGB", (8, 8))


def build_video(services: Services) -> Form:
    """Lay out and wire the tab (call inside a ``gr.Tab``)."""
    form = Form()
    models = video_models(services)
    start = resolved_defaults(services, None, None)
    if not start and models:
        start = resolved_defaults(services, models[0][1], None)
    limits = services.config.limits
    with gr.Row():
        with gr.Column(scale=1):
            with gr.Row():
                form["model"] = gr.Dropdown(models, value=start.get("model"), label="Video model", scale=4,
                                            info="AnimateDiff motion adapters (models/animatediff), SVD and Wan "
                                                 "folders (models/video)")
                form["refresh"] = gr.Button(REFRESH_GLYPH, size="sm", scale=0, min_width=40,
                                            **icon_button("refresh-video"))
            form["checkpoint"] = gr.Dropdown(checkpoints(services), value=AUTOMATIC, label="Image checkpoint",
                                             info="the image model an AnimateDiff motion adapter animates")
            form["prompt"] = gr.Textbox(label="Prompt", lines=3, placeholder="a red circle moving to the right")
            form["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=2)
            form["init_image"] = named_upload(gr.Image(label="Init image (image-to-video)", type="filepath",
                                                       image_mode=None, sources=["upload", "clipboard"],
                                                       height=200))
            with gr.Row():
                form["width"] = gr.Number(label="Width", value=start.get("width", 512), precision=0, minimum=8,
                                          maximum=limits.max_side)
                form["height"] = gr.Number(label="Height", value=start.get("height", 512), precision=0, minimum=8,
                                           maximum=limits.max_side)
            with gr.Row():
                form["frames"] = gr.Number(label="Frames", value=start.get("frames", 16), precision=0, minimum=1)
                form["fps"] = gr.Number(label="FPS", value=start.get("fps", 8), precision=0, minimum=1)
            with gr.Row():
                form["steps"] = gr.Number(label="Sampling steps", value=start.get("steps", 25), precision=0,
                                          minimum=1, maximum=limits.max_steps)
                form["cfg_scale"] = gr.Number(label="CFG scale", value=start.get("cfg_scale", 7.5), minimum=0,
                                              maximum=limits.max_cfg, step=0.5)
                form["seed"] = gr.Number(label="Seed", value=-1, precision=0, info="-1 = random")
            form["sampler"] = gr.Dropdown(_samplers(), value=AUTOMATIC, label="Sampler",
                                          info="AnimateDiff only; SVD and Wan use their own scheduler")
            form["motion_end"] = gr.Slider(0, 1, step=0.05, value=start.get("motion_end", 1.0),
                                           label="Motion end (AnimateDiff)",
                                           info="the share of the steps the motion adapter acts in; the image "
                                                "model alone finishes the frames after it (sharper subjects)")
            with gr.Accordion("Stable Video Diffusion", open=False):
                form["motion_bucket_id"] = gr.Slider(1, 255, step=1, value=127, label="Motion bucket",
                                                     info="more motion above 127, less below")
                form["noise_aug_strength"] = gr.Slider(0, 1, step=0.01, value=0.02, label="Noise augmentation")
                form["decode_chunk_size"] = gr.Number(label="Decode chunk size", value=0, precision=0, minimum=0,
                                                      info="frames decoded at once; 0 = the family's default")
            with gr.Accordion("Video-to-video (AnimateDiff)", open=False):
                form["init_video"] = gr.File(label="Init video", file_types=["video", ".gif", ".webp"])
                form["strength"] = gr.Slider(0, 1, step=0.01, value=0.6, label="Denoising strength")
            with gr.Row():
                form["output_formats"] = gr.CheckboxGroup(list(VIDEO_FORMATS), value=["mp4"], label="Output formats")
                form["save_frames"] = gr.Checkbox(label="Also save the frames as PNGs", value=False)
            with gr.Row():
                form["generate"] = gr.Button("Generate", variant="primary", scale=3)
                form["interrupt"] = gr.Button("Interrupt", scale=1)
        with gr.Column(scale=1):
            form["job"] = gr.State(None)
            form["progress"] = gr.HTML("")
            form["preview"] = gr.Image(visible=False)
            form["video"] = gr.Video(label="Video", autoplay=True, loop=True, interactive=False, height=420)
            form["files"] = gr.File(label="Files", file_count="multiple", interactive=False)
            form["infotext"] = gr.Textbox(label="Parameters", lines=3, interactive=False, buttons=["copy"])
            form["status"] = gr.HTML("")
    inputs = ["model", "checkpoint", "prompt", "negative_prompt", "init_image", "width", "height", "frames", "fps",
              "steps", "cfg_scale", "seed", "sampler", "motion_end", "motion_bucket_id", "noise_aug_strength",
              "decode_chunk_size", "init_video", "strength", "output_formats", "save_frames"]
    outputs = ["job", "progress", "preview", "video", "files", "infotext", "status"]
    form.connect(form["generate"].click, partial(video_events, services), inputs, outputs, api_name="video",
                 concurrency_limit=None)
    form.connect(form["interrupt"].click, partial(interrupt, services), ["job"], [], api_name=False, queue=False)
    # On the user's pick only (``input``, not ``change``): reusing a job sets the model together with that job's
    # frames, size and steps, which a ``change`` handler would then overwrite with the family's defaults.
    for picked in ("model", "checkpoint"):
        form.connect(form[picked].input, partial(fill_defaults, services), ["model", "checkpoint"],
                     list(DEFAULT_FIELDS), api_name=False, queue=False)
    form.connect(form["refresh"].click, partial(refresh_models, services), ["model", "checkpoint"],
                 ["model", "checkpoint", *DEFAULT_FIELDS], api_name=False)
    return form


def _samplers() -> list[str]:
    from modules.image.samplers import SAMPLERS

    return [AUTOMATIC, *(spec.name for spec in SAMPLERS)]


def fill_defaults(services: Services, values: Values) -> Values:
    """The chosen model's family defaults into the shape fields (unchanged when the model is unknown)."""
    found = resolved_defaults(services, values.get("model"), values.get("checkpoint"))
    return {name: found[name] for name in DEFAULT_FIELDS if name in found}


def refresh_models(services: Services, values: Values) -> Values:
    models = video_models(services)
    names = [name for _label, name in models]
    model = values.get("model") if values.get("model") in names else (names[0] if names else None)
    titles = checkpoints(services)
    checkpoint = values.get("checkpoint") if values.get("checkpoint") in titles else AUTOMATIC
    updates = {"model": gr.update(choices=models, value=model), "checkpoint": gr.update(choices=titles,
                                                                                        value=checkpoint)}
    if (model, checkpoint) != (values.get("model"), values.get("checkpoint")):  # another model: its defaults,
        updates.update(fill_defaults(services, {"model": model, "checkpoint": checkpoint}))  # as a pick brings
    return updates


def request_from_values(values: Values) -> VideoRequest:
    """The tab's values -> a video request; a bad upload or field is a ``RequestError`` naming it."""
    init_video: tuple = ()
    video_file = values.get("init_video")
    if video_file:
        from modules.video.encode import read_frames

        path = Path(str(getattr(video_file, "name", video_file)))
        try:
            init_video = tuple(read_frames(path))
        except (OSError, RuntimeError, ValueError, StopIteration) as error:
            raise RequestError("init_video", f"the uploaded file is not a readable video ({error})") from None
        if not init_video:
            raise RequestError("init_video", "the uploaded video has no frames")
    checkpoint = values.get("checkpoint")
    sampler = values.get("sampler")
    chunk = int(values.get("decode_chunk_size") or 0)
    return VideoRequest(
        prompt=str(values.get("prompt") or ""), negative_prompt=str(values.get("negative_prompt") or ""),
        model=values.get("model") or None,
        checkpoint=None if checkpoint in (None, "", AUTOMATIC) else checkpoint,
        seed=_int(values.get("seed"), -1, "seed"), steps=_int(values.get("steps"), None, "steps"),
        cfg_scale=_float(values.get("cfg_scale"), "cfg_scale"),
        width=_int(values.get("width"), None, "width"), height=_int(values.get("height"), None, "height"),
        frames=None if init_video else _int(values.get("frames"), None, "frames"),
        fps=_int(values.get("fps"), None, "fps"),
        sampler=None if sampler in (None, "", AUTOMATIC) else sampler,
        init_image=load_image(values.get("init_image"), "init_image"), init_video=init_video,
        strength=float(values.get("strength") if values.get("strength") is not None else 0.6),
        motion_bucket_id=int(values.get("motion_bucket_id") or 127),
        noise_aug_strength=float(values.get("noise_aug_strength") or 0.0),
        decode_chunk_size=chunk or None,
        motion_end=_float(values.get("motion_end"), "motion_end"),  # 1 on SVD / Wan: accepted, nothing to end
        output_formats=tuple(values.get("output_formats") or ()),
        save_frames=bool(values.get("save_frames")),
    )


def _int(value: Any, default: int | None, name: str) -> int | None:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RequestError(name, f"must be a whole number, got {value!r}") from None


def _float(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RequestError(name, f"must be a number, got {value!r}") from None


def video_events(services: Services, values: Values) -> Iterator[Values]:
    """One Generate click: the job's progress, then the clip playing, or a notice naming the field."""
    try:
        job = services.queue.submit(request_from_values(values))
    except RequestError as error:
        yield failure(error.field, error.message)
        return
    for update in follow_job(services, job):
        if job.done_event.is_set() and "result" in update or update.get("job", "") is None:
            break
        yield {key: value for key, value in update.items() if key in FOLLOWED or key.startswith("_")}
    yield finished_video(job)


def finished_video(job: Job) -> Values:
    """The clip (the first file), every file, its parameters, and a line saying what was made."""
    from modules.video.kind import VideoResult

    if job.state == "failed":
        return {**failure(job.error_field or "", job.error or "the job failed"), "job": None}
    result = job.result
    if job.state == "cancelled" or not isinstance(result, VideoResult):
        return {"job": None, "progress": "", "preview": None, "status": status_html("Cancelled before it started.")}
    if result.interrupted or not result.videos:
        return {"job": None, "progress": "", "preview": None, "status": status_html("Interrupted: no video made.")}
    seconds = (job.finished or time.time()) - (job.started or job.created)
    parameters = result.parameters
    note = (f"{parameters.get('Frames')} frames at {parameters.get('FPS')} fps in {seconds:.1f} s"
            f" · seed {parameters.get('Seed')}")
    playable = next((video.path for video in result.videos if video.format in ("mp4", "webm")), None)
    files = [str(video.path) for video in result.videos] + [str(path) for path in result.frames]
    return {"job": None, "progress": "", "preview": None, "video": str(playable) if playable else None,
            "files": files, "infotext": result.infotext, "status": status_html(note)}
