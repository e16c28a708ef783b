"""Wiring: from an ``AppConfig`` to the running services every front end shares.

launch.py (the composition root) and the tests call ``build_services``; nothing here starts a thread or
loads a model until ``Services.start`` and the first job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modules.config import AppConfig
from modules.generation import Engine, generate
from modules.jobs import JobQueue
from modules.request import GenerationRequest
from modules.results import GenerationResult


@dataclass
class Services:
    config: AppConfig
    engine: Engine
    queue: JobQueue
    settings: Any  # modules.settings.SettingsStore
    device_report: list[str]
    extensions: Any = None  # modules.extensions.ExtensionManager

    def start(self) -> None:
        self.queue.start()

    def stop(self) -> None:
        self.queue.stop()

    def run(self, request: GenerationRequest, timeout: float | None = None) -> GenerationResult:
        """Submit and wait: the convenience path for scripts and tests, through the same queue as everyone."""
        return self.queue.wait(self.queue.submit(request), timeout)


def build_services(config: AppConfig) -> Services:
    from modules.checkpoint_loading import load_pipeline
    from modules.config import ROOT
    from modules.devices import choose_dtype, detect_device
    from modules.extensions import ExtensionManager, engine_catalog
    from modules.job_store import JobStore
    from modules.memory import MemoryOptions, apply_memory_options
    from modules.model_registry import ModelRegistry
    from modules.pipeline_manager import PipelineManager
    from modules.settings import SettingsStore
    from modules.storage import OutputStore
    from modules.styles import StyleStore
    from modules.vae_loading import load_vae

    device = detect_device(config.device)
    dtype = choose_dtype(device, config.precision, config.no_half)
    memory = MemoryOptions(
        attention_slicing=config.attention_slicing,
        vae_slicing=config.vae_slicing,
        vae_tiling=config.vae_tiling,
        model_cpu_offload=config.medvram,
        sequential_cpu_offload=config.lowvram,
    )
    registry = ModelRegistry(config.models_dir, list(config.ckpt_dirs), cache_file=config.hash_cache_file)
    pipelines = PipelineManager(
        loader=lambda info: load_pipeline(info, torch_dtype=dtype, cache_dir=config.config_cache_dir),
        prepare=lambda pipe: apply_memory_options(pipe, memory, device, dtype),
        max_loaded=config.max_loaded_models,
        vae_loader=lambda info, family, scaling: load_vae(
            info, family=family, scaling_factor=scaling, cache_dir=config.config_cache_dir
        ),
    )
    settings = SettingsStore(config.settings_file)
    engine = Engine(
        registry=registry,
        pipelines=pipelines,
        styles=StyleStore(config.styles_file),
        store=OutputStore(config.outdir),
        limits=config.limits,
        device=device.torch_device,
        version=_version(),
        default_model=config.default_ckpt or settings.get("sd_model_checkpoint"),
    )
    extensions = ExtensionManager(builtin_dir=ROOT / "extensions", user_dir=config.extensions_dir,
                                  state_file=config.data_dir / "extensions.json", data_dir=config.data_dir,
                                  catalog=engine_catalog(engine))
    extensions.load()  # runs extension code: here, in the composition root's call, never at import

    def run(request: GenerationRequest, control: Any) -> GenerationResult:
        return extensions.run_job(request, control, lambda cell, cell_control: generate(cell, engine, cell_control))

    queue = JobQueue(run, preview_interval=config.preview_interval, store=JobStore(config.jobs_db))
    report = [f"device: {device.name} ({device.type}), dtype {str(dtype).removeprefix('torch.')}"]
    return Services(config=config, engine=engine, queue=queue, settings=settings, device_report=report,
                    extensions=extensions)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sfumato")
    except PackageNotFoundError:
        return "0.1.0"
