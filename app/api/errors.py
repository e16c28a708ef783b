"""Bad input becomes a 4xx whose message names the field; nothing a client sends may produce a 500.

Routes raise ``ApiError`` (or let ``RequestError`` from validation through); FastAPI's own body validation
errors are reshaped so every dialect's client gets the field name in one readable ``detail`` string.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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


def _field_of(location: tuple) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header", "form", "file")]
    return ".".join(parts) or "body"


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

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse(error_body(422, error.message, error.field), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        first = problems[0] if problems else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid value"))
        if first.get("type") == "json_invalid":
            field, message = "body", "malformed JSON: " + str(first.get("ctx", {}).get("error", message))
        body = error_body(422, message, field)
        body["errors"] = json.loads(json.dumps(problems, default=str))
        return JSONResponse(body, status_code=422)
