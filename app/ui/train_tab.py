"""The Train tab: teach a model a subject or style from a few images (LoRA, DreamBooth, textual inversion).

Each Start queues one job of the train kind, followed like a generation: its progress line (step, ETA, loss)
and, as the live preview, the loss curve beside the newest sample. Pause and Cancel both stop the run after its
current step and keep its checkpoint; Resume queues the paused request again, which continues from there (so
does Start with unchanged settings). The result lands in models/Lora, models/Stable-diffusion or
models/embeddings and is usable at once (``<lora:name:1>``, the checkpoint list, the embedding's name).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.ui import choices
from app.ui.form import Form, Values
from app.ui.generate import failure, follow_job, status_html
from app.ui.request_form import load_image
from modules.errors import RequestError
from modules.training.request import LR_SCHEDULES, MIXED_PRECISION, TrainRequest

if TYPE_CHECKING:
    from modules.runtime.services import Services

METHODS = {"LoRA": "lora", "DreamBooth": "dreambooth", "Textual inversion": "textual_inversion"}
DEFAULT_MODEL = "(the studio's default)"


def build_train(services: Services) -> Form:
    """Lay out and wire the tab (call inside a ``gr.Tab``)."""
    form = Form()
    with gr.Row():
        with gr.Column(scale=1):
            with gr.Row():
                form["method"] = gr.Radio(list(METHODS), value="LoRA", label="Method")
                form["output_name"] = gr.Textbox(label="Output name", placeholder="my-subject",
                                                 info="the file's name in models/")
            form["base_model"] = gr.Dropdown([DEFAULT_MODEL, *choices.model_titles(services)], value=DEFAULT_MODEL,
                                             label="Base model")
            form["data_dir"] = gr.Textbox(label="Image folder", placeholder="/path/to/images",
                                          info="images with optional <name>.txt captions beside them")
            form["files"] = gr.File(label="…or upload images", file_count="multiple", file_types=["image"])
            with gr.Row():
                form["instance_prompt"] = gr.Textbox(label="Instance prompt", value="a photo of sks", scale=3)
                form["rare_token"] = gr.Textbox(label="Rare token", value="sks", scale=1)
            with gr.Row():
                form["prior_preservation"] = gr.Checkbox(label="Prior preservation", value=False)
                form["class_prompt"] = gr.Textbox(label="Class prompt", placeholder="a photo of a dog", scale=3,
                                                  lines=1, max_lines=8,
                                                  info="several prompts: one per line, the class images cycle "
                                                       "through them")
            with gr.Row():
                form["num_class_images"] = gr.Number(label="Class images", value=50, precision=0, minimum=1)
                form["prior_loss_weight"] = gr.Number(label="Prior loss weight", value=1.0, minimum=0)
                form["prior_target"] = gr.Dropdown(
                    label="Prior target", choices=[("Class pictures (DreamBooth)", "images"),
                                                   ("Base model's output (LoRA)", "base_model")], value="images",
                    info="base model's output: without the rare token, the LoRA is pulled back to what the base "
                         "model does")
                form["class_data_dir"] = gr.Textbox(
                    label="Class image folder", placeholder="/path/to/class/images", scale=2,
                    info="optional: your own class pictures (with optional <name>.txt captions); topped up with "
                         "generated ones to the count above when a class prompt is given")
            with gr.Accordion("Training", open=True):
                with gr.Row():
                    form["steps"] = gr.Number(label="Steps", value=500, precision=0, minimum=1)
                    form["batch_size"] = gr.Number(label="Batch size", value=1, precision=0, minimum=1)
                    form["gradient_accumulation"] = gr.Number(label="Gradient accumulation", value=1, precision=0,
                                                              minimum=1)
                with gr.Row():
                    form["learning_rate"] = gr.Number(label="Learning rate", value=1e-4, minimum=0)
                    form["lr_schedule"] = gr.Dropdown(list(LR_SCHEDULES), value="constant", label="Schedule")
                    form["lr_warmup_steps"] = gr.Number(label="Warm-up steps", value=0, precision=0, minimum=0)
                with gr.Row():
                    form["resolution"] = gr.Number(label="Resolution", value=512, precision=0, minimum=64)
                    form["seed"] = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                    form["mixed_precision"] = gr.Dropdown(list(MIXED_PRECISION), value="no", label="Mixed precision")
                with gr.Row():
                    form["buckets"] = gr.Checkbox(label="Aspect-ratio buckets", value=True)
                    form["flip"] = gr.Checkbox(label="Random flips", value=False)
                    form["random_crop"] = gr.Checkbox(label="Random crops", value=False)
                    form["gradient_checkpointing"] = gr.Checkbox(label="Gradient checkpointing", value=False)
                    form["ema"] = gr.Checkbox(label="EMA", value=False)
            with gr.Accordion("LoRA / text encoder / embedding", open=False):
                with gr.Row():
                    form["lora_rank"] = gr.Number(label="LoRA rank", value=4, precision=0, minimum=1)
                    form["lora_alpha"] = gr.Number(label="LoRA alpha", value=4, minimum=0)
                    form["lora_targets"] = gr.Textbox(label="Target modules", value="to_q, to_k, to_v, to_out.0")
                form["train_text_encoder"] = gr.Checkbox(label="Train the text encoder too", value=False)
                with gr.Row():
                    form["train_token_embedding"] = gr.Checkbox(
                        label="Train the token's embedding with the LoRA (pivotal tuning)", value=False,
                        info="the LoRA file bundles it; <lora:name:1> brings the token along")
                    form["embedding_learning_rate"] = gr.Number(label="Embedding learning rate", value=5e-3,
                                                                minimum=0)
                    form["token_init_text"] = gr.Textbox(label="Token starts from", value="",
                                                         placeholder="a word, e.g. the class (empty: the token)")
                with gr.Row():
                    form["ti_vectors"] = gr.Number(label="Embedding vectors", value=1, precision=0, minimum=1)
                    form["ti_init_text"] = gr.Textbox(label="Embedding starts from", value="*")
            with gr.Accordion("Checkpoints, samples, logs", open=False):
                with gr.Row():
                    form["checkpoint_every"] = gr.Number(label="Checkpoint every", value=100, precision=0, minimum=1)
                    form["checkpoint_limit"] = gr.Number(label="Keep checkpoints", value=3, precision=0, minimum=0)
                    form["sample_every"] = gr.Number(label="Sample every", value=0, precision=0, minimum=0)
                form["sample_prompts"] = gr.Textbox(label="Sample prompts", lines=2, placeholder="one per line")
                form["tensorboard"] = gr.Checkbox(label="TensorBoard events", value=False)
            with gr.Row():
                form["start"] = gr.Button("Start", variant="primary", scale=2)
                form["pause"] = gr.Button("Pause", scale=1)
                form["resume"] = gr.Button("Resume", scale=1)
                form["cancel"] = gr.Button("Cancel", scale=1)
        with gr.Column(scale=1):
            form["job"] = gr.State(None)
            form["last_request"] = gr.State(None)
            form["result"] = gr.State(None)
            form["progress"] = gr.HTML("")
            form["preview"] = gr.Image(label="Loss and newest sample", visible=True, interactive=False,
                                       elem_id="sf-train-preview", format="png")
            form["gallery"] = gr.Gallery(label="Loss curve and samples", columns=3, height=420, format="png",
                                         interactive=False, object_fit="contain")
            form["infotext"] = gr.Textbox(label="Result", lines=2, interactive=False)
            form["status"] = gr.HTML("", elem_id="sf-train-status")
    inputs = [name for name in form.names() if name not in ("start", "pause", "resume", "cancel", "job",
                                                             "last_request", "result", "progress", "preview",
                                                             "gallery", "infotext", "status")]
    outputs = ["job", "last_request", "progress", "preview", "gallery", "infotext", "status", "result"]
    form.connect(form["start"].click, partial(start_events, services), inputs, outputs, api_name="train",
                 concurrency_limit=None)
    form.connect(form["resume"].click, partial(resume_events, services), ["last_request"], outputs,
                 api_name=False, concurrency_limit=None)
    form.connect(form["pause"].click, partial(stop, services, "Paused"), ["job"], ["status"], api_name=False,
                 queue=False)
    form.connect(form["cancel"].click, partial(stop, services, "Cancelled"), ["job"], ["status"], api_name=False,
                 queue=False)
    return form


def request_from_values(values: Values) -> TrainRequest:
    """The tab's values -> a train request; a bad upload or field is a ``RequestError`` naming it."""
    files = [getattr(item, "name", item) for item in values.get("files") or [] if item]
    images = tuple(load_image(str(path), f"files.{index}") for index, path in enumerate(files))
    captions = tuple(_caption_beside(Path(str(path))) for path in files)
    model = values.get("base_model")

    def number(name: str, kind: type = int) -> Any:
        value = values.get(name)
        if value is None or value == "":
            raise RequestError(name, "give a number")
        return kind(value)

    return TrainRequest(
        output_name=str(values.get("output_name") or "").strip(),
        method=METHODS.get(values.get("method") or "LoRA", "lora"),
        base_model=None if not model or model == DEFAULT_MODEL else model,
        data_dir=str(values.get("data_dir") or "").strip() or None,
        images=images, captions=captions if any(captions) else (),
        instance_prompt=str(values.get("instance_prompt") or ""), rare_token=str(values.get("rare_token") or ""),
        class_prompt=str(values.get("class_prompt") or ""),
        class_data_dir=str(values.get("class_data_dir") or "").strip() or None,
        prior_preservation=bool(values.get("prior_preservation")),
        prior_loss_weight=number("prior_loss_weight", float),
        prior_target=str(values.get("prior_target") or "images"), num_class_images=number("num_class_images"),
        resolution=number("resolution"), buckets=bool(values.get("buckets")), flip=bool(values.get("flip")),
        random_crop=bool(values.get("random_crop")), steps=number("steps"), batch_size=number("batch_size"),
        gradient_accumulation=number("gradient_accumulation"),
        gradient_checkpointing=bool(values.get("gradient_checkpointing")),
        learning_rate=number("learning_rate", float), lr_schedule=values.get("lr_schedule") or "constant",
        lr_warmup_steps=number("lr_warmup_steps"), seed=number("seed"),
        mixed_precision=values.get("mixed_precision") or "no", lora_rank=number("lora_rank"),
        lora_alpha=number("lora_alpha", float),
        lora_targets=tuple(part.strip() for part in str(values.get("lora_targets") or "").split(",") if part.strip()),
        train_text_encoder=bool(values.get("train_text_encoder")), ema=bool(values.get("ema")),
        train_token_embedding=bool(values.get("train_token_embedding")),
        embedding_learning_rate=number("embedding_learning_rate", float),
        token_init_text=str(values.get("token_init_text") or "").strip(),
        ti_vectors=number("ti_vectors"), ti_init_text=str(values.get("ti_init_text") or "*"),
        checkpoint_every=number("checkpoint_every"), checkpoint_limit=number("checkpoint_limit"),
        sample_every=number("sample_every"),
        sample_prompts=tuple(line.strip() for line in str(values.get("sample_prompts") or "").splitlines()
                             if line.strip()),
        tensorboard=bool(values.get("tensorboard")),
    )


