"""The web UI's server answers at once and shows "Sfumato is starting…" until the studio's page is built.

Importing Gradio and laying out the studio's Blocks takes longer than issue 18's two seconds on a small machine,
while the server itself (FastAPI + uvicorn, which the API already uses) is up in a fraction of that. So the server
binds the port first; ``DeferredUi`` builds the Blocks in a thread once it runs and then mounts them with Gradio's
``mount_gradio_app`` on the same app and port. Until then every path that no route of the server claims gets the
starting answer: for a browser a small page that reloads itself as soon as its own address serves the studio, for
anything else a JSON 503. Both are 503 with ``Retry-After``, so a script, a load balancer or a test that waits for
the page to answer 200 keeps waiting for the real studio, and the API's routes (``--api``) answer meanwhile.

This module imports neither Gradio nor FastAPI at import time: it is on the path to the first answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr
    from fastapi import FastAPI
    from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
STARTING_MESSAGE = "Sfumato is starting: the web UI is being prepared; try again in a moment."
STARTING_MARK = "sfumato-starting"  # in the page, for scripts and tests that tell it from the studio
# The page asks its own address (whatever prefix a proxy adds) until it answers 200, then reloads into the studio.
# A 401 means the browser's login went missing (never the case once it is asked): it reloads to ask again.
STARTING_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sfumato is starting…</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<noscript><meta http-equiv="refresh" content="2"></noscript>
<style>
  body {{ font-family: system-ui, sans-serif; display: grid; place-items: center; min-height: 90vh; margin: 0;
          color: #374151; background: #fafafa; }}
  @media (prefers-color-scheme: dark) {{ body {{ color: #e5e7eb; background: #111827; }} }}
  .dot {{ display: inline-block; width: .6em; height: .6em; border-radius: 50%; background: currentColor;
          animation: pulse 1s infinite alternate; margin-right: .5em; }}
  @keyframes pulse {{ from {{ opacity: .2; }} to {{ opacity: 1; }} }}
</style></head>
<body id="{STARTING_MARK}"><main>
<h1><span class="dot"></span>Sfumato is starting…</h1>
<p>The studio's page is being prepared. This page opens it by itself as soon as it is ready.</p>
</main>
<script>
(function poll() {{
  fetch(location.href, {{cache: "no-store", credentials: "same-origin"}})
    .then(function (answer) {{ if (answer.ok || answer.status === 401) location.reload(); else retry(); }})
    .catch(retry);
  function retry() {{ setTimeout(poll, 500); }}
}})();
</script>
</body></html>
"""


