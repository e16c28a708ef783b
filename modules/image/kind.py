"""The image kind of work: txt2img, img2img, inpaint and outpaint requests through the queue."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from modules.image.codec import request_from_dict, request_to_dict, result_from_dict, result_to_dict
from modules.image.request import GenerationRequest
from modules.image.results import GenerationResult
from modules.jobs.control import JobControl, Progress
from modules.jobs.kinds import Kind
from modules.models.families import SD_DEFAULTS

IMAGE = "image"


def image_kind(run: Callable[[GenerationRequest, JobControl], GenerationResult],
               validate: Callable[[GenerationRequest], None], *,
               default_model: Callable[[], str | None] = lambda: None,
               default_safety: Callable[[], str | None] = lambda: None,
               model_defaults: Callable[[GenerationRequest], GenerationRequest] | None = None,
               run_batch: Callable[[list[GenerationRequest], list[JobControl]], list[Any]] | None = None,
               batch_key: Callable[[GenerationRequest], Hashable | None] | None = None) -> Kind:
    """The image kind, running requests with ``run`` (the generation function behind the extensions' hooks) after
    ``validate`` (``modules.image.checks.check_request`` with the studio's models and extensions).

    ``default_model()`` says which checkpoint a request that names none gets; it is asked at submission, so a
    default changed in Settings reaches every front end's next request, and the job records what it ran.
    ``default_safety()`` likewise says which NSFW filter a request that leaves ``safety`` out gets (an API key's
    rule has been applied before, by the queue's submission rules). ``model_defaults(request)`` then fills steps /
    CFG left unset with the model's own (SD3 and Flux differ from SD's 20 steps at CFG 7); without it they get
    SD's. ``run_batch`` / ``batch_key`` let the queue run compatible waiting jobs together
    (``modules.image.batching``).
    """

    def resolve(request: GenerationRequest) -> GenerationRequest:
        if request.safety is None:
            request = request.replace(safety=default_safety() or "off")
        if not request.model and (wanted := default_model()):
            request = request.replace(model=wanted)
        if model_defaults is not None:
            return model_defaults(request)
        return request.replace(steps=request.steps or SD_DEFAULTS.steps,
                               cfg_scale=SD_DEFAULTS.cfg_scale if request.cfg_scale is None else request.cfg_scale)

    def run_filtered(request: GenerationRequest, control: JobControl) -> GenerationResult:
        if request.safety not in (None, "off"):
            control.preview_interval = 0  # a live preview would show, unchecked, what the filter is there to hide
        return run(request, control)

    def run_batch_filtered(requests: list[GenerationRequest], controls: list[JobControl]) -> list[Any]:
        for request, control in zip(requests, controls, strict=True):
            if request.safety not in (None, "off"):
                control.preview_interval = 0
        return run_batch(requests, controls)

    return Kind(
        name=IMAGE,
        request_type=GenerationRequest,
        resolve=resolve,
        validate=validate,
        run=run_filtered,
        encode_request=lambda request, folder: request_to_dict(request, folder),
        decode_request=_decode_request,
        encode_result=lambda result, folder: result_to_dict(result, folder),
        decode_result=lambda data, folder: result_from_dict(data, folder),
        initial_progress=lambda request: Progress(job_count=request.n_iter, steps=request.steps),
        requested_images=lambda request: request.batch_size * request.n_iter,
        label=lambda request: request.task,
        describe=lambda request: request.prompt,
        batch_key=batch_key if batch_key is not None and run_batch is not None else lambda _request: None,
        run_batch=run_batch_filtered if run_batch is not None else None,
    )


def _decode_request(data: dict[str, Any], folder: Path, strict: bool) -> GenerationRequest:
    return request_from_dict(data, folder, strict=strict)
