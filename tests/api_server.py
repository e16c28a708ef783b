"""Serve an ASGI app on a free localhost port in a background thread, for tests that drive the API as a client
would (a real socket, real HTTP, unmodified client libraries), without a subprocess.

    with serve_app(create_api(services)) as server:
        requests.get(server.url + "/sdapi/v1/samplers")
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn


@dataclass(frozen=True)
class RunningServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def serve_app(app: Any, host: str = "127.0.0.1", start_timeout: float = 30.0,
              lifespan: str = "off") -> Iterator[RunningServer]:
    """Run ``app`` until the block ends. The socket is bound here first, so the port is known and cannot be taken
    by another process between choosing it and listening on it. ``lifespan="on"`` for an app whose lifespan does
    work (the web UI's server builds the studio's page in it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"test-api-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test API server on port {port} did not start")
            time.sleep(0.02)
        yield RunningServer(host, port)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
