"""Gzip for the text the server sends: the studio's page and its config are about 1 MB of HTML and JSON (some
80 KB compressed), which a visitor through a ``--share`` link or a remote ``--listen`` otherwise downloads whole.

Starlette's ``GZipMiddleware`` already leaves event streams (Gradio's progress), images, audio, video and partial
(range) answers alone, and anything a route encoded itself; model files and other binary downloads are added to
its exclusions here, since compressing them costs CPU and gains nothing. Only clients that send
``Accept-Encoding: gzip`` get it.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware

MINIMUM_BYTES = 4096  # smaller answers (most JSON replies) are not worth the header and the CPU
LEVEL = 5  # about the size of level 9 on HTML and JSON, at a fraction of the time
EXCLUDED = (*DEFAULT_EXCLUDED_CONTENT_TYPES, "application/octet-stream", "application/x-tar")


def compression_middleware() -> Middleware:
    """The middleware entry for an app built with its middleware list."""
    return Middleware(GZipMiddleware, **compression_options())


def compression_options() -> dict[str, object]:
    """``GZipMiddleware``'s keyword arguments (also for ``app.add_middleware``)."""
    return {"minimum_size": MINIMUM_BYTES, "compresslevel": LEVEL, "exclude_content_types": EXCLUDED}
