"""A1111's ``POST /sdapi/v1/interrogate`` (``{"image", "model"}`` -> ``{"caption"}``), so ``webuiapi``'s
``interrogate(image, model="clip")`` and A1111 scripts get a prompt from an image through Sfumato unmodified.

Each call is one job of the interrogate kind on the one queue (its models share the worker and its accelerator
with generation), and the route waits for it as A1111 clients expect. A1111's own statuses are kept: an
interrogator it does not know is a 404 "model not found"; a model that is not installed is a 400 naming the
folder to fill.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.context import get_owner
from app.api.errors import ApiError
from app.api.images import decode_image
from app.api.requests_common import ServicesDep, wait_for_job
from modules.errors import RequestError
from modules.interrogate.folders import MissingInterrogateModel
from modules.interrogate.kind import InterrogateResult
from modules.interrogate.request import INTERROGATORS, InterrogateRequest
from modules.jobs.queue import JobCancelled

router = APIRouter(prefix="/sdapi/v1", tags=["A1111"])
Owner = Annotated[str | None, Depends(get_owner)]


class InterrogateBody(BaseModel):
    """A1111's ``InterrogateRequest``."""

    image: str = Field("", description="the image, base64 (raw or a data: URL)")
    model: str = Field("clip", description='"clip": a caption plus the best-matching artist, medium, movement and '
                                           'flavour terms; "blip": the caption alone')


class InterrogateResponse(BaseModel):
    caption: str = Field(description="the image described as a prompt")


@router.post("/interrogate", response_model=InterrogateResponse)
async def interrogate(body: InterrogateBody, http_request: Request, response: Response, services: ServicesDep,
                      owner: Owner) -> dict[str, Any]:
    name = body.model.strip().lower()
    if name not in INTERROGATORS:
        raise ApiError(404, f"model not found: {body.model!r}; this studio interrogates with "
                            f"{', '.join(INTERROGATORS)}", "model")
    if not body.image:
        raise ApiError(422, "give the image to interrogate (base64)", "image")
    image = await run_in_threadpool(decode_image, body.image, "image")
    request = InterrogateRequest(image=image, model=name)
    try:
        job = await run_in_threadpool(lambda: services.queue.submit(request, source="a1111", owner=owner))
    except RequestError as error:
        raise _wire_error(error) from None
    response.headers["X-Job-Id"] = job.id
    await wait_for_job(services.queue, job, http_request=http_request)  # a client that hung up cancels its job
    try:
        result = services.queue.wait(job, timeout=0)
    except RequestError as error:
        raise _wire_error(error) from None
    except JobCancelled:
        raise ApiError(409, "the job was cancelled before it ran") from None
    except RuntimeError as error:
        raise ApiError(500, f"interrogation failed: {error}") from None
    assert isinstance(result, InterrogateResult)
    return {"caption": result.caption}


def _wire_error(error: RequestError) -> ApiError:
    """A model that is not installed, or one that cannot be read, is the server's setup (400, naming it); a bad
    image is the client's (422)."""
    status = 400 if isinstance(error, MissingInterrogateModel) or error.field in ("model", "captioner",
                                                                                  "clip_model") else 422
    return ApiError(status, error.message, error.field)
