"""Small helpers several test modules share (not tests themselves)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from modules.image.request import GenerationRequest


def pixels(image: Image.Image) -> np.ndarray:
    """An image as signed integers, so differences between two images do not wrap around."""
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def txt2img(**fields) -> GenerationRequest:
    """A quick 64x64 request on the tiny models; ``fields`` override the defaults."""
    base = dict(prompt="a red circle on a blue background", steps=4, width=64, height=64, seed=1234)
    base.update(fields)
    return GenerationRequest(**base)


def image_queue(runner, limits=None, **options):
    """A job queue whose only kind is the image kind, run by ``runner`` (a test's stand-in for the generation
    function when the test's subject is the queue, not the model)."""
    from modules.image.kind import image_kind
    from modules.image.request import Limits, validate_request
    from modules.jobs.kinds import KindRegistry
    from modules.jobs.queue import JobQueue

    limits = limits or Limits()
    return JobQueue(KindRegistry([image_kind(runner, lambda request: validate_request(request, limits))]), **options)


def studio_services(tmp_path, runner=None, **config):
    """Real services over empty folders in ``tmp_path`` (no model is loaded until a job runs); with ``runner``,
    their queue runs image jobs with it instead of the model, for tests whose subject is not the model (access
    rules, the Queue tab)."""
    import dataclasses

    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    folders = {"models_dir": tmp_path / "models", "data_dir": tmp_path / "data", "outdir": tmp_path / "outputs"}
    services = build_services(AppConfig(**{**folders, **config}))
    if runner is not None:
        services = dataclasses.replace(services, queue=image_queue(runner))
    return services



@contextmanager
def running_services(root: Path, model_store: Path, **config) -> Iterator:
    """Started real services over a copy of ``model_store`` (the session's shared model folder, which tests must
    not change) in ``root``; stopped when the block ends."""
    shutil.copytree(model_store, root / "models")
    with _started(studio_services(root, **config)) as services:
        yield services


@contextmanager
def services_with_committed(root: Path, *folders: Path) -> Iterator:
    """Started real services whose models folder holds copies of committed model folders (each under the same
    ``<kind>/<name>`` it has in the repository's ``models/``); stopped when the block ends."""
    repository_models = Path(__file__).resolve().parent.parent / "models"
    for folder in folders:
        shutil.copytree(folder, root / "models" / folder.relative_to(repository_models))
    with _started(studio_services(root)) as services:
        yield services


@contextmanager
def _started(services) -> Iterator:
    """``services`` started for the block and stopped after it, whatever happens in it."""
    services.start()
    try:
        yield services
    finally:
        services.stop()
