"""The Audio tab: sounds from a prompt (Stable Audio, AudioLDM2) and speech from text (VITS / MMS-TTS), through the
audio kind of job.

Choosing a task lists its models (folders in ``models/audio/``, re-read by ↻); choosing a model fills steps, CFG,
duration and voices with its family's defaults and shows only the fields it uses (the starting sound and its
strength only for families that can start from one; a sound uploaded for another model is dropped with them, so
a hidden field never refuses a job). Generate queues one job like a generation, with progress, interrupt and
history; the first clip plays here with a picture of its waveform and spectrogram, every clip is offered for
download, and its parameters are shown (they are inside each file too).
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from app.ui.accessible import REFRESH_GLYPH, icon_button
from app.ui.form import Form, Values
from app.ui.generate import failure, follow_job, interrupt, skip, status_html
from modules.audio.encode import FORMATS, decode
from modules.audio.pictures import waveform_picture
from modules.audio.registry import AudioModelInfo, AudioModelRegistry, missing_message
from modules.audio.request import SPEECH, TEXT_TO_AUDIO, AudioLimits, AudioRequest
from modules.errors import RequestError

if TYPE_CHECKING:
    from modules.jobs.queue import Job
    from modules.runtime.services import Services

TASK_LABELS = {TEXT_TO_AUDIO: "Sound (text to audio)", SPEECH: "Speech (text to speech)"}
DEFAULT_DURATION = 10.0


def _registry(services: Services) -> AudioModelRegistry:
    return AudioModelRegistry(services.config.models_dir)


def model_choices(services: Services, task: str) -> list[tuple[str, str]]:
    return [(f"{info.name} ({info.family.label})", info.name) for info in _registry(services).list(task)]


def build_audio(services: Services) -> Form:
    """Lay out and wire the tab (call inside a ``gr.Tab``)."""
    form = Form()
    limits = AudioLimits()
    default = _registry(services).default(TEXT_TO_AUDIO)
    with gr.Row():
        with gr.Column(scale=1):
            form["task"] = gr.Radio([(label, task) for task, label in TASK_LABELS.items()], value=TEXT_TO_AUDIO,
                                    label="Make")
            with gr.Row():
                form["model"] = gr.Dropdown(model_choices(services, TEXT_TO_AUDIO),
                                            value=default.name if default else None, label="Model", scale=4)
                form["refresh"] = gr.Button(REFRESH_GLYPH, size="sm", scale=0, min_width=40,
                                             **icon_button("refresh-audio-models"))
            form["notice"] = gr.HTML(_notice(default, TEXT_TO_AUDIO))
            form["prompt"] = gr.Textbox(label="Prompt", lines=2, placeholder="three short high beeps",
                                        elem_id="audio-prompt")
            form["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=1)
            form["text"] = gr.Textbox(label="Text to speak", lines=3, visible=False, elem_id="audio-text")
            with gr.Row():
                form["duration"] = gr.Slider(0.1, _longest(default, limits), step=0.1,
                                             value=_duration(default), label="Duration (seconds)")
                form["waveforms"] = gr.Slider(1, limits.max_waveforms, step=1, value=1, label="Waveforms")
            with gr.Row():
                form["steps"] = gr.Slider(1, limits.max_steps, step=1, value=_family(default, "steps", 100),
                                          label="Steps")
                form["cfg_scale"] = gr.Slider(0, limits.max_cfg, step=0.5, value=_family(default, "cfg_scale", 7.0),
                                              label="CFG scale")
            with gr.Row():
                form["voice"] = gr.Dropdown([], value=None, label="Voice", visible=False, allow_custom_value=True)
                form["speed"] = gr.Slider(0.25, 4.0, step=0.05, value=1.0, label="Speed", visible=False)
            with gr.Row():
                form["seed"] = gr.Number(label="Seed", value=-1, precision=0, info="-1 = random")
                form["output_format"] = gr.Dropdown(list(FORMATS), value="wav", label="Format")
            starts_from_sound = bool(default and default.family.init_audio)
            form["init_audio"] = gr.Audio(label="Start from a sound (Stable Audio)", type="filepath",
                                          sources=["upload"], visible=starts_from_sound)
            form["strength"] = gr.Slider(0.0, 1.0, step=0.01, value=AudioRequest.strength, label="Strength",
                                         info="how much of the sound is re-noised: 0 keeps it, 1 ignores it",
                                         visible=starts_from_sound, elem_id="audio-strength")
            with gr.Row():
                form["generate"] = gr.Button("Generate", variant="primary", scale=3, elem_id="audio-generate")
                form["interrupt"] = gr.Button("Interrupt", scale=1)
                form["skip"] = gr.Button("Skip", scale=1)
        with gr.Column(scale=1):
            form["job"] = gr.State(None)
            form["progress"] = gr.HTML("")
            form["preview"] = gr.State(None)  # follow_job's preview slot: sounds have none
            form["filled_for"] = gr.State(default.name if default else None)  # whose defaults the fields hold
            form["audio"] = gr.Audio(label="Result", type="filepath", interactive=False, elem_id="audio-result")
            form["picture"] = gr.Image(label="Waveform and spectrogram", type="pil", interactive=False, height=260,
                                         elem_id="audio-picture")
            form["files"] = gr.File(label="Files", file_count="multiple", interactive=False)
            form["parameters"] = gr.Textbox(label="Parameters", lines=4, interactive=False, buttons=["copy"])
            form["status"] = gr.HTML("")
    inputs = ["task", "model", "prompt", "negative_prompt", "text", "duration", "waveforms", "steps", "cfg_scale",
              "voice", "speed", "seed", "output_format", "init_audio", "strength"]
    outputs = ["job", "progress", "preview", "audio", "picture", "files", "parameters", "status"]
    form.connect(form["generate"].click, partial(audio_events, services), inputs, outputs, api_name="audio",
                 concurrency_limit=None)
    form.connect(form["interrupt"].click, partial(interrupt, services), ["job"], [], api_name=False, queue=False)
    form.connect(form["skip"].click, partial(skip, services), ["job"], [], api_name=False, queue=False)
    fields = ["model", "notice", "prompt", "negative_prompt", "text", "duration", "steps", "cfg_scale", "voice",
              "speed", "init_audio", "strength", "filled_for"]
    form.connect(form["task"].change, partial(task_changed, services), ["task"], fields, api_name=False)
    form.connect(form["refresh"].click, partial(task_changed, services), ["task", "model"], fields, api_name=False)
    # ``input``, not ``change``: a model that task_changed sets already comes with its defaults, and a second,
    # later fill from ``change`` would overwrite what the user typed meanwhile.
    form.connect(form["model"].input, partial(model_changed, services), ["task", "model", "filled_for"],
                 ["notice", "duration", "steps", "cfg_scale", "voice", "init_audio", "strength", "negative_prompt",
                  "filled_for"], api_name=False)
    return form


def _family(info: AudioModelInfo | None, name: str, fallback: float) -> float:
    own = {"steps": "default_steps", "cfg_scale": "default_cfg_scale"}  # the model's recommendation, else family's
    value = (getattr(info, own[name])() if name in own else getattr(info.family, name)) if info is not None else None
    return fallback if value is None else value


def _duration(info: AudioModelInfo | None) -> float:
    return (info.default_duration() if info is not None else None) or DEFAULT_DURATION


def _longest(info: AudioModelInfo | None, limits: AudioLimits) -> float:
    return min(info.max_duration, limits.max_duration) if info is not None and info.max_duration else \
        limits.max_duration


def _notice(info: AudioModelInfo | None, task: str) -> str:
    if info is not None:
        return ""
    return f'<div class="sf-error" role="alert">{html.escape(missing_message(task))}</div>'


def _find(services: Services, task: str, name: str | None) -> AudioModelInfo | None:
    models = _registry(services).list(task)
    return next((info for info in models if info.name == name), None) or _registry(services).default(task)


def task_changed(services: Services, values: Values) -> Values:
    """A task (or ↻): its models, the fields it uses, and the chosen model's defaults."""
    task = values.get("task") or TEXT_TO_AUDIO
    info = _find(services, task, values.get("model"))
    speech = task == SPEECH
    return {
        "model": gr.update(choices=model_choices(services, task), value=info.name if info else None),
        "prompt": gr.update(visible=not speech), "negative_prompt": gr.update(visible=not speech),
        "text": gr.update(visible=speech), "duration": gr.update(visible=not speech),
        "steps": gr.update(visible=not speech), "cfg_scale": gr.update(visible=not speech),
        "speed": gr.update(visible=speech),
        **model_changed(services, {"task": task, "model": info.name if info else None}),
    }


