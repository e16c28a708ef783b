"""Bad input becomes a 4xx whose message names the field; nothing a client sends may produce a 500.

Routes raise ``ApiError`` (or let ``RequestError`` from validation through); FastAPI's own body validation
errors are reshaped so every dialect's client gets the field name in one readable ``detail`` string.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from modules.errors import RequestError
from modules.jobs.queue import SubmissionRefused

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status and, where one is to blame, the request field."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}

    @classmethod
    def from_request_error(cls, error: RequestError, status: int = 422) -> ApiError:
        return cls(status, error.message, error.field)


def error_body(status: int, message: str, field: str | None) -> dict:
    """A1111-style error JSON (``error``/``detail``) plus the field name."""
    detail = f"{field}: {message}" if field else message
    return {"error": _names.get(status, "Error"), "detail": detail, "field": field}


_names = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
          413: "PayloadTooLarge", 415: "UnsupportedMediaType", 422: "UnprocessableEntity", 429: "TooManyRequests"}


# The tags of bodies that hold one of several kinds of request (the native ``POST /api/v1/jobs``): pydantic puts
# the tag in an error's location ("body", "upscale", "scale"), but the client never wrote it.
KIND_TAGS = ("image", "upscale", "interrogate", "audio", "train", "video")


def field_of(location: tuple) -> str:
    """A validation error's location as the field the client sent: ``"hires.steps"``, ``"images.0"``."""
    location = tuple(location)
    if len(location) > 2 and location[0] == "body" and location[1] in KIND_TAGS:
        location = (location[0], *location[2:])
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header", "form", "file")]
    return ".".join(parts) or "body"


NON_FINITE_MESSAGE = "must be a finite number (NaN and Infinity are not JSON numbers)"
JSON_TYPES = ("application/json",)


def non_finite_path(value: Any, path: tuple[str, ...] = ()) -> str | None:
    """Where the first NaN or Infinity sits in parsed JSON (``"override_settings.cfg"``, ``"init_images.0"``), or
    None. Python's JSON reader accepts these tokens although JSON has no such numbers; passed on, a NaN slips
    through every range check (all comparisons with NaN are false) and cannot be written back out as JSON."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (".".join(path) or "body")
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite_path(item, (*path, str(key)))
        if found is not None:
            return found
    return None


async def finite_json_body(request: Request) -> None:
    """Router dependency: a JSON body holding NaN or Infinity is a 422 naming the field, before the body is
    validated (pydantic accepts them in float fields, and ``Any`` fields take them as they are)."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type and not (content_type in JSON_TYPES or content_type.endswith("+json")):
        return
    if not await request.body():
        return
    try:
        data = await request.json()  # parsed once: FastAPI's own parse of this body is cached on the request
    except ValueError:
        return  # not JSON: the route's own parsing says so
    field = non_finite_path(data)
    if field is not None:
        raise ApiError(422, NON_FINITE_MESSAGE, field)


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as strings, so echoing a client's input back can never fail to encode."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on this request's path (asked of the routes themselves, so
    routers included in any way are covered)."""
    routes = request.app.router.routes
    return [method for method in HTTP_METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error_body(error.status, error.message, error.field), status_code=error.status,
                            headers=error.headers)

    @app.exception_handler(SubmissionRefused)
    async def _refused(request: Request, error: SubmissionRefused) -> JSONResponse:
        from app.api.access import dialect_error_body

        headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
        return JSONResponse(dialect_error_body(request.url.path, error.status, error.message),
                            status_code=error.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        """An unknown API path or method in the dialect's error shape; a 405 says which methods the path takes
        (``Allow``: all of them, not only those of the first route Starlette matched). Other paths (Gradio's)
        keep FastAPI's answer."""
        from app.api.access import dialect_error_body, is_api_path

        path = request.url.path
        if not is_api_path(path):
            return await http_exception_handler(request, error)
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        body = dialect_error_body(path, error.status_code, str(error.detail))
        return JSONResponse(body, status_code=error.status_code, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse(error_body(422, error.message, error.field), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        first = problems[0] if problems else {"loc": ("body",), "msg": "invalid request"}
        field = field_of(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid value"))
        if first.get("type") == "json_invalid":
            field, message = "body", "malformed JSON: " + str(first.get("ctx", {}).get("error", message))
        body = error_body(422, message, field)
        body["errors"] = json_safe(problems)
        return JSONResponse(body, status_code=422)
