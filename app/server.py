"""Serve the studio: the Gradio UI, the UI with the REST API on the same port (``--api``), or the API alone
(``--nowebui``); bind address, logins, and the rules for a public ``--share`` link.

A share link puts the studio (and the machine's GPU and disk) on the public internet, so it is refused unless a
login is configured or the user explicitly opted out with ``share_without_auth``. When the link cannot be made
(no network, a blocked tunnel binary), the studio keeps serving locally and says so, rather than exiting.

``--listen`` alone would put the web UI on every interface with no login, so it is refused the same way unless
``--gradio-auth`` is set, the API's credentials guard the UI (``--api-auth``/``--api-keys``: see
``app.api.access``), or the user opted out with ``--listen-without-auth``.

The access rules and the body limit are middleware the Gradio app is *built* with (through ``app_kwargs``), so no
request reaches the UI or Gradio's routes before they apply. With ``--api`` the API's routes then join the server
Gradio's ``launch`` starts (as AUTOMATIC1111 does), so ``--share`` and the UI's login keep working unchanged;
Gradio registers no catch-all route, so the API's paths are reachable even though they are added after launch.
``--nowebui`` serves ``create_api`` with uvicorn and never imports Gradio.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from app.api import API_TITLE, attach_api, create_api, server_middleware
from app.api.access import AccessConfigError, AccessPolicy, access_policy, check_access_settings
from app.api.context import ApiContext

if TYPE_CHECKING:
    import gradio as gr
    from fastapi import FastAPI

    from modules.runtime.services import Services

log = logging.getLogger(__name__)
# Seconds between the server answering and torch's import for device detection (see DeviceRuntime): long enough
# for a browser to fetch the page and its assets undisturbed, short enough to be done before most first jobs.
DETECT_DELAY = 3.0

SHARE_REFUSED = (
    "Refusing to create a public --share link without a login: anyone with the link could use this machine. "
    "Set --gradio-auth user:password, or pass --share-without-auth if you really want an open link."
)
LISTEN_REFUSED = (
    "Refusing to serve the web UI on every network interface (--listen) without a login: anyone on the network "
    "could use this machine, its GPU and its disk. Set --gradio-auth user:password (a login for the UI), or "
    "--api-auth user:password / --api-keys FILE (the API's credentials then guard the UI too), or pass "
    "--listen-without-auth if you really want an open studio on your network."
)
KEYS_ONLY_UI = (
    "Note: the web UI is guarded by the API's keys only; a browser cannot send a key. Add --gradio-auth or "
    "--api-auth for a browser login, or open the UI with a key marked admin (e.g. through a proxy that adds it)."
)


def build_app(services: Services) -> gr.Blocks:
    """The studio's Blocks without launching it (for tests and for mounting into another server)."""
    from app.ui import build_ui

    return build_ui(services)


def check_share(config: Any) -> bool:
    """Whether to ask for a public link; ``SystemExit`` with the reason when sharing would be unsafe."""
    if not config.share:
        return False
    if not config.gradio_auth and not config.share_without_auth:
        raise SystemExit(SHARE_REFUSED)
    return True


def check_ui(config: Any) -> None:
    """``SystemExit`` with the reason when the web UI would be served on the network with no login of any kind."""
    if config.nowebui or not config.listen or config.gradio_auth or config.listen_without_auth:
        return
    if not (config.api_auth or config.api_keys_file):
        raise SystemExit(LISTEN_REFUSED)


def check_api(config: Any) -> None:
    """``SystemExit`` with the reason when the API's flags are unsafe or unusable (before anything loads)."""
    _checked(ApiContext.from_config(config))


def api_context(services: Services) -> ApiContext:
    """The API's access settings from the command line; ``SystemExit`` before anything is served if unsafe."""
    return _checked(ApiContext.from_services(services))


def ui_context(services: Services) -> ApiContext:
    """The access settings of the UI's server, with or without the API's routes (``--api``)."""
    context = ApiContext.from_services(services)
    return _checked(dataclasses.replace(context, serves_api=bool(services.config.api)))


def ui_policy(context: ApiContext) -> AccessPolicy:
    """The UI server's access rules; ``SystemExit`` before anything is served if unsafe."""
    try:
        return access_policy(context)
    except AccessConfigError as error:
        raise SystemExit(str(error)) from None


def _checked(context: ApiContext) -> ApiContext:
    try:
        check_access_settings(context)
    except AccessConfigError as error:
        raise SystemExit(str(error)) from None
    return context


