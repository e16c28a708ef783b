"""The REST API: four dialects (A1111, native async jobs, OpenAI images, Stability) over the one job queue.

``create_api(services)`` builds a FastAPI application; ``attach_api(app, services)`` adds the same routes to an
existing one (the Gradio server's, when the UI and the API share a port). Every dialect translates its wire format
into a ``GenerationRequest`` and submits it to ``services.queue``; none generates anything itself. The ControlNet
extension's routes (``/controlnet/*``) sit beside them: its ``detect`` preprocesses inline, as the extension does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

from app.api.body_limit import BodyLimitMiddleware
from app.api.compression import compression_middleware, compression_options
from app.api.context import ApiContext
from app.api.errors import finite_json_body, install_error_handlers

if TYPE_CHECKING:
    from app.api.access import AccessPolicy
    from modules.runtime.services import Services

API_TITLE = "Sfumato API"


def attach_api(app: FastAPI, services: Services, context: ApiContext | None = None,
               policy: AccessPolicy | None = None) -> FastAPI:
    """Add every dialect's routes, the error handlers and the access rules to ``app`` (``policy``: rules whose
    middleware ``app`` was built with, see ``install_access``)."""
    from app.api import (
        a1111,
        a1111_extras,
        a1111_interrogate,
        controlnet,
        controlnet_units,
        native,
        openai_audio,
        openai_images,
        stability,
        stability_audio,
        stability_video,
        training,
    )
    from app.api.access import install_access
    from app.api.webhooks import install_webhooks

    context = context or ApiContext.from_services(services)
    app.state.sfumato = context
    install_error_handlers(app)
    if policy is None:  # else the app was built with its middlewares (server_middleware)
        app.add_middleware(GZipMiddleware, **compression_options())
        app.add_middleware(BodyLimitMiddleware, max_bytes=context.max_body_bytes)
    install_access(app, context, policy)
    for module in (a1111, a1111_extras, a1111_interrogate, controlnet, controlnet_units, native, openai_images,
                   stability, openai_audio, stability_audio, training, stability_video):
        app.include_router(module.router, dependencies=[Depends(finite_json_body)])
    # jobs resumed after a restart still call their webhook; an exposed studio posts only to public addresses
    install_webhooks(services.queue, allow_private=not context.exposed)
    for name, router in services.extensions.routers():
        app.include_router(router, prefix=f"/extensions/{name}", tags=[f"extension: {name}"])
    return app


def server_middleware(context: ApiContext, policy: AccessPolicy) -> list[Middleware]:
    """The access rules, then the body limit, then gzip of text answers, for an app that takes its middleware when it
    is built, so nothing is served before they are in place. Access is outermost: a caller without credentials is
    refused before any of its body is read."""
    from app.api.access import access_middleware

    return [access_middleware(policy), Middleware(BodyLimitMiddleware, max_bytes=context.max_body_bytes),
            compression_middleware()]


def create_api(services: Services, context: ApiContext | None = None) -> FastAPI:
    """A stand-alone API application (``--nowebui``, and the tests)."""
    app = FastAPI(title=API_TITLE, description=__doc__.split("\n\n")[0], version=_version(services))
    attach_api(app, services, context)
    app.openapi = described(app, services)
    return app


def described(app: FastAPI, services: Services) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: the API routes' description with the answers they really give (``app.api.openapi``), built
    on first use (the routes are all there by then) and kept."""
    from app.api.openapi import api_schema

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = api_schema(app, title=API_TITLE, version=_version(services),
                                            description=__doc__.split("\n\n")[0])
        return app.openapi_schema

    return openapi


def _version(services: Services) -> str:
    return services.engine.version
