"""Wiring: from an ``AppConfig`` to the running services every front end shares.

launch.py (the composition root) and the tests call ``build_services``; nothing here starts a thread or
loads a model until ``Services.start`` and the first job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.runtime.config import AppConfig

if TYPE_CHECKING:
    from modules.extensions.manager import ExtensionManager
    from modules.image.generation import Engine
    from modules.jobs.artifacts import JobResult
    from modules.jobs.control import JobControl
    from modules.jobs.queue import JobQueue
    from modules.runtime.devices import DeviceRuntime
    from modules.runtime.outputs import OutputStore
    from modules.runtime.settings import SettingsStore


@dataclass
class Services:
    config: AppConfig
    engine: Engine
    queue: JobQueue
    settings: SettingsStore
    extensions: ExtensionManager
    runtime: DeviceRuntime

    @property
    def device_report(self) -> list[str]:
        """Device, precision and threads for Settings and ``/api/v1/system``; "detecting…" until decided (never
        waits for torch)."""
        from modules.models.quantization import report_line
        from modules.models.speedups import speed_report

        quantized = [report_line(self.config.quantize)] if self.config.quantize != "none" else []
        return [*self.runtime.report(), *quantized, *speed_report(speed_options(self.config))]

    def start(self) -> None:
        """Clean what a killed run left half written (a trained model's temporary file in models/ too), then start
        the worker (which first takes back the jobs the store says were queued or running)."""
        from modules.runtime.files import clean_leftovers

        clean_leftovers((self.config.outdir, self.config.data_dir, self.config.models_dir))
        self.queue.start()

    def stop(self) -> None:
        self.queue.stop()

    def run(self, request: Any, timeout: float | None = None) -> JobResult:
        """Submit and wait: the convenience path for scripts and tests, through the same queue as everyone."""
        return self.queue.wait(self.queue.submit(request), timeout)

    def default_model(self) -> str | None:
        """The checkpoint a request that names none runs on: the one chosen in Settings (the only place a default
        is stored; A1111's ``POST /sdapi/v1/options`` writes there too), else ``--ckpt``, else the first installed;
        its title, or None when there is no checkpoint at all (the job then says where to put one)."""
        from modules.models.registry import UnknownModelError

        for wanted in (self.settings.get("sd_model_checkpoint"), self.config.default_ckpt):
            if wanted:
                try:
                    return self.engine.registry.find(wanted).title
                except UnknownModelError:
                    continue  # a saved default whose file is gone: fall back rather than fail every request
        models = self.engine.registry.list()
        return models[0].title if models else None


def build_services(config: AppConfig) -> Services:
    from modules.audio.engine import AudioModels
    from modules.audio.kind import AudioRunner, audio_kind
    from modules.audio.registry import AudioModelRegistry
    from modules.errors import RequestError
    from modules.extensions.manager import ExtensionManager, engine_catalog
    from modules.image.batching import batch_key, generate_batch
    from modules.image.checks import check_request
    from modules.image.flow import with_model_defaults
    from modules.image.generation import Engine, generate
    from modules.image.kind import image_kind
    from modules.image.request import GenerationRequest
    from modules.image.results import GenerationResult
    from modules.image.styles import StyleStore
    from modules.interrogate.engine import InterrogateModels
    from modules.interrogate.folders import InterrogatorFolders
    from modules.interrogate.kind import InterrogateRunner, interrogate_kind
    from modules.jobs.kinds import KindRegistry
    from modules.jobs.queue import JobQueue
    from modules.jobs.store import JobStore
    from modules.models.checkpoints import CheckpointLoadError, load_pipeline
    from modules.models.families import denoiser
    from modules.models.pipelines import PipelineManager, free_memory_on
    from modules.models.quantization import has_bitsandbytes, unavailable_reason, weights_report
    from modules.models.registry import ModelRegistry
    from modules.models.vae import load_vae
    from modules.runtime.config import ROOT
    from modules.runtime.devices import DeviceRuntime
    from modules.runtime.memory import MemoryOptions, apply_memory_options
    from modules.runtime.outputs import OutputStore
    from modules.runtime.settings import SettingsStore
    from modules.upscaling import UpscalerModels, UpscalerRegistry, default_tile_options
    from modules.upscaling.kind import FolderPolicy, UpscaleRunner, upscale_kind
    from modules.video.kind import VideoRunner, video_kind
    from modules.video.pipelines import VideoPipelines
    from modules.video.registry import VideoModelRegistry
    from modules.video.request import VideoLimits

    # Device, dtype and threads are decided on first use (importing torch takes seconds; start-up must not wait).
    runtime = DeviceRuntime(config.device, config.precision, config.no_half, config.threads)
    memory = MemoryOptions(
        attention_slicing=config.attention_slicing,
        vae_slicing=config.vae_slicing,
        vae_tiling=config.vae_tiling,
        model_cpu_offload=config.medvram,
        sequential_cpu_offload=config.lowvram,
    )
    registry = ModelRegistry(config.models_dir, list(config.ckpt_dirs), cache_file=config.hash_cache_file)

    def load_checkpoint(info: Any) -> Any:
        choice = runtime.get()
        problem = unavailable_reason(config.quantize, choice.device.type, has_bitsandbytes())
        if problem:  # launch.py refuses this at start-up; services built another way refuse each load
            raise CheckpointLoadError(f"--quantize {config.quantize}: {problem}")
        return load_pipeline(info, torch_dtype=choice.dtype_for_model(info.path), cache_dir=config.config_cache_dir,
                             base_folders=[c.path for c in registry.list() if c.kind == "diffusers"],
                             quantize=config.quantize)

    def prepare(pipe: Any) -> list[str]:
        """On the device with the memory options, then compiled with --compile; what was done, for Settings."""
        from modules.models.speedups import apply_speedups

        report = [*apply_memory_options(pipe, memory, runtime.get().device, denoiser(pipe).dtype),
                  *weights_report(pipe)]
        apply_speedups(pipe, speed_options(config), report)
        return report

    pipelines = PipelineManager(
        loader=load_checkpoint,
        prepare=prepare,
        max_loaded=config.max_loaded_models,
        free_memory=lambda: free_memory_on(runtime.get().device),
        vae_loader=lambda info, family, scaling: load_vae(
            info, family=family, scaling_factor=scaling, cache_dir=config.config_cache_dir
        ),
    )
    settings = SettingsStore(config.settings_file)
    upscalers = UpscalerRegistry(config.models_dir)
    engine = Engine(
        registry=registry,
        upscalers=upscalers,
        upscaler_models=UpscalerModels(device=runtime.device_name),
        pipelines=pipelines,
        styles=StyleStore(config.styles_file),
        store=OutputStore(config.outdir),
        limits=config.limits,
        device_source=runtime.device_name,
        version=_version(),
    )
    extensions = ExtensionManager(builtin_dir=ROOT / "extensions", user_dir=config.extensions_dir,
                                  state_file=config.data_dir / "extensions.json", data_dir=config.data_dir,
                                  catalog=engine_catalog(engine))
    extensions.load()  # runs extension code: here, in the composition root's call, never at import

    def run_image(request: GenerationRequest, control: JobControl) -> GenerationResult:
        return extensions.run_job(request, control, lambda cell, cell_control: generate(cell, engine, cell_control))

    def run_images(requests: list[GenerationRequest], controls: list[JobControl]) -> list[Any]:
        """Compatible image jobs as one batch (``modules.image.batching``), each saving under its own job."""
        def scope(control: JobControl) -> Any:
            return engine.store.recording(output_manifest(queue, control))

        return extensions.run_jobs(
            requests, controls, lambda cell, cell_control: generate(cell, engine, cell_control),
            lambda cells, observed: generate_batch(cells, engine, observed, job_scope=lambda i: scope(observed[i])),
            job_scope=scope)

    def family_of(model: str | None) -> str | None:
        try:
            return engine.resolve_model(model).family
        except RequestError:
            return None

    kinds = KindRegistry()
    queue = JobQueue(kinds, preview_interval=config.preview_interval, store=JobStore(config.jobs_db),
                     max_batch=config.batch_images, gather_window=config.batch_window)
    services = Services(config=config, engine=engine, queue=queue, settings=settings, extensions=extensions,
                        runtime=runtime)
    kinds.register(image_kind(recording_outputs(run_image, queue, engine.store),
                              lambda request: check_request(request, engine, extensions),
                              default_model=services.default_model,
                              default_safety=lambda: settings.get("safety"),
                              model_defaults=lambda request: with_model_defaults(request, engine),
                              run_batch=run_images,
                              batch_key=lambda request: batch_key(request, family_of)))
    upscale = upscale_kind(UpscaleRunner(
        upscalers, engine.upscaler_models, engine.store, config.limits,
        tile_defaults=lambda: default_tile_options(runtime.get().device.type, runtime.get().device.total_memory),
        folders=FolderPolicy(roots=(config.outdir,) if config.listen or config.share else None),
    ))
    kinds.register(dataclasses.replace(upscale, run=recording_outputs(upscale.run, queue, engine.store)))
    kinds.register(interrogate_kind(InterrogateRunner(
        InterrogatorFolders(config.models_dir),
        InterrogateModels(device=runtime.device_name, dtype=lambda: runtime.get().dtype),
    )))
    video = video_kind(VideoRunner(
        VideoModelRegistry(config.models_dir), registry,
        VideoPipelines(pipelines, prepare=lambda pipe: apply_memory_options(pipe, memory, runtime.get().device,
                                                                            denoiser(pipe).dtype),
                       dtype_for=lambda path: runtime.get().dtype_for_model(path)),
        engine.store, VideoLimits(max_steps=config.limits.max_steps, max_cfg=config.limits.max_cfg),
        default_checkpoint=services.default_model,
    ))
    kinds.register(dataclasses.replace(video, run=recording_outputs(video.run, queue, engine.store)))
    audio = audio_kind(AudioRunner(AudioModelRegistry(config.models_dir),
                                   AudioModels(device=runtime.device_name, dtype=lambda: runtime.get().dtype),
                                   engine.store, version=engine.version))
    kinds.register(dataclasses.replace(audio, run=recording_outputs(audio.run, queue, engine.store)))
    kinds.register(train_kind_for(config, engine, runtime, services.default_model))
    return services


def speed_options(config: AppConfig) -> Any:
    """``--compile`` as ``modules.models.speedups`` takes it."""
    from modules.models.speedups import SpeedOptions

    return SpeedOptions(compile=config.compile, cache_dir=config.compile_cache_dir)


def train_kind_for(config: AppConfig, engine: Engine, runtime: DeviceRuntime,
                   default_model: Callable[[], str | None]) -> Any:
    """The train kind: a fresh float32 copy of the base model per run; class images made by ``generate``, the
    same function every image job runs."""
    from modules.image.generation import generate
    from modules.models.checkpoints import load_pipeline
    from modules.training.kind import TrainRunner, train_kind
    from modules.upscaling.kind import FolderPolicy

    def load_base(info: Any) -> Any:
        import torch

        return load_pipeline(info, torch_dtype=torch.float32, cache_dir=config.config_cache_dir)

    return train_kind(TrainRunner(
        registry=engine.registry, models_dir=config.models_dir, training_root=config.data_dir / "training",
        load_base=load_base, default_model=default_model,
        generate=lambda request, control: [item.image for item in generate(request, engine, control).images],
        release_generation=engine.pipelines.unload_all, device=runtime.device_name,
        folders=FolderPolicy(roots=(config.outdir, config.data_dir) if config.listen or config.share else None),
    ))


OUTPUT_MANIFEST = "outputs.jsonl"  # in the job's folder of the job store: the files its current run wrote


def recording_outputs(run: Callable[[Any, JobControl], JobResult], queue: JobQueue,
                      outputs: OutputStore) -> Callable[[Any, JobControl], JobResult]:
    """A kind's runner whose saved files are recorded in the running job's manifest, so a rerun of the job (after
    a kill, or a shutdown that cut it short) first removes what its unrecorded earlier attempt wrote instead of
    leaving images no job owns (``OutputStore.recording``)."""

    def run_recorded(request: Any, control: JobControl) -> JobResult:
        with outputs.recording(output_manifest(queue, control)):
            return run(request, control)

    return run_recorded


def output_manifest(queue: JobQueue, control: JobControl) -> Path | None:
    """The manifest of the job ``control`` belongs to (each job has its own control), or None without a job
    store (nothing is rerun then)."""
    store = queue.store
    if store is None:
        return None
    # A control wrapped for one cell (extensions) or a batch member shares the job's flags: match on those.
    job = next((job for job in queue.jobs() if job.control.interrupted is control.interrupted), None)
    return store.job_dir(job.id) / OUTPUT_MANIFEST if job is not None else None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sfumato")
    except PackageNotFoundError:
        return "0.1.0"
