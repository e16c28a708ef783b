"""The REST API: four dialects (A1111, native async jobs, OpenAI images, Stability) over the one job queue.

``create_api(services)`` builds a FastAPI application; ``attach_api(app, services)`` adds the same routes to an
existing one (the Gradio server's, when the UI and the API share a port). Every dialect translates its wire format
into a ``GenerationRequest`` and submits it to ``services.queue``; none generates anything itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from app.api.context import ApiContext
from app.api.errors import install_error_handlers

if TYPE_CHECKING:
    from modules.runtime.services import Services

API_TITLE = "Sfumato API"


def attach_api(app: FastAPI, services: Services, context: ApiContext | None = None) -> FastAPI:
    """Add every dialect's routes, the error handlers and the access rules to ``app``."""
    from app.api import a1111, a1111_extras, native, openai_images, stability
    from app.api.access import install_access
    from app.api.webhooks import install_webhooks

    context = context or ApiContext.from_services(services)
    app.state.sfumato = context
    install_error_handlers(app)
    install_access(app, context)
    for module in (a1111, a1111_extras, native, openai_images, stability):
        app.include_router(module.router)
    # jobs resumed after a restart still call their webhook; an exposed studio posts only to public addresses
    install_webhooks(services.queue, allow_private=not context.exposed)
    for name, router in services.extensions.routers():
        app.include_router(router, prefix=f"/extensions/{name}", tags=[f"extension: {name}"])
    return app


def create_api(services: Services, context: ApiContext | None = None) -> FastAPI:
    """A stand-alone API application (``--nowebui``, and the tests)."""
    app = FastAPI(title=API_TITLE, description=__doc__.split("\n\n")[0], version=_version(services))
    return attach_api(app, services, context)


def _version(services: Services) -> str:
    return services.engine.version
