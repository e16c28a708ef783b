"""A free local port for a studio started by a test or a benchmark."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A free port below Linux's ephemeral range, so a concurrent bind to port 0 elsewhere cannot take it."""
    for _ in range(100):
        port = random.randint(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")