def model_changed(services: Services, values: Values) -> Values:
    """The chosen model's family defaults fill the fields it uses; choosing the model the fields were already
    filled for keeps what the user typed since."""
    task = values.get("task") or TEXT_TO_AUDIO
    if values.get("model") and values.get("model") == values.get("filled_for"):
        return {}
    info = _find(services, task, values.get("model"))
    limits = AudioLimits()
    update: Values = {"notice": _notice(info, task), "filled_for": info.name if info else None}
    if task == SPEECH:
        voices = list(info.voices) if info is not None else []
        update["voice"] = gr.update(choices=voices, value=voices[0] if voices else None, visible=len(voices) > 1)
        update["init_audio"], update["strength"] = gr.update(visible=False, value=None), gr.update(visible=False)
        return update
    starts_from_sound = bool(info and info.family.init_audio)
    update.update({
        "duration": gr.update(maximum=_longest(info, limits), value=_duration(info), visible=True),
        "steps": gr.update(value=_family(info, "steps", 100)),
        "cfg_scale": gr.update(value=_family(info, "cfg_scale", 7.0)),
        "voice": gr.update(visible=False),
        "init_audio": gr.update(visible=True) if starts_from_sound else gr.update(visible=False, value=None),
        "strength": gr.update(visible=starts_from_sound),
        "negative_prompt": gr.update(visible=bool(info is None or info.family.negative_prompt)),
    })
    return update


