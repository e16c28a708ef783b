"""A running studio behind real HTTP for the API dialect tests: services on the tiny models, served by uvicorn.

One per test module (loading the model once keeps them quick); ``preview_interval=1`` so a preview exists from
the first step, and webhooks retry fast so a retry test does not wait seconds.
"""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from tests.api_server import RunningServer, serve_app


@dataclass
class Studio:
    services: Any
    server: RunningServer

    @property
    def url(self) -> str:
        return self.server.url


@contextmanager
def running_studio(root: Path, tiny_model_store: Path) -> Iterator[Studio]:
    from app.api import create_api
    from app.api.webhooks import install_webhooks
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    shutil.copytree(tiny_model_store, root / "models")
    config = AppConfig(models_dir=root / "models", outdir=root / "outputs", data_dir=root / "data",
                       default_ckpt="tiny-sd1", preview_interval=1)
    services = build_services(config)
    install_webhooks(services.queue, backoff=0.1, timeout=5.0)
    services.start()
    try:
        with serve_app(create_api(services)) as server:
            yield Studio(services, server)
    finally:
        services.stop()


def picture(size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A blue square with a red disc: enough structure that a changed pixel shows."""
    image = Image.new("RGB", size, (40, 90, 200))
    ImageDraw.Draw(image).ellipse((8, 8, size[0] // 2 + 8, size[1] // 2 + 8), fill=(230, 20, 20))
    return image


def file_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def b64(image: Image.Image, fmt: str = "PNG") -> str:
    return base64.b64encode(file_bytes(image, fmt)).decode("ascii")




def load(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
