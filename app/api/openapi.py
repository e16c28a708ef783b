"""The published OpenAPI description, made to say what the server really sends.

FastAPI documents every route's success answer and a 422 in its own ``HTTPValidationError`` shape; neither is the
whole truth here. Every API route can be refused by the access layer (401, 403, 429) and a body can be too large
(413), each in the error shape of its dialect; A1111 and native routes answer bad input with our 422 shape (``error``,
``detail``, ``field``), the OpenAI and Stability dialects with a 400 in theirs; routes on a job answer 404 and 409.
One pass over the generated description adds those answers (so a dialect's routes need not each repeat them) and
replaces FastAPI's validation error. Routes whose success is not JSON (images, the event stream) say so where they
are declared (``responses=`` on the route); the Stability dialect's generation routes answer with an image or JSON
as the ``accept`` header asks, and ``x-async`` makes them answer 202 with a job id, which is described here.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.access import is_api_path

BODY_METHODS = frozenset({"post", "put", "patch"})
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
_NULLABLE_TEXT = {"anyOf": [{"type": "string"}, {"type": "null"}]}
ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "SfumatoError": {
        "title": "SfumatoError",
        "description": "A1111-style error (A1111 and native routes): the status's name, a readable detail that "
                       "starts with the field at fault, and that field (null when no one field is to blame).",
        "type": "object",
        "required": ["error", "detail", "field"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}, "field": _NULLABLE_TEXT,
                       "errors": {"type": "array", "items": {"type": "object"},
                                  "description": "every validation problem found (422 from body checks only)"}},
    },
    "OpenAIError": {
        "title": "OpenAIError",
        "description": "OpenAI's error shape, as its client parses it.",
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["message", "type"],
                                 "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                                "param": _NULLABLE_TEXT, "code": _NULLABLE_TEXT}}},
    },
    "StabilityError": {
        "title": "StabilityError",
        "description": "Stability AI's error shape: a name for the status and messages that start with the field.",
        "type": "object",
        "required": ["name", "errors"],
        "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                       "errors": {"type": "array", "items": {"type": "string"}}},
    },
}
_WHY = {
    400: "Bad input (a value that names no model, sampler, ...; a malformed form or size)",
    401: "Credentials are needed (--api-auth, --api-keys) and were missing or wrong",
    403: "Refused: another site's page, a Host that is not this studio, or a route for the studio's operator",
    404: "No such job, image or artifact (or not this caller's); no interrogator of that name",
    409: "The job is not in a state for this (still running, already ended, cancelled before it made an image)",
    413: "The request body is over the studio's limit (--max-body-mb), or an image is too large",
    422: "A field is invalid; ``field`` names it",
    429: "Over the caller's rate limit, concurrent jobs or monthly images; ``Retry-After`` says when to retry",
    501: "Not implemented by this studio",
}


def api_schema(app: FastAPI, *, title: str, version: str, description: str | None = None) -> dict[str, Any]:
    """The description of ``app``'s API routes only (not Gradio's), with the answers they really give."""
    schema = get_openapi(title=title, version=version, description=description, routes=app.routes)
    schema["paths"] = {path: item for path, item in schema.get("paths", {}).items() if is_api_path(path)}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(copy.deepcopy(ERROR_SCHEMAS))  # the description is the caller's to change
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete", "patch"):
                _complete(path, method, operation)
    _drop_unused(schema, ("HTTPValidationError", "ValidationError"))
    return schema


def dialect_of(path: str) -> str:
    if path.startswith("/v1/"):
        return "OpenAIError"
    if path.startswith("/v2beta/"):
        return "StabilityError"
    return "SfumatoError"


def _complete(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's HTTPValidationError: never what is sent
    error = dialect_of(path)
    for status in sorted(_error_statuses(path, method, operation, error)):
        responses.setdefault(str(status), {
            "description": _WHY[status],
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{error}"}}},
        })
    if path.startswith("/v2beta/"):
        _stability_answers(responses)


def _error_statuses(path: str, method: str, operation: dict[str, Any], error: str) -> set[int]:
    statuses = {401, 403, 429}  # the access layer, on every API route
    has_body = method in BODY_METHODS
    if has_body:  # too large; a name that resolves to nothing or a malformed body; a job cancelled before it ran
        statuses |= {400, 409, 413}
    if has_body or operation.get("parameters"):
        statuses.add(422 if error == "SfumatoError" else 400)  # the dialects answer bad fields with 400
    if "{" in path:  # a job (or its image) that does not exist, or is not in a state for this
        statuses |= {404, 409}
    if path.endswith("/interrogate"):  # an interrogator other than clip/blip: A1111's "model not found"
        statuses.add(404)
    if error == "StabilityError":
        statuses.add(501)
    return statuses


def _stability_answers(responses: dict[str, Any]) -> None:
    """Stability's generation and edit routes: JSON or the image itself (``accept: image/*``), or 202 with a job
    id (``x-async: true``); its results route: 202 while the job runs, then the same answers."""
    ok = responses.setdefault("200", {"description": "The result"})
    content = ok.setdefault("content", {})
    for media_type in IMAGE_TYPES:
        content.setdefault(media_type, {"schema": {"type": "string", "format": "binary"}})
    responses.setdefault("202", {
        "description": "Queued (``x-async: true``): fetch the result at /v2beta/results/{id}",
        "content": {"application/json": {"schema": {"type": "object", "required": ["id"],
                                                    "properties": {"id": {"type": "string"}}}}},
    })


def _drop_unused(schema: dict[str, Any], names: tuple[str, ...]) -> None:
    text = json.dumps(schema["paths"])
    components = schema["components"]["schemas"]
    for name in names:
        if f'"#/components/schemas/{name}"' not in text:
            components.pop(name, None)
