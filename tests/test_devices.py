"""Device selection and dtype rules, checked on fake hardware so no GPU is needed."""

from __future__ import annotations

import pytest
import torch

from modules.runtime.devices import (
    Accelerator,
    DeviceUnavailableError,
    Hardware,
    choose_dtype,
    cpu_flags,
    cpu_native_bf16,
    detect_device,
    dtype_for,
    select_device,
)

GIB = 1024**3
A100 = Accelerator("NVIDIA A100", 40 * GIB, True)
T4 = Accelerator("Tesla T4", 16 * GIB, False)
CUDA_BOX = Hardware(cuda=(A100, T4), cpu_name="x86_64", cpu_memory=64 * GIB)
ROCM_BOX = Hardware(cuda=(Accelerator("AMD Radeon RX 7900 XTX", 24 * GIB, True),), hip_version="6.2")
MAC = Hardware(mps=Accelerator("Apple GPU (MPS)", 16 * GIB, True), cpu_name="arm")
XPU_BOX = Hardware(xpu=(Accelerator("Intel Arc A770", 16 * GIB, True),))
CPU_ONLY = Hardware(cpu_name="x86_64", cpu_memory=8 * GIB)


def test_detect_on_this_machine_is_cpu_with_the_dtype_its_features_allow():
    if torch.cuda.is_available():
        pytest.skip("this test describes the CPU-only machines the suite runs on")
    device = detect_device()
    assert device.type == "cpu" and device.torch_device == "cpu"
    assert device.native_bf16 == cpu_native_bf16(cpu_flags())
    assert choose_dtype(device) == (torch.bfloat16 if device.native_bf16 else torch.float32)
    assert choose_dtype(device, "full") == torch.float32
    assert detect_device("cpu") == device


def test_auto_picks_the_best_device():
    assert select_device(None, CUDA_BOX).torch_device == "cuda:0"
    assert select_device("auto", CUDA_BOX).name == "NVIDIA A100"
    assert select_device(None, ROCM_BOX).type == "rocm"
    assert select_device(None, ROCM_BOX).torch_device == "cuda:0"  # torch addresses ROCm GPUs as cuda
    assert select_device(None, XPU_BOX).torch_device == "xpu:0"
    assert select_device(None, MAC).torch_device == "mps"
    cpu = select_device(None, CPU_ONLY)
    assert (cpu.type, cpu.torch_device, cpu.total_memory, cpu.supports_fp16) == ("cpu", "cpu", 8 * GIB, False)


def test_preferences_are_honoured():
    second = select_device("cuda:1", CUDA_BOX)
    assert (second.torch_device, second.name, second.supports_bf16) == ("cuda:1", "Tesla T4", False)
    assert select_device("CUDA", CUDA_BOX).torch_device == "cuda:0"
    assert select_device("cpu", CUDA_BOX).type == "cpu"
    assert select_device("rocm", ROCM_BOX).type == "rocm"
    assert select_device("cuda", ROCM_BOX).type == "rocm"
    assert select_device("xpu:0", XPU_BOX).name == "Intel Arc A770"
    assert select_device("mps", MAC).type == "mps"


@pytest.mark.parametrize(
    ("preference", "hardware", "words"),
    [
        ("cuda", CPU_ONLY, "only the CPU"),
        ("cuda:2", CUDA_BOX, "only 2"),
        ("mps", CUDA_BOX, "2 CUDA GPU(s)"),
        ("xpu", MAC, "MPS"),
        ("rocm", CUDA_BOX, "CUDA, not ROCm"),
    ],
)
def test_unavailable_preference_is_a_clear_error(preference, hardware, words):
    with pytest.raises(DeviceUnavailableError, match=preference.split(":")[0]) as error:
        select_device(preference, hardware)
    assert words in str(error.value)


@pytest.mark.parametrize("preference", ["tpu", "cuda:x", "cuda:-1"])
def test_malformed_preference(preference):
    with pytest.raises(ValueError):
        select_device(preference, CUDA_BOX)


@pytest.mark.parametrize(
    ("device_type", "precision", "no_half", "bf16_ok", "expected"),
    [
        ("cuda", "auto", False, True, "float16"),
        ("rocm", "auto", False, False, "float16"),
        ("xpu", "auto", False, True, "float16"),
        ("mps", "auto", False, False, "float16"),
        ("cpu", "auto", False, True, "float32"),
        ("cuda", "half", False, False, "float16"),
        ("cuda", "autocast", False, False, "float16"),
        ("cpu", "half", False, True, "float32"),  # CPU half is slow or unsupported: fall back
        ("cuda", "full", False, True, "float32"),
        ("cuda", "auto", True, True, "float32"),  # --no-half
        ("cuda", "bf16", True, True, "float32"),  # --no-half wins over bf16 too
        ("cuda", "bf16", False, True, "bfloat16"),
        ("cuda", "bf16", False, False, "float32"),  # no bf16: the safe dtype, not float16
        ("cpu", "bf16", False, True, "bfloat16"),
        ("mps", "bf16", False, True, "bfloat16"),
    ],
)
def test_dtype_rules(device_type, precision, no_half, bf16_ok, expected):
    assert dtype_for(device_type, precision, no_half, bf16_ok) == expected


def test_unknown_precision():
    with pytest.raises(ValueError, match="auto, full, half, bf16, autocast"):
        dtype_for("cuda", "fp8")


def test_choose_dtype_uses_the_device_capabilities():
    assert choose_dtype(select_device("cuda:0", CUDA_BOX)) == torch.float16
    assert choose_dtype(select_device("cuda:0", CUDA_BOX), "bf16") == torch.bfloat16
    assert choose_dtype(select_device("cuda:1", CUDA_BOX), "bf16") == torch.float32
    assert choose_dtype(select_device("cuda:0", CUDA_BOX), "auto", no_half=True) == torch.float32
    assert choose_dtype(select_device("mps", MAC)) == torch.float16
    assert choose_dtype(select_device(None, CPU_ONLY), "half") == torch.float32
