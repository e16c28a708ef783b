"""What the native, OpenAI and Stability dialects share.

Checking a request before it is queued (so a bad field is a 4xx at once, not a failed job), waiting for a job
without holding a thread, turning a finished job into image bytes, reading multipart form fields with errors that
name the field, and a route class that answers every error in the dialect's own JSON shape.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from app.api.context import get_owner, get_services
from app.api.errors import ApiError, field_of
from app.api.images import decode_image, open_image_bytes
from modules.errors import RequestError
from modules.jobs.artifacts import Artifact, JobResult
from modules.jobs.queue import Job, JobQueue
from modules.runtime.services import Services

ENDED_STATES = ("done", "failed", "cancelled")
DISCONNECT_POLL_SECONDS = 0.5  # how soon a synchronous route notices that its client has gone
MAX_FORM_FIELD_BYTES = 64 * 1024 * 1024
ErrorRenderer = Callable[[int, str, "str | None"], Response]
ServicesDep = Annotated[Services, Depends(get_services)]  # the services behind the app a route belongs to


class ClientGone(ApiError):
    """The client of a synchronous request disconnected before its job ended; the job was cancelled. Answered
    with 499 (nginx's "client closed request"), which nobody receives: it only ends the route quietly."""

    def __init__(self, job_id: str) -> None:
        super().__init__(499, f"the client went away; job {job_id} was cancelled")


# -- checking and submitting -----------------------------------------------------------------------------------
async def submit_checked(services: Services, request: Any, *, source: str, owner: str | None = None,
                         webhook: str | None = None) -> Job:
    """Queue (the queue checks the request first, naming a bad field), off the event loop: a model lookup may hash
    a file, the job store writes."""
    return await run_in_threadpool(
        lambda: services.queue.submit(request, source=source, owner=owner, webhook=webhook))


def owner_of(http_request: Request) -> str | None:
    """Who the access layer says is asking (``key:<name>``), or None for an anonymous local client."""
    return get_owner(http_request)


def visible_to(job: Job, owner: str | None) -> bool:
    """A caller with an identity sees only its own jobs (not the web UI's, which have no owner, nor another
    key's); an anonymous local caller sees all of them."""
    return owner is None or job.owner == owner


# -- waiting and results -----------------------------------------------------------------------------------------
async def wait_for_job(queue: JobQueue, job: Job, safety_seconds: float = 1.0,
                       http_request: Request | None = None) -> None:
    """Wait on the event loop for the queue to say the job ended (pushed, not polled), so a hundred waiting
    clients cost no threads. ``safety_seconds`` bounds a wait should a notice ever be missed.

    With ``http_request`` (a synchronous route whose caller blocks for the result) the wait also watches the
    connection: when the client has gone away nobody will read the result, so the job is cancelled (a queued one
    never runs, a running one stops after its step) instead of occupying the worker, and ``ClientGone`` ends the
    route."""
    poll = safety_seconds if http_request is None else min(safety_seconds, DISCONNECT_POLL_SECONDS)
    with queue.events.subscribe(job.id, asynchronous=True) as changes:
        while not job.done_event.is_set():
            await changes.wait_async(poll)
            if http_request is not None and not job.done_event.is_set() and await http_request.is_disconnected():
                queue.cancel(job.id)
                raise ClientGone(job.id)


def finished_result(job: Job) -> JobResult:
    """The result of an ended job, or the error a client should see: its own bad field, a cancel, a crash."""
    if job.state == "failed":
        if job.error_field:
            raise RequestError(job.error_field, job.error or "invalid value")
        raise ApiError(500, f"generation failed: {job.error}")
    if job.result is None:
        raise ApiError(409, f"job {job.id} was cancelled before it made an image")
    if not any(item.type == "image" for item in job.result.artifacts):
        raise ApiError(409, f"job {job.id} was interrupted before it made an image")
    return job.result


def encode_image(image: Image.Image, fmt: str, infotext: str | None = None) -> bytes:
    """Image bytes in ``fmt`` carrying the infotext (PNG chunk or EXIF), like a saved file."""
    from modules.image.infotext import embed_infotext

    if image.mode not in {"png": (image.mode,), "jpeg": ("RGB", "L"), "webp": ("RGB", "RGBA")}[fmt]:
        image = image.convert("RGB")
    kwargs = embed_infotext(image, infotext, fmt)
    if len(kwargs.get("exif", b"")) > 65000:  # JPEG's EXIF segment limit; the file on disk keeps the full text
        kwargs.pop("exif")
    if fmt != "png":
        kwargs["quality"] = 95
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), **kwargs)
    return buffer.getvalue()


# -- parsing wire values -----------------------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")


