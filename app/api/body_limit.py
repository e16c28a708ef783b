"""A ceiling on request bodies, for every route of the server (the API's, the web UI's, Gradio's uploads).

Without one, a client can make the studio buffer any amount: a JSON body is read whole before it is parsed, and a
50 MB body of nothing was accepted. The middleware is pure ASGI and never buffers: it refuses at once when
``Content-Length`` is over the limit, and otherwise counts the bytes as they arrive (a chunked body has no length),
stopping the read at the first byte over. Either way the client gets 413 with a message saying the limit, in the
error shape of the dialect its path belongs to, whatever the route would have answered.

The default, 64 MiB, fits what the studio accepts at its limits: a base64 PNG of the largest image a request may
give (``--max-pixels`` 4 MP, RGBA, incompressible: 16 MiB raw, 21 MiB as base64) together with its mask and a
second image, with room to spare; a multipart upload carries the same files without base64's third more.
Batch uploads of many large images should use a folder on the studio's machine (``input_dir``) or a higher
``--max-body-mb``.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` at the first byte over the limit. An ``HTTPException``, so FastAPI's body reading
    lets it through instead of calling it a malformed body; the middleware answers 413 whatever catches it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit))


def too_large_message(limit: int) -> str:
    return (f"the request body is larger than this studio's limit of {limit:,} bytes ({limit / 2**20:g} MiB); "
            "send smaller or fewer images, or start the studio with a higher --max-body-mb")


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes`` on every HTTP route (WebSocket messages are not bodies; lifespan passes)."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        state = {"received": 0, "exceeded": False, "started": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["exceeded"] = True
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def guarded_send(message: Message) -> None:
            if state["exceeded"]:  # whatever the route made of the interrupted read, the answer is the 413
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await self._refuse(scope, send)
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["started"]:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        from starlette.responses import JSONResponse

        from app.api.access import dialect_error_body

        path = scope.get("path", "")
        body = dialect_error_body(path, 413, too_large_message(self.max_bytes))
        response = JSONResponse(body, status_code=413, headers={"Connection": "close"})

        async def no_body() -> Message:  # the unread rest of the body stays unread: the connection closes
            return {"type": "http.disconnect"}

        await response(scope, no_body, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length; a malformed one counts as too large (a server must not guess at framing)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return 2**63
            return length if length >= 0 else 2**63
    return None
