"""``--compile`` (issue 18): the denoiser compiled with torch.compile, on the tiny SD 1.x model on this CPU.

This machine has a C++ compiler (g++), so Inductor really compiles here: the compiled studio's images are compared
with an uncompiled studio's, a LoRA job (run uncompiled by design) and a ControlNet job are checked on the compiled
UNet, a new image size recompiles, and the compiled code lands in the studio's data dir. A machine without a C++
compiler is shown by pointing Inductor at a compiler that does not exist, which is what such a machine looks like
to it: the job still succeeds, uncompiled, and the failure is said once. Compiling the tiny UNet takes tens of
seconds of CPU, so the tests that compile are marked slow. Nothing here needs a GPU (``bench/gpu_speed.py`` times
compile on one)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import pixels, txt2img

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 3  # of 255: compiled kernels sum in another order; three steps on the tiny model stay within this


def _services(root: Path, models: Path, **config):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    built = build_services(AppConfig(models_dir=models, outdir=root / "outputs", data_dir=root / "data",
                                     default_ckpt="tiny-sd1", device="cpu", **config))
    built.start()
    return built


def _studio_models(root: Path, tiny_model_store: Path, network_files: Path) -> Path:
    """The tiny models, the test LoRAs and a tiny ControlNet for tiny-sd1."""
    from tools.tiny_controlnet import save_tiny_controlnet
    from tools.tiny_model import build_tiny_pipeline

    models = root / "models"
    shutil.copytree(tiny_model_store, models)
    shutil.copytree(network_files / "Lora", models / "Lora")
    save_tiny_controlnet(build_tiny_pipeline("sd1", seed=0), models / "ControlNet" / "tiny-cn", "diffusers", seed=1)
    return models


def run(services, **fields):
    return services.run(txt2img(steps=3, **fields), timeout=1800).images[0].image


def differs(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def model_report(services) -> list[str]:
    return next(iter(services.engine.pipelines.memory_report().values()))


# -- the option and its report (no compiling) -----------------------------------------------------------------------
def test_launch_parses_compile_and_settings_and_the_system_route_show_it(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    import launch
    from app.api import create_api

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert launch.build_config(launch.parse_args([])).compile is False
    assert launch.build_config(launch.parse_args(["--compile"])).compile is True
    studio = _services(tmp_path, tmp_path / "models", compile=True)
    try:
        lines = [line for line in studio.device_report if line.startswith("compile:")]
        assert len(lines) == 1 and "mode default" in lines[0] and "jobs with LoRAs run uncompiled" in lines[0]
        assert str(tmp_path / "data" / "compile-cache") in lines[0]
        client = TestClient(create_api(studio), base_url="http://localhost")
        assert lines[0] in client.get("/api/v1/system").json()["device_report"]
    finally:
        studio.stop()
    plain = _services(tmp_path / "plain", tmp_path / "models")
    try:
        assert not any(line.startswith("compile:") for line in plain.device_report)
    finally:
        plain.stop()


def test_the_gpu_bench_says_it_needs_cuda_on_this_machine(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the bench would run")
    completed = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_speed.py"), "--out", str(tmp_path)],
                               capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert completed.returncode != 0
    assert "measures CUDA GPUs and this machine has none" in completed.stderr
    assert not any(tmp_path.iterdir())  # no half-written table


# -- compiling on this CPU ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def studios(tmp_path_factory, tiny_model_store, network_files, one_thread):
    """A compiled and an uncompiled studio over the same models."""
    import torch

    torch._dynamo.reset()
    root = tmp_path_factory.mktemp("compile-studio")
    models = _studio_models(root, tiny_model_store, network_files)
    patch = pytest.MonkeyPatch()
    patch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    compiled = _services(root / "compiled", models, compile=True)
    plain = _services(root / "plain", models)
    yield compiled, plain
    compiled.stop()
    plain.stop()
    patch.undo()


@pytest.mark.slow
def test_compiled_images_match_uncompiled_ones_and_the_compiled_code_is_kept_in_the_data_dir(studios):
    import torch
    from torch._dynamo.utils import counters

    compiled, plain = studios
    graphs = counters["stats"]["unique_graphs"]
    image = run(compiled)
    assert counters["stats"]["unique_graphs"] > graphs  # Dynamo compiled the UNet: not the fallback
    assert differs(image, run(plain)) <= TOLERANCE
    report = model_report(compiled)
    assert "compile: UNet compiled on first use (mode default, channels_last)" in report
    assert not any("failed" in line for line in report)
    cache = compiled.config.compile_cache_dir
    assert cache.is_dir() and any(path.is_file() for path in cache.rglob("*"))
    with torch.compiler.set_stance("fail_on_recompile"):  # the same size again: the compiled code, no recompile
        assert differs(run(compiled), image) == 0


@pytest.mark.slow
def test_a_lora_applies_on_a_compiled_unet_and_the_next_job_needs_no_recompile(studios):
    import torch

    compiled, plain = studios
    before = run(compiled)
    with_lora = run(compiled, prompt="a red circle on a blue background <lora:peftstyle:1>")
    assert differs(with_lora, before) > 10  # the LoRA changed the picture
    assert differs(with_lora, run(plain, prompt="a red circle on a blue background <lora:peftstyle:1>")) <= TOLERANCE
    with torch.compiler.set_stance("fail_on_recompile"):  # the LoRA left nothing that would need a recompile
        assert differs(run(compiled), before) == 0


@pytest.mark.slow
def test_a_new_size_and_a_controlnet_recompile_without_failing(studios):
    from modules.controlnet.units import ControlNetUnit

    compiled, plain = studios
    wide = dict(width=96, height=64)
    assert differs(run(compiled, **wide), run(plain, **wide)) <= TOLERANCE
    scribble = Image.new("RGB", (64, 64), "black")
    scribble.paste((255, 255, 255), (16, 16, 48, 48))
    unit = (ControlNetUnit(model="tiny-cn", image=scribble),)
    controlled = run(compiled, controlnet=unit)
    assert differs(controlled, run(plain, controlnet=unit)) <= TOLERANCE
    assert differs(controlled, run(compiled)) > 0  # the ControlNet steered the compiled UNet
    assert not any("failed" in line for line in model_report(compiled))


@pytest.mark.slow
def test_unloading_a_compiled_model_lets_its_weights_go(studios):
    """Dynamo's caches must not keep an unloaded checkpoint's UNet alive (switching models would then leak)."""
    import gc
    import weakref

    compiled, _plain = studios
    run(compiled)
    unet = weakref.ref(compiled.engine.pipelines.most_recent().base.unet)
    compiled.engine.pipelines.unload_all()
    gc.collect()
    assert unet() is None


@pytest.mark.slow
def test_without_a_working_compiler_the_job_runs_uncompiled_and_says_so_once(tmp_path, tiny_model_store, one_thread,
                                                                             caplog, monkeypatch):
    """Inductor failing the way it fails on a machine without g++ (its compile step raises), with a fresh compile
    cache so that nothing compiled earlier can stand in. (Pointing ``cpp.cxx`` at a missing compiler did not make
    torch 2.14 fail here.)"""
    import torch
    from torch._inductor import compile_fx

    torch._dynamo.reset()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "empty-cache"))
    studio = _services(tmp_path / "compiled", tiny_model_store, compile=True)
    try:
        def no_compiler(*_args, **_kwargs):
            raise RuntimeError("Failed to find C++ compiler. Please specify via CXX environment variable.")

        monkeypatch.setattr(compile_fx, "compile_fx", no_compiler)
        with caplog.at_level(logging.WARNING, logger="modules.models.speedups"):
            first = run(studio)
            second = run(studio)
        warnings = [record.getMessage() for record in caplog.records if record.name == "modules.models.speedups"]
        assert len(warnings) == 1 and "compile: failed, running uncompiled from now on" in warnings[0]
        assert sum("compile: failed" in line for line in model_report(studio)) == 1
    finally:
        studio.stop()
        torch._dynamo.reset()
    assert differs(first, second) == 0
    plain = _services(tmp_path / "plain", tiny_model_store)
    try:
        assert differs(first, run(plain)) <= TOLERANCE  # channels_last, uncompiled: the same picture
    finally:
        plain.stop()
