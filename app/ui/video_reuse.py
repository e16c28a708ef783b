"""Reuse a clip's seed and parameters: a video job picked in history (the Queue tab), or the parameters a video
file carries (PNG info), into the Video tab's fields, which then make the same clip again.

History gives the job's own stored request, which the queue resolved at submission: its seed is the one the clip
was made with even when the user asked for a random one, and an image-to-video job brings its init image too. A
file gives only its infotext. Either way a model, checkpoint or sampler that this studio does not offer (any
more) leaves that control as it is and says so, instead of putting a value its dropdown cannot hold.

Handlers span tabs, so they read and write a joined form ("video.seed", "queue.selected_job", "pnginfo.infotext",
and "tabs", the tab switcher), as ``app.ui.send`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.ui.form import INFO, WARNING, Form, Values

if TYPE_CHECKING:
    from app.ui import Ui
    from modules.runtime.services import Services
    from modules.video.request import VideoRequest

# The Video tab's fields a job's request fills, each straight from the request field of the same name.
REQUEST_FIELDS = ("model", "checkpoint", "prompt", "negative_prompt", "width", "height", "frames", "fps", "steps",
                  "cfg_scale", "seed", "sampler", "motion_bucket_id", "noise_aug_strength", "decode_chunk_size",
                  "strength", "save_frames", "motion_end")
# Infotext key -> (Video tab field, how to read it), as ``VideoRunner.parameters`` writes them.
INFOTEXT_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "Prompt": ("prompt", str), "Negative prompt": ("negative_prompt", str), "Video model": ("model", str),
    "Model": ("checkpoint", str), "Sampler": ("sampler", str), "Steps": ("steps", int),
    "CFG scale": ("cfg_scale", float), "Seed": ("seed", int), "Size-1": ("width", int), "Size-2": ("height", int),
    "Frames": ("frames", int), "FPS": ("fps", int), "Motion bucket": ("motion_bucket_id", int),
    "Noise augmentation": ("noise_aug_strength", float), "Decode chunk size": ("decode_chunk_size", int),
    "Denoising strength": ("strength", float), "Motion end": ("motion_end", float),
}


def fields_from_request(request: VideoRequest) -> Values:
    """The Video tab's values that remake ``request``'s clip (its init image included; an init video cannot be
    put back into the upload box, so the caller says so)."""
    fields: Values = {name: getattr(request, name) for name in REQUEST_FIELDS}
    fields["decode_chunk_size"] = request.decode_chunk_size or 0  # the tab's 0 = the family's default
    fields["motion_end"] = 1.0 if request.motion_end is None else request.motion_end
    fields["output_formats"] = list(request.output_formats)
    fields["init_image"] = request.init_image
    fields["init_video"] = None
    return fields


def fields_from_infotext(parameters: dict[str, Any]) -> Values:
    """The Video tab's values an infotext's parsed parameters hold (unreadable numbers are left out)."""
    fields: Values = {}
    for key, (name, read) in INFOTEXT_FIELDS.items():
        if key in parameters:
            try:
                fields[name] = read(parameters[key])
            except (TypeError, ValueError):
                continue
    if str(fields.get("sampler", "")).endswith("Scheduler"):  # a class name: the clip ran on the model's own
        fields["sampler"] = None  # scheduler, which is what the tab's "Automatic" picks
    if parameters.get("Video family") == "animatediff" and "Motion end" not in parameters:
        fields["motion_end"] = 1.0  # written only below 1: the adapter acted in every step
    if parameters.get("Video mode") == "txt2vid":  # a text-to-video clip: nothing uploaded may turn it into another
        fields["init_image"] = None
        fields["init_video"] = None
    return fields


def offered(services: Services, fields: Values) -> tuple[Values, list[str]]:
    """``fields`` without the model, checkpoint or sampler this studio does not offer, and what was left out."""
    from app.ui import choices
    from app.ui.video_tab import AUTOMATIC, _samplers, checkpoints, video_models

    fields = dict(fields)
    skipped = []
    if "model" in fields:
        names = [name for _label, name in video_models(services)]
        if fields["model"] not in names:
            skipped.append(f"video model {fields.pop('model')!r} (not installed)")
    if "checkpoint" in fields:
        wanted = fields["checkpoint"]
        if wanted is None:
            fields["checkpoint"] = AUTOMATIC
        elif wanted not in checkpoints(services):
            title = choices.find_model_title(services, wanted)
            if title is None:
                skipped.append(f"checkpoint {fields.pop('checkpoint')!r} (not installed)")
            else:
                fields["checkpoint"] = title
    if "sampler" in fields:
        sampler = fields["sampler"] or AUTOMATIC
        fields["sampler"] = choices.pick(sampler, _samplers())
        if fields["sampler"] is None:
            skipped.append(f"sampler {fields.pop('sampler')!r} (not offered)")
    return fields, skipped


def to_video_tab(services: Services, fields: Values, notes: list[str], done: str) -> Values:
    """The joined-form updates that put ``fields`` into the Video tab and switch to it, with a toast."""
    fields, skipped = offered(services, fields)
    updates: Values = {f"video.{name}": value for name, value in fields.items()}
    updates["tabs"] = gr.update(selected="video")
    if skipped:
        notes = [*notes, "Kept the current value for " + "; ".join(skipped) + "."]
    if notes:
        updates[WARNING] = " ".join(notes)
    else:
        updates[INFO] = done
    return updates


def reuse_job(services: Services, values: Values) -> Values:
    """History -> Video tab: the selected video job's seed and parameters (its stored, resolved request)."""
    from modules.video.request import VideoRequest

    job_id = values.get("queue.selected_job")
    job = services.queue.get(job_id) if job_id else None
    if job is None or not isinstance(job.request, VideoRequest):
        return {WARNING: "Select a video job in the history first."}
    request = job.request
    notes = []
    if request.mode == "vid2vid":
        notes.append("The init video is not restored: upload it again for video-to-video.")
    return to_video_tab(services, fields_from_request(request), notes,
                        f"Job #{job.number}'s parameters, seed {request.seed}, are in the Video tab.")


