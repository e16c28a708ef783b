"""Serve the studio: the Gradio UI, the UI with the REST API on the same port (``--api``), or the API alone
(``--nowebui``); bind address, logins, and the rules for a public ``--share`` link.

A share link puts the studio (and the machine's GPU and disk) on the public internet, so it is refused unless a
login is configured or the user explicitly opted out with ``share_without_auth``. When the link cannot be made
(no network, a blocked tunnel binary), the studio keeps serving locally and says so, rather than exiting.

``--listen`` alone would put the web UI on every interface with no login, so it is refused the same way unless
``--gradio-auth`` is set, the API's credentials guard the UI (``--api-auth``/``--api-keys``: see
``app.api.access``), or the user opted out with ``--listen-without-auth``.

The web UI's server is FastAPI + uvicorn and answers at once: the access rules and the body limit are middleware
it is *built* with (so nothing is ever served before they apply), the API's routes (``--api``) are its own from the
first request, and the studio's Gradio page is built in the background and mounted on the same app and port with
Gradio's ``mount_gradio_app`` (``app.starting``), a self-reloading "Sfumato is starting…" page answering meanwhile.
The API's paths never fall through to Gradio: unknown ones keep the API's own 404 and 405 answers.
``--nowebui`` serves ``create_api`` with uvicorn and never imports Gradio.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.api import API_TITLE, attach_api, create_api, server_middleware
from app.api.access import AccessConfigError, AccessPolicy, access_policy, check_access_settings
from app.api.context import ApiContext

if TYPE_CHECKING:
    import gradio as gr
    from fastapi import FastAPI

    from modules.runtime.services import Services

log = logging.getLogger(__name__)
# Seconds between the studio's page being served (the API alone: the server answering) and torch's import for
# device detection (see DeviceRuntime): long enough for a browser to fetch the page and its assets undisturbed,
# short enough to be done before most first jobs.
DETECT_DELAY = 3.0
# Seconds Ctrl-C waits for open requests (a page's event streams never end by themselves) before closing them.
GRACEFUL_SHUTDOWN_S = 3

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
    from app.gradio_import import import_gradio

    import_gradio()  # before app.ui imports it: the quick way, without Gradio's stub rewriting
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


def launch_options(services: Services, config: Any) -> dict[str, Any]:
    """The studio page's Gradio options (``mount_gradio_app`` keyword arguments): login, the files it may serve,
    the studio's and its extensions' CSS and scripts."""
    from app.ui import CSS
    from app.ui.accessible import head_script

    options: dict[str, Any] = {
        "server_name": config.server_name,
        "server_port": config.port,
        "auth": list(config.gradio_auth) or None,
        "allowed_paths": [str(config.outdir)],  # the gallery shows the saved files, infotext included
        "css": CSS + services.extensions.css(),
        "head": head_script(),  # names and tooltips for icon buttons (see app/ui/accessible.py)
        # No server-side rendering: its Node front proxy would own the port, and the access rules must see the
        # browser's own requests.
        "ssr_mode": False,
        "show_error": False,  # as with Blocks.launch: errors reach the page as the handlers word them
    }
    script = services.extensions.js()
    if script:
        options["js"] = script
    return options


def ui_app(services: Services, config: Any, context: ApiContext, policy: AccessPolicy,
           build: Callable[[], gr.Blocks] | None = None,
           on_ready: Callable[[gr.Blocks], None] | None = None,
           on_failure: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The web UI's server app: the access rules and the body limit in front of every route, the API's routes
    with ``--api``, and the studio (``build``, by default ``build_app``) mounted at ``/`` once built, the starting
    page until then. ``app.state.sfumato_ui`` is its ``DeferredUi`` (``wait_served``)."""
    from fastapi import FastAPI

    from app.api.access import is_api_path
    from app.starting import DeferredUi

    deferred = DeferredUi(build or (lambda: build_app(services)), lambda: launch_options(services, config),
                          on_ready=on_ready, on_failure=on_failure)
    docs: dict[str, Any] = {"docs_url": None, "redoc_url": None, "openapi_url": None}  # Gradio's, without --api
    if config.api:
        docs = {"title": API_TITLE, "docs_url": "/docs", "redoc_url": "/redoc"}  # the API's docs on the UI's server
    app = FastAPI(**docs, middleware=server_middleware(context, policy), lifespan=deferred.lifespan)
    deferred.install(app, claims=is_api_path if config.api else _nothing)
    if config.api:
        attach_api(app, services, context, policy)
        app.openapi = _api_openapi(app, services)
    app.state.sfumato_ui = deferred
    return app