def parse_size(text: str | None, field: str) -> tuple[int, int]:
    """``"WxH"`` -> (W, H); ``"auto"`` or nothing -> (0, 0), the model's own size."""
    if text is None or not str(text).strip() or str(text).strip().lower() == "auto":
        return 0, 0
    match = _SIZE.match(str(text))
    if not match:
        raise ApiError(400, f"size must look like 512x512 (width x height) or auto, got {text!r}", field)
    return int(match.group(1)), int(match.group(2))


async def read_form(http_request: Request) -> FormData:
    """The multipart (or urlencoded) body; a broken one is a 400 naming the body, never a 500."""
    try:
        return await http_request.form(max_part_size=MAX_FORM_FIELD_BYTES)
    except HTTPException as error:
        raise ApiError(400, f"malformed form body: {error.detail}", "body") from error
    except Exception as error:  # the multipart parser's own errors
        raise ApiError(400, f"malformed form body: {error}", "body") from error


class FormReader:
    """Typed access to form fields, each error naming its field; unknown fields are ignored, as the hosts do."""

    def __init__(self, form: FormData) -> None:
        self.form = form

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.form.get(name)
        if isinstance(value, UploadFile):
            raise ApiError(400, "expected a text value, got a file", name)
        if value is None or (required and not str(value).strip()):
            if required:
                raise ApiError(400, "is required", name)
            return default
        return str(value)

    def number(self, name: str, default: float, low: float, high: float, *, integer: bool = False) -> Any:
        raw = self.text(name)
        if raw is None or not raw.strip():
            return default
        try:
            value = float(raw)
            if integer and not value.is_integer():
                raise ValueError
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise ApiError(400, f"must be {kind}, got {raw!r}", name) from None
        if not low <= value <= high:
            raise ApiError(400, f"must be between {low:g} and {high:g}, got {raw}", name)
        return int(value) if integer else value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
        raw = self.text(name)
        if raw is None or not raw.strip():
            return default
        if raw.strip() not in choices:
            raise ApiError(400, f"must be one of {', '.join(choices)}; got {raw!r}", name)
        return raw.strip()

    def flag(self, name: str) -> bool:
        return (self.text(name) or "").strip().lower() in ("1", "true", "yes", "on")

    async def image(self, *names: str, required: bool = True) -> Image.Image | None:
        """The first of ``names`` present, as an uploaded file or a base64 string."""
        for name in names:
            values = self.form.getlist(name)
            if values:
                return await read_image_value(values[0], name)
        if required:
            raise ApiError(400, "is required (an image file)", names[0])
        return None


async def read_image_value(value: Any, field: str) -> Image.Image:
    """An uploaded file or a base64 string -> a loaded image, or a 4xx naming the field."""
    if isinstance(value, UploadFile):
        raw = await value.read()
        if not raw:
            raise ApiError(400, "the uploaded file is empty", field)
        return open_image_bytes(raw, field)
    return decode_image(value, field)


# -- errors in each dialect's shape ------------------------------------------------------------------------------
def dialect_route(render: ErrorRenderer, field_names: Mapping[str, str] | None = None) -> type[APIRoute]:
    """A route class whose errors come back as ``render(status, message, field)``.

    Field names of the engine (``batch_size``) are translated into the dialect's own (``n``) so a client is told
    about the parameter it actually sent. Client mistakes are 400s here, as the hosted APIs answer them."""
    names = dict(field_names or {})

    def wire(field: str | None) -> str | None:
        return names.get(field, field) if field else field

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Callable:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except ApiError as error:
                    status = 400 if error.status == 422 else error.status
                    response = render(status, error.message, wire(error.field))
                    response.headers.update(error.headers)
                    return response
                except RequestError as error:
                    return render(400, error.message, wire(error.field))
                except RequestValidationError as error:
                    field, message = validation_problem(error)
                    return render(400, message, wire(field))
                except HTTPException as error:
                    return render(error.status_code, str(error.detail), None)

            return handle

    return DialectRoute


def validation_problem(error: RequestValidationError) -> tuple[str | None, str]:
    """The first problem of a body validation error as (field, message)."""
    problems = error.errors()
    if not problems:
        return None, "invalid request"
    first = problems[0]
    if first.get("type") == "json_invalid":
        return None, "malformed JSON body: " + str(first.get("ctx", {}).get("error", first.get("msg", "")))
    field = field_of(tuple(first.get("loc", ())))
    field = None if field == "body" else field
    if first.get("type") == "missing":
        return field, "is required"
    return field, str(first.get("msg", "invalid value"))


def artifact_image(artifact: Artifact) -> Image.Image:
    """An image artifact's pixels, decoded now if the job was read back without them."""
    if artifact.image is not None:
        return artifact.image
    if artifact.path is None:
        raise ApiError(404, "the image file is missing", "index")
    from modules.image.codec import open_image

    try:
        return open_image(artifact.path)
    except OSError as error:
        raise ApiError(404, f"the image file {artifact.path.name} cannot be read: {error}", "index") from None