class DeferredUi:
    """The studio's Blocks, built off the event loop once the server runs and then mounted at ``/`` of that server.

    ``build`` makes the Blocks (importing Gradio is most of its cost); ``mount`` gives ``mount_gradio_app``'s keyword
    arguments (called in the same thread: the studio's CSS and scripts come from modules that import Gradio);
    ``on_ready`` runs in the event loop once the studio is served, ``on_failure`` with the exception if
    building failed (the server then keeps answering "starting" and the API's routes keep working).

    Use: ``FastAPI(lifespan=deferred.lifespan)``, then ``deferred.install(app)`` before it serves.
    """

    def __init__(self, build: Callable[[], gr.Blocks], mount: Callable[[], dict[str, Any]],
                 on_ready: Callable[[gr.Blocks], None] | None = None,
                 on_failure: Callable[[BaseException], None] | None = None) -> None:
        self.build = build
        self.mount = mount
        self.on_ready = on_ready
        self.on_failure = on_failure
        self.served = threading.Event()
        self.blocks: gr.Blocks | None = None
        self._shell: FastAPI | None = None

    def install(self, app: FastAPI, claims: Callable[[str], bool] = lambda path: False) -> None:
        """Make the studio (or, until it is mounted, the starting answer) what ``app`` answers on every path none of
        its routes takes, except the paths ``claims`` says are ``app``'s own (the API's): those keep ``app``'s own
        404 and 405 answers instead of reaching Gradio's."""
        from fastapi import FastAPI

        # The Blocks are mounted into this shell with Gradio's documented mount_gradio_app; the shell is what the
        # server's router falls back to. Until the mount, the shell's own fallback is the starting answer.
        shell = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        shell.router.default = starting_answer
        self._shell = shell

        async def fallback(scope: Scope, receive: Receive, send: Send) -> None:
            if claims(scope["path"]):
                await app.router.not_found(scope, receive, send)
            else:
                await shell(scope, receive, send)

        app.router.default = fallback

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """The server's lifespan: the studio is built and served in a task that ends with the server."""
        task = asyncio.create_task(self._serve(), name="sfumato-ui")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def end_streams(self) -> None:
        """End the page's open event streams (each tab's heartbeat never ends by itself), as Gradio's own server
        does when it stops; a server that is stopping calls this before it waits for open requests to finish."""
        from starlette.routing import Mount

        mounted = [route.app for route in (self._shell.routes if self._shell else []) if isinstance(route, Mount)]
        for gradio_app in mounted:
            gradio_app.stop_event.set()

    def wait_served(self, timeout: float | None = None) -> bool:
        """Whether the studio is served (waiting up to ``timeout`` seconds): for callers in other threads."""
        return self.served.wait(timeout)

    async def _serve(self) -> None:
        if self._shell is None:
            raise RuntimeError("DeferredUi.install(app) must be called before the server starts")
        try:
            self.blocks = await _in_daemon_thread(self._build_and_mount)
            # mount_gradio_app wrapped the shell's lifespan with Gradio's own (its queue, its clean-up of expired
            # state and files) and its start-up events; the shell is not the server's top app, so it is entered here.
            async with self._shell.router.lifespan_context(self._shell):
                self.served.set()
                if self.on_ready is not None:
                    self.on_ready(self.blocks)
                await asyncio.Event().wait()  # until the server stops and cancels this task
        except Exception as error:  # the API keeps serving; the operator sees why the page never came
            log.exception("the web UI could not be built")
            if self.on_failure is not None:
                self.on_failure(error)

    def _build_and_mount(self) -> gr.Blocks:
        from app.gradio_import import import_gradio

        gr = import_gradio()  # the quick way (without Gradio's stub rewriting), before anything imports it
        blocks = self.build()
        gr.mount_gradio_app(self._shell, blocks, path="/", **self.mount())
        return blocks


async def starting_answer(scope: Scope, receive: Receive, send: Send) -> None:
    """503 with ``Retry-After``: the self-reloading page for a browser, a JSON message for anything else."""
    from starlette.datastructures import Headers
    from starlette.responses import HTMLResponse, Response

    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1013, "reason": "Sfumato is starting"})  # "try again later"
        return
    if scope["type"] != "http":
        return
    headers = {"Retry-After": str(RETRY_AFTER_S), "Cache-Control": "no-store"}
    if "text/html" in Headers(scope=scope).get("accept", ""):
        response: Response = HTMLResponse(STARTING_PAGE, status_code=503, headers=headers)
    else:
        body = json.dumps({"detail": STARTING_MESSAGE, "starting": True})
        response = Response(body, status_code=503, headers=headers, media_type="application/json")
    await response(scope, receive, send)


def _in_daemon_thread(function: Callable[[], Any]) -> asyncio.Future:
    """``function()`` in a daemon thread, as an awaitable: unlike ``asyncio.to_thread`` (whose worker threads are
    joined at exit), a Ctrl-C during the build does not wait for Gradio's import to finish."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile: the server is stopping
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = function(), None
        except BaseException as raised:  # noqa: BLE001 — handed to the awaiting task, which decides
            result, error = None, raised
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="sfumato-build-ui", daemon=True).start()
    return future


def ui_server(app: FastAPI, on_started: Callable[[], None] | None = None, **config: Any) -> Any:
    """uvicorn's server for ``app`` (built by ``app.server.ui_app``; ``config``: ``uvicorn.Config``'s arguments)
    that calls ``on_started`` once it listens, and ends the page's event streams as it starts to stop, so Ctrl-C
    does not wait on a browser tab."""
    import uvicorn

    deferred: DeferredUi = app.state.sfumato_ui

    class UiServer(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and on_started is not None:
                on_started()

        async def shutdown(self, sockets: Any = None) -> None:
            deferred.end_streams()
            await super().shutdown(sockets)

    return UiServer(uvicorn.Config(app, **config))
