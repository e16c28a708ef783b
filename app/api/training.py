"""Training on the wire: the native API's ``{"kind": "train", ...}`` jobs, and A1111's textual-inversion routes
``POST /sdapi/v1/create/embedding`` and ``POST /sdapi/v1/train/embedding`` in A1111's shapes.

A1111 answers both with one line of ``info`` once the work is done (``create embedding filename: …``, ``train
embedding complete: filename: … error: None``); its training arguments are the Train tab's, of which the ones that
mean something here are mapped (``learn_rate`` takes the first rate of a schedule such as ``0.005:100, 1e-3``).
The training itself is a job of the train kind on the one queue, waited for as A1111 clients expect.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.api.context import get_owner
from app.api.errors import ApiError
from app.api.images import decode_image
from app.api.requests_common import ServicesDep, wait_for_job
from modules.errors import RequestError
from modules.jobs.queue import JobCancelled
from modules.training.request import TrainRequest

router = APIRouter(prefix="/sdapi/v1", tags=["A1111"])
Owner = Annotated[str | None, Depends(get_owner)]


class TrainJobBody(BaseModel):
    """A ``TrainRequest`` on the wire (``"kind": "train"``): images as base64 with optional captions, or a folder
    on the studio's machine (``data_dir``); the other fields are the request's, by name."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["train"]
    output_name: str
    method: Literal["lora", "dreambooth", "textual_inversion"] | None = None
    base_model: str | None = None
    data_dir: str | None = None
    images: list[str] | None = None
    captions: list[str] | None = None
    instance_prompt: str | None = None
    rare_token: str | None = None
    class_prompt: str | None = None
    class_data_dir: str | None = None
    prior_preservation: bool | None = None
    prior_loss_weight: float | None = None
    prior_target: Literal["images", "base_model"] | None = None
    num_class_images: int | None = None
    class_steps: int | None = None
    resolution: int | None = None
    buckets: bool | None = None
    flip: bool | None = None
    random_crop: bool | None = None
    steps: int | None = None
    batch_size: int | None = None
    gradient_accumulation: int | None = None
    gradient_checkpointing: bool | None = None
    learning_rate: float | None = None
    lr_schedule: str | None = None
    lr_warmup_steps: int | None = None
    seed: int | None = None
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_targets: list[str] | None = None
    train_text_encoder: bool | None = None
    train_token_embedding: bool | None = None
    embedding_learning_rate: float | None = None
    token_init_text: str | None = None
    ema: bool | None = None
    ema_decay: float | None = None
    ti_vectors: int | None = None
    ti_init_text: str | None = None
    checkpoint_every: int | None = None
    checkpoint_limit: int | None = None
    sample_every: int | None = None
    sample_prompts: list[str] | None = None
    sample_steps: int | None = None
    tensorboard: bool | None = None
    resume: bool | None = None
    webhook_url: str | None = None


def to_train_request(body: TrainJobBody) -> TrainRequest:
    fields = body.model_dump(exclude_none=True, exclude={"kind", "webhook_url", "images", "captions"})
    for name in ("lora_targets", "sample_prompts"):
        if name in fields:
            fields[name] = tuple(fields[name])
    images = tuple(decode_image(data, f"images.{index}") for index, data in enumerate(body.images or []))
    return TrainRequest(images=images, captions=tuple(body.captions or ()), **fields)


# -- A1111's textual-inversion routes ---------------------------------------------------------------------------
class CreateEmbeddingBody(BaseModel):
    """A1111's ``create_embedding`` arguments."""

    name: str = Field(description="the embedding's name (its file is models/embeddings/<name>.pt)")
    num_vectors_per_token: int = 1
    overwrite_old: bool = False
    init_text: str = Field("*", description="words whose token embeddings the vectors start from")


class InfoResponse(BaseModel):
    info: str


class TrainEmbeddingBody(BaseModel):
    """A1111's ``train_embedding`` arguments (those a Sfumato run uses; the rest are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")
    embedding_name: str
    learn_rate: str | float = "0.005"
    batch_size: int = 1
    gradient_step: int = 1
    data_root: str
    training_width: int = 512
    training_height: int = 512
    steps: int = 100000
    save_embedding_every: int = 500
    create_image_every: int = 500
    preview_prompt: str = ""
    template_filename: str = ""


def first_rate(value: str | float) -> float:
    """The first learning rate of A1111's schedule text (``0.005:100, 1e-3:1000, 1e-5``)."""
    if isinstance(value, int | float):
        return float(value)
    match = re.match(r"\s*([0-9.eE+-]+)", value or "")
    try:
        return float(match.group(1)) if match else float("nan")
    except ValueError:
        return float("nan")


def _runner(services: Any) -> Any:
    from modules.training.kind import TRAIN

    return services.queue.kinds.get(TRAIN).run.__self__


@router.post("/create/embedding", response_model=InfoResponse)
async def create_embedding(body: CreateEmbeddingBody, services: ServicesDep) -> dict[str, str]:
    runner = _runner(services)
    try:
        path = await run_in_threadpool(runner.create_embedding, body.name, body.num_vectors_per_token,
                                       body.init_text, body.overwrite_old, services.default_model())
    except RequestError as error:
        raise ApiError(422 if error.field != "name" or "exists" not in error.message else 409, error.message,
                       error.field) from None
    return {"info": f"create embedding filename: {path}"}


@router.post("/train/embedding", response_model=InfoResponse)
async def train_embedding(body: TrainEmbeddingBody, http_request: Request, response: Response,
                          services: ServicesDep, owner: Owner) -> dict[str, str]:
    name = body.embedding_name
    runner = _runner(services)
    if not runner.embedding_path(name).is_file():
        raise ApiError(422, f"no embedding named {name!r}; create it first (/sdapi/v1/create/embedding)",
                       "embedding_name")
    token = name.replace(" ", "_")
    save_every = body.save_embedding_every if body.save_embedding_every > 0 else body.steps
    request = TrainRequest(
        output_name=name, method="textual_inversion", data_dir=body.data_root, rare_token=token,
        instance_prompt=f"a photo of {token}", ti_continue=True, learning_rate=first_rate(body.learn_rate),
        batch_size=body.batch_size, gradient_accumulation=body.gradient_step,
        resolution=max(body.training_width, body.training_height), steps=body.steps, checkpoint_every=save_every,
        sample_every=body.create_image_every if body.preview_prompt and body.create_image_every > 0 else 0,
        sample_prompts=(body.preview_prompt,) if body.preview_prompt else (), resume=False)
    try:
        job = await run_in_threadpool(lambda: services.queue.submit(request, source="a1111", owner=owner))
    except RequestError as error:
        raise ApiError(422, error.message, _a1111_field(error.field)) from None
    response.headers["X-Job-Id"] = job.id
    await wait_for_job(services.queue, job, http_request=http_request)
    try:
        result = services.queue.wait(job, timeout=0)
    except RequestError as error:
        return {"info": f"train embedding error: {error.message}"}
    except JobCancelled:
        return {"info": "train embedding interrupted: the job was cancelled before it ran"}
    except RuntimeError as error:
        return {"info": f"train embedding error: {error}"}
    if result.output is None:
        return {"info": f"train embedding interrupted at step {result.step}: filename: None error: None"}
    return {"info": f"train embedding complete: filename: {result.output} error: None"}


def _a1111_field(field: str) -> str:
    return {"data_dir": "data_root", "learning_rate": "learn_rate", "resolution": "training_width",
            "output_name": "embedding_name", "gradient_accumulation": "gradient_step"}.get(field, field)