def _caption_beside(path: Path) -> str:
    caption = path.with_suffix(".txt")
    return caption.read_text(encoding="utf-8", errors="replace").strip() if caption.is_file() else ""


def start_events(services: Services, values: Values) -> Iterator[Values]:
    try:
        request = request_from_values(values)
    except RequestError as error:
        yield failure(error.field, error.message)
        return
    yield from _run(services, request)


def resume_events(services: Services, values: Values) -> Iterator[Values]:
    request = values.get("last_request")
    if request is None:
        yield failure("", "nothing to resume: start a run first")
        return
    yield from _run(services, request.replace(resume=True))


def _run(services: Services, request: TrainRequest) -> Iterator[Values]:
    try:
        job = services.queue.submit(request)
    except RequestError as error:
        yield failure(error.field, error.message)
        return
    yield {"last_request": request}
    for update in follow_job(services, job):
        if "gallery" in update and job.result is not None:
            update = {**update, "infotext": _summary(job.result)}
            if job.result.stopped:
                update["status"] = status_html(f"Stopped at step {job.result.step}/{job.result.steps}; the "
                                               f"checkpoint is kept: Resume continues from it.")
        yield update


def _summary(result: Any) -> str:
    loss = f", last loss {result.losses[-1]:.4f}" if result.losses else ""
    where = f"Saved {result.output}" if result.output else "Not finished"
    return f"{where} (step {result.step}/{result.steps}{loss})"


def stop(services: Services, word: str, values: Values) -> Values:
    """Pause or Cancel: the run stops after its current step and writes a checkpoint of where it got to."""
    job_id = values.get("job")
    if not job_id or not services.queue.cancel(job_id):
        return {"status": status_html("No run of this tab is going.")}
    return {"status": status_html(f"{word}: stopping after the current step; the checkpoint is kept.")}
