"""Issue 18, fast by default: start-up imports no model library, the device is decided on first use, and the CPU's
default precision follows its bf16 features (with a float32 VAE)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from modules.runtime.devices import (
    DETECTING,
    DeviceRuntime,
    DeviceUnavailableError,
    Hardware,
    choose_dtype,
    cpu_auto_dtype,
    cpu_flags,
    cpu_native_bf16,
    dtype_for,
    select_device,
)

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "diffusers", "transformers", "spandrel", "accelerate", "safetensors")


# -- start-up imports ---------------------------------------------------------------------------------------------
def test_serving_imports_no_model_library(tmp_path):
    """What launch.py runs before the server answers (flags -> config -> services -> API app and UI) must not
    import torch & co.: their import alone takes seconds."""
    script = textwrap.dedent(f"""
        import json, sys
        import launch
        import app.server, app.ui, app.api, modules.runtime.services
        args = launch.parse_args(["--skip-install", "--data-dir", {str(tmp_path / 'data')!r},
                                  "--outdir", {str(tmp_path / 'out')!r}])
        config = launch.with_default_model(launch.build_config(args))
        services = modules.runtime.services.build_services(config)
        app.api.create_api(services, app.server.api_context(services))
        api_only = sorted(name for name in {HEAVY!r} if name in sys.modules)
        app.server.build_app(services)
        print(json.dumps({{"api": api_only, "ui": sorted(name for name in {HEAVY!r} if name in sys.modules),
                          "report": services.device_report}}))
    """)
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                               timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1",
                                                     GRADIO_ANALYTICS_ENABLED="False"))
    assert completed.returncode == 0, completed.stderr
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert seen["api"] == [] and seen["ui"] == []
    assert seen["report"] == [DETECTING]


def test_the_web_uis_server_is_ready_to_answer_before_gradio_is_imported(tmp_path):
    """The UI's server app (access rules, API routes, starting page) is built without Gradio: its import, the
    longest part of start-up, happens in the background once the port answers (see app.starting)."""
    script = textwrap.dedent(f"""
        import json, sys
        import launch
        import app.server, modules.runtime.services
        args = launch.parse_args(["--skip-install", "--api", "--data-dir", {str(tmp_path / 'data')!r},
                                  "--outdir", {str(tmp_path / 'out')!r}])
        config = launch.with_default_model(launch.build_config(args))
        services = modules.runtime.services.build_services(config)
        context = app.server.ui_context(services)
        ui = app.server.ui_app(services, config, context, app.server.ui_policy(context))
        paths = ui.openapi()["paths"]
        print(json.dumps({{"gradio": "gradio" in sys.modules, "txt2img": "/sdapi/v1/txt2img" in paths}}))
    """)
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                               timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"))
    assert completed.returncode == 0, completed.stderr
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert seen == {"gradio": False, "txt2img": True}


# -- CPU features -> precision ------------------------------------------------------------------------------------
SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
COOPER_LAKE = frozenset({"avx2", "avx512f", "avx512_bf16"})
SKYLAKE_X = frozenset({"avx2", "avx512f", "avx512bw"})
ZEN_3 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize(("flags", "expected"), [
    (SAPPHIRE_RAPIDS, "bfloat16"), (COOPER_LAKE, "bfloat16"), (frozenset({"amx_bf16"}), "bfloat16"),
    (SKYLAKE_X, "float32"), (ZEN_3, "float32"), (frozenset(), "float32"),
])
def test_cpu_default_dtype_follows_native_bf16(flags, expected):
    assert cpu_auto_dtype(flags) == expected
    assert cpu_native_bf16(flags) == (expected == "bfloat16")


def test_cpu_flags_come_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16", "amx_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()  # macOS, Windows: no cpuinfo -> fp32 unless told


@pytest.mark.parametrize(("precision", "no_half", "expected"), [
    ("auto", False, "bfloat16"), ("full", False, "float32"), ("auto", True, "float32"),
    ("half", False, "float32"), ("autocast", False, "float32"), ("bf16", False, "bfloat16"),
])
def test_precision_flag_overrides_the_cpu_default(precision, no_half, expected):
    cpu = select_device("cpu", Hardware(cpu_flags=SAPPHIRE_RAPIDS))
    assert cpu.native_bf16
    assert str(choose_dtype(cpu, precision, no_half)).removeprefix("torch.") == expected
    plain = select_device("cpu", Hardware(cpu_flags=ZEN_3))
    assert str(choose_dtype(plain, precision, no_half)).removeprefix("torch.") == (
        "bfloat16" if precision == "bf16" and not no_half else "float32")
    assert dtype_for("cuda", "auto", bf16_ok=True, cpu_auto="bfloat16") == "float16"  # GPUs keep fp16


# -- the device decided on first use -------------------------------------------------------------------------------
def test_runtime_decides_once_on_first_use():
    probes = []

    def probe() -> Hardware:
        probes.append(1)
        return Hardware(cpu_name="Xeon", cpu_flags=SAPPHIRE_RAPIDS)

    runtime = DeviceRuntime(probe=probe)
    assert runtime.report() == [DETECTING] and runtime.peek() is None and probes == []
    assert runtime.device_name() == "cpu"
    choice = runtime.get()
    assert probes == [1] and runtime.peek() is choice
    assert choice.dtype_name == "bfloat16"
    assert any("float32" in line and "VAE" in line for line in runtime.report())
    assert any(line.startswith("CPU threads: ") for line in runtime.report())


def test_runtime_keeps_a_missing_device_as_every_callers_error():
    runtime = DeviceRuntime("cuda:1", probe=lambda: Hardware())
    for _ in range(2):
        with pytest.raises(DeviceUnavailableError, match="only the CPU"):
            runtime.get()
    assert "unavailable" in runtime.report()[0]
    with pytest.raises(ValueError):
        DeviceRuntime("cuda:x")  # a typo fails at start-up, without torch
    with pytest.raises(ValueError):
        DeviceRuntime(precision="fp8")


def test_runtime_detects_in_the_background():
    runtime = DeviceRuntime("cpu", "full", probe=lambda: Hardware(cpu_flags=SAPPHIRE_RAPIDS))
    runtime.detect_in_background()
    runtime.detect_in_background()  # once
    assert runtime.get().dtype_name == "float32"
    assert "--precision full" in runtime.report()[1]


def test_system_report_says_detecting_then_the_choice(tmp_path):
    from fastapi.testclient import TestClient

    from app.api import create_api
    from tests.helpers import studio_services

    services = studio_services(tmp_path, precision="full")
    client = TestClient(create_api(services), base_url="http://localhost")
    assert client.get("/api/v1/system").json()["device_report"] == [DETECTING]
    services.runtime.get()
    report = client.get("/api/v1/system").json()
    assert report["device"] == "cpu"
    assert "precision: float32 (--precision full)" in report["device_report"]


# -- bf16 pipeline, float32 VAE ----------------------------------------------------------------------------------
def test_bf16_pipeline_keeps_a_float32_vae_and_runs_txt2img_and_img2img():
    import torch
    from diffusers import AutoPipelineForImage2Image

    from modules.runtime.memory import MemoryOptions, apply_memory_options
    from tools.tiny_model import build_tiny_pipeline

    reference = build_tiny_pipeline("sd1")
    reference.set_progress_bar_config(disable=True)
    pipe = build_tiny_pipeline("sd1")
    pipe.set_progress_bar_config(disable=True)
    report = apply_memory_options(pipe, MemoryOptions(), "cpu", torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.vae.dtype == torch.float32
    assert any(line.startswith("VAE: float32") for line in report)

    def run(p):
        return np.asarray(p("a red circle", num_inference_steps=4, height=64, width=64,
                            generator=torch.Generator().manual_seed(1)).images[0], dtype=np.float32)

    bf16, fp32 = run(pipe), run(reference)
    assert np.isfinite(bf16).all() and bf16.std() > 1  # an image, not NaN/black
    assert np.abs(bf16 - fp32).mean() < 8  # bf16 rounding, not another picture (0-255 scale)
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    out = img2img("a red circle", image=pipe("x", num_inference_steps=2, height=64, width=64).images[0],
                  strength=0.5, num_inference_steps=4)
    assert out.images[0].size == (64, 64)


def test_small_models_stay_float32_unless_bf16_is_asked_for(tmp_path):
    from modules.runtime.devices import SMALL_MODEL_BYTES, model_dtype, weights_bytes

    big, small = 2 * 1024**3, SMALL_MODEL_BYTES // 10
    assert model_dtype("bfloat16", True, big) == "bfloat16"  # SD 1.5 and up: bf16 pays
    assert model_dtype("bfloat16", True, small) == "float32"  # tiny layers: bf16 is slower
    assert model_dtype("bfloat16", False, small) == "bfloat16"  # --precision bf16 is obeyed
    assert model_dtype("float32", False, big) == "float32"
    assert model_dtype("bfloat16", True, None) == "bfloat16"  # unknown size: the features decide
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"0" * 1000)
    (folder / "unet" / "config.json").write_text("{}")
    assert weights_bytes(folder) == 1000
    assert weights_bytes(tmp_path / "absent.safetensors") is None
    embedded = ROOT / "models" / "Stable-diffusion" / "sfumato-shapes"
    choice = DeviceRuntime("cpu", probe=lambda: Hardware(cpu_flags=SAPPHIRE_RAPIDS)).get()
    assert choice.cpu_auto_bf16 and str(choice.dtype_for_model(embedded)) == "torch.float32"