def launch_options(services: Services, config: Any, context: ApiContext | None = None,
                   policy: AccessPolicy | None = None) -> dict[str, Any]:
    """``Blocks.launch`` keyword arguments shared by the first launch and a local-only relaunch; with ``policy``
    the app is built with the access rules and the body limit in front of every route."""
    from app.ui import CSS
    from app.ui.accessible import head_script

    options: dict[str, Any] = {
        "server_name": config.server_name,
        "server_port": config.port,
        "auth": list(config.gradio_auth) or None,
        "allowed_paths": [str(config.outdir)],  # the gallery shows the saved files, infotext included
        "css": CSS + services.extensions.css(),
        "head": head_script(),  # names and tooltips for icon buttons (see app/ui/accessible.py)
        "prevent_thread_lock": True,
        # No server-side rendering: its Node front proxy would own the port, and the access rules must see the
        # browser's own requests.
        "ssr_mode": False,
    }
    script = services.extensions.js()
    if script:
        options["js"] = script
    app_kwargs: dict[str, Any] = {}
    if config.api:
        app_kwargs.update(docs_url="/docs", redoc_url="/redoc")  # the API's docs on the UI's server
    if context is not None and policy is not None:
        app_kwargs["middleware"] = server_middleware(context, policy)
    if app_kwargs:
        options["app_kwargs"] = app_kwargs
    return options


def serve(services: Services, config: Any) -> None:
    """Serve what the flags ask for until interrupted; the worker runs meanwhile and stops on the way out."""
    if config.nowebui:
        serve_api(services, config, api_context(services))
    else:
        serve_ui(services, config)


def serve_ui(services: Services, config: Any) -> None:
    """The Gradio studio behind the access rules, with the API on the same server with ``--api``."""
    share = check_share(config)
    check_ui(config)
    context = ui_context(services)
    policy = ui_policy(context)
    if context.guards_ui and not context.api_auth:
        print(KEYS_ONLY_UI, flush=True)
    blocks = build_app(services)
    services.start()
    try:
        app, local_url = _launch(blocks, launch_options(services, config, context, policy), share)
        services.runtime.detect_in_background(DETECT_DELAY)  # torch loads while the user reads the page
        if config.api:
            attach_to_launched(app, services, context, policy)
            print(f"* API on the same server: {local_url.rstrip('/')}/sdapi/v1/ ... "
                  f"(docs at {local_url.rstrip('/')}/docs)", flush=True)
        blocks.block_thread()
    finally:
        services.stop()


def attach_to_launched(app: FastAPI, services: Services, context: ApiContext,
                       policy: AccessPolicy | None = None) -> None:
    """Add the API to the app Gradio is already serving, its docs listing the API's routes only (``policy``: the
    rules the app was built with, see ``launch_options``)."""
    attach_api(app, services, context, policy)
    app.openapi = _api_openapi(app, services)
    app.middleware_stack = None  # rebuilt on the next request, with every handler attach_api added


def serve_api(services: Services, config: Any, context: ApiContext | None = None) -> None:
    """The API alone, served by uvicorn on ``--port``."""
    import uvicorn

    app = create_api(services, context or api_context(services))
    server = uvicorn.Server(uvicorn.Config(app, host=config.server_name, port=config.port, log_level="info"))
    services.start()
    threading.Thread(target=_detect_once_serving, args=(server, services), name="sfumato-wait-serving",
                     daemon=True).start()
    try:
        shown = f"http://{config.server_name}:{config.port}"
        print(f"* Sfumato API (no web UI) on {shown} (docs at {shown}/docs)", flush=True)
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean shutdown; no traceback for that
        print("Stopped.", flush=True)
    finally:
        services.stop()


def _detect_once_serving(server: Any, services: Services) -> None:
    """Start device detection (torch's import) once uvicorn accepts connections: earlier, the import would hold the
    interpreter while the server starts and delay its first answer."""
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if server.started:
        services.runtime.detect_in_background(DETECT_DELAY)


def _api_openapi(app: FastAPI, services: Services) -> Any:
    """``app.openapi`` listing only the API's paths, not Gradio's (built per call: the docs are fetched rarely)."""
    from app.api.openapi import api_schema

    version = services.engine.version

    def openapi() -> dict[str, Any]:
        return api_schema(app, title=API_TITLE, version=version)

    return openapi


def _launch(blocks: gr.Blocks, options: dict[str, Any], share: bool) -> tuple[Any, str]:
    """Launch, falling back to a local-only server when the share link fails; (the FastAPI app, local URL)."""
    if not share:
        app, local_url, _ = blocks.launch(share=False, **options)
        return app, local_url
    try:
        app, local_url, share_url = blocks.launch(share=True, **options)
    except Exception as error:  # some Gradio versions raise when the tunnel fails; serve locally instead
        log.warning("could not create a public link: %s", error)
        blocks.close()
        app, local_url, share_url = blocks.launch(share=False, **options)
    if not share_url:
        message = (f"Could not create a public --share link (no network, or the tunnel was blocked). "
                   f"Still serving locally at {local_url}.")
        print(message, flush=True)
    return app, local_url