def request_from_values(values: Values) -> AudioRequest:
    """The tab's values -> an audio request; an unreadable upload is a ``RequestError`` naming it."""
    task = values.get("task") or TEXT_TO_AUDIO
    init = values.get("init_audio")
    init_bytes = None
    if task == TEXT_TO_AUDIO and init:
        try:
            init_bytes = Path(str(init)).read_bytes()
        except OSError as error:
            raise RequestError("init_audio", f"the upload cannot be read: {error}") from None
    speech = task == SPEECH
    return AudioRequest(
        task=task, model=values.get("model") or None, prompt=str(values.get("prompt") or ""),
        negative_prompt="" if speech else str(values.get("negative_prompt") or ""),
        text=str(values.get("text") or ""),
        duration=None if speech else float(values.get("duration") or 0),
        steps=None if speech else int(values.get("steps") or 0),
        cfg_scale=None if speech else float(values.get("cfg_scale") or 0),
        seed=int(values.get("seed") if values.get("seed") is not None else -1),
        waveforms=int(values.get("waveforms") or 1), init_audio=init_bytes,
        strength=float(values["strength"]) if values.get("strength") is not None else AudioRequest.strength,
        voice=(values.get("voice") or None) if speech else None,
        speed=float(values.get("speed") or 1.0) if speech else 1.0,
        output_format=values.get("output_format") or "wav",
    )


def audio_events(services: Services, values: Values) -> Iterator[Values]:
    """One Generate click: the job's progress, then its clips, or a notice naming the field that is wrong."""
    try:
        job = services.queue.submit(request_from_values(values))
    except RequestError as error:
        yield failure(error.field, error.message)
        return
    for update in follow_job(services, job):
        yield audio_finished(job) if "gallery" in update else update  # the final update, made for sounds


def audio_finished(job: Job) -> Values:
    """The final update for an audio job: the first clip to play, its picture, every file, its parameters."""
    if job.state == "failed":
        update = failure(job.error_field or "", job.error or "the job failed")
        update["job"] = None
        return update
    clips = list(getattr(job.result, "clips", None) or [])
    seconds = (job.finished or time.time()) - (job.started or job.created)
    if not clips:
        return {"job": None, "progress": "", "status": status_html("Interrupted before a clip was made.")}
    first = clips[0]
    sound = decode(first.path, field="audio")
    note = f"{len(clips)} clip{'s' if len(clips) != 1 else ''} in {seconds:.1f} s · seed {first.parameters['seed']}"
    if job.result.interrupted:
        note += " · interrupted"
    return {"job": None, "progress": "", "audio": str(first.path),
            "picture": waveform_picture(sound.samples, sound.sample_rate),
            "files": [str(clip.path) for clip in clips],
            "parameters": json.dumps(first.parameters, ensure_ascii=False, indent=1),
            "status": status_html(note)}