def _nothing(path: str) -> bool:
    return False


def serve(services: Services, config: Any) -> None:
    """Serve what the flags ask for until interrupted; the worker runs meanwhile and stops on the way out."""
    if config.nowebui:
        serve_api(services, config, api_context(services))
    else:
        serve_ui(services, config)


def serve_ui(services: Services, config: Any) -> None:
    """The studio behind the access rules, with the API on the same server with ``--api``: the port answers at
    once, the page says "starting" until the studio's Blocks are built and mounted, then serves the studio."""
    from app.starting import ui_server

    share = check_share(config)
    check_ui(config)
    context = ui_context(services)
    policy = ui_policy(context)
    if context.guards_ui and not context.api_auth:
        print(KEYS_ONLY_UI, flush=True)
    local_url = f"http://{'localhost' if config.server_name == '0.0.0.0' else config.server_name}:{config.port}/"
    failures: list[BaseException] = []

    def ready(blocks: gr.Blocks) -> None:
        print(f"* Web UI ready on {local_url}", flush=True)
        services.runtime.detect_in_background(DETECT_DELAY)  # torch loads while the user reads the page
        if config.api:
            print(f"* API on the same server: {local_url.rstrip('/')}/sdapi/v1/ ... "
                  f"(docs at {local_url.rstrip('/')}/docs)", flush=True)
        if share:
            threading.Thread(target=open_share_link, args=(blocks, config, local_url), name="sfumato-share",
                             daemon=True).start()

    def failed(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True  # a studio without its page is not what was asked for: stop, saying why

    def listening() -> None:
        answering = "the API answers; " if config.api else ""
        print(f"* Running on local URL:  {local_url} ({answering}the web UI is starting)", flush=True)

    app = ui_app(services, config, context, policy, on_ready=ready, on_failure=failed)
    server = ui_server(app, on_started=listening, host=config.server_name, port=config.port, log_level="warning",
                       timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    services.start()
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean shutdown; no traceback for that
        print("Stopped.", flush=True)
    finally:
        _close_share_tunnels()
        services.stop()
    if failures:
        raise SystemExit(f"The web UI could not be built ({failures[0]!r}; the traceback is above).")


def open_share_link(blocks: gr.Blocks, config: Any, local_url: str) -> str | None:
    """Ask Gradio's share server for a public link to this server, as ``Blocks.launch(share=True)`` does: the
    link, or None after saying that the studio keeps serving locally."""
    from gradio import networking

    try:
        url = networking.setup_tunnel(local_host=config.server_name, local_port=config.port,
                                      share_token=blocks.share_token, share_server_address=None,
                                      share_server_tls_certificate=None)
    except Exception as error:  # no network, a blocked tunnel binary: the studio is still useful locally
        log.warning("could not create a public link: %s", error)
        url = None
    if not url:
        print(f"Could not create a public --share link (no network, or the tunnel was blocked). "
              f"Still serving locally at {local_url}.", flush=True)
        return None
    blocks.share_url = url
    print(f"* Running on public URL: {url}", flush=True)
    return url


def _close_share_tunnels() -> None:
    """Stop the share tunnel's helper process if one was started (Gradio's own launch does so on Ctrl-C)."""
    import sys

    tunneling = sys.modules.get("gradio.tunneling")  # not imported when nothing was shared
    for tunnel in list(getattr(tunneling, "CURRENT_TUNNELS", [])):
        tunnel.kill()


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