def send_infotext(services: Services, values: Values) -> Values:
    """PNG info -> Video tab: the parameters read from a clip (or an image: its prompt, seed, size and steps)."""
    from modules.image.infotext import parse_infotext

    text = (values.get("pnginfo.infotext") or "").strip()
    parameters = parse_infotext(text) if text else {}
    if len(parameters) <= 2:  # only the prompts: no parameter line
        return {WARNING: "This file holds no generation parameters to send."}
    fields = fields_from_infotext(parameters)
    notes = []
    if parameters.get("Video mode") == "img2vid":
        notes.append("The init image is not in the file: give it again for image-to-video.")
    elif parameters.get("Video mode") == "vid2vid":
        notes.append("The init video is not in the file: upload it again for video-to-video.")
    return to_video_tab(services, fields, notes, f"Sent {len(fields)} parameters to the Video tab.")


def wire_video_reuse(services: Services, ui: Ui) -> None:
    """Connect history's "Reuse in the Video tab" and PNG info's "Send to video" (call inside the Blocks)."""
    video_names = [*REQUEST_FIELDS, "output_formats", "init_image", "init_video"]
    joined = (Form({"tabs": ui.tabs}) | ui.video.prefixed("video") | ui.queue.prefixed("queue")
              | ui.pnginfo.prefixed("pnginfo"))
    outputs = ["tabs", *(f"video.{name}" for name in video_names)]
    joined.connect(ui.queue["reuse_video"].click, lambda values: reuse_job(services, values),
                   ["queue.selected_job"], outputs, api_name=False)
    joined.connect(ui.pnginfo["send_video"].click, lambda values: send_infotext(services, values),
                   ["pnginfo.infotext"], outputs, api_name=False)
