"""Memory options change the pipeline as reported, never crash on the CPU, and leave generation working."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.runtime.devices import DeviceInfo
from modules.runtime.memory import MemoryOptions, apply_memory_options

CPU = DeviceInfo("cpu", "cpu", "x86_64", None, False, True)
GPU = DeviceInfo("cuda", "cuda:0", "NVIDIA A100", 40 * 1024**3, True, True)
SMALL_GPU = DeviceInfo("cuda", "cuda:1", "GTX 1050", 4 * 1024**3, True, False)
MAC = DeviceInfo("mps", "mps", "Apple GPU (MPS)", None, True, True)


@pytest.fixture
def pipe():
    from tools.tiny_model import build_tiny_pipeline

    built = build_tiny_pipeline("sd1")
    built.set_progress_bar_config(disable=True)
    return built


def _run(pipe, size: int = 64, batch: int = 1) -> np.ndarray:
    return pipe("a red circle", num_inference_steps=2, width=size, height=size, num_images_per_prompt=batch,
                output_type="np", generator=torch.Generator("cpu").manual_seed(5)).images


def _sliced(pipe) -> bool:
    from diffusers.models.attention_processor import SlicedAttnProcessor

    return any(isinstance(processor, SlicedAttnProcessor) for processor in pipe.unet.attn_processors.values())


def test_flags_map_to_options():
    options = MemoryOptions.from_flags(medvram=True, vae_tiling=True)
    assert options.model_cpu_offload and options.vae_tiling
    assert not options.sequential_cpu_offload and not options.vae_slicing
    assert MemoryOptions.from_flags(lowvram=True).sequential_cpu_offload


def test_defaults_only_place_the_pipeline(pipe):
    report = apply_memory_options(pipe, MemoryOptions(), CPU)
    assert report == ["attention slicing: off", "VAE slicing: off", "VAE tiling: off", "device: cpu"]
    assert not pipe.vae.use_slicing and not pipe.vae.use_tiling and not _sliced(pipe)


def test_everything_on_the_cpu(pipe):
    reference = _run(pipe, batch=2)
    options = MemoryOptions(attention_slicing=True, vae_slicing=True, vae_tiling=True, model_cpu_offload=True,
                            sequential_cpu_offload=True)
    report = apply_memory_options(pipe, options, "cpu", torch.float32)
    assert report[:3] == ["attention slicing: on", "VAE slicing: on", "VAE tiling: on"]
    assert any(line.startswith("sequential CPU offload: skipped") for line in report)
    assert any(line.startswith("model CPU offload: skipped") for line in report)
    assert report[-1] == "device: cpu, float32"
    assert pipe.vae.use_slicing and pipe.vae.use_tiling and _sliced(pipe)
    assert pipe.device.type == "cpu" and pipe.dtype == torch.float32

    sliced = _run(pipe, batch=2)  # slicing only splits the work: same pixels
    assert np.allclose(sliced, reference, atol=1e-4)
    tiled = _run(pipe, size=96)  # 12x12 latents exceed the tiny VAE's 8-latent tile: the tiled path runs
    assert tiled.shape == (1, 96, 96, 3) and np.isfinite(tiled).all()


def test_auto_attention_slicing_decides_from_the_device(pipe):
    report = apply_memory_options(pipe, MemoryOptions(attention_slicing="auto"), CPU)
    assert report[0] == "attention slicing: off (auto)"
    assert not _sliced(pipe)

    class Recorder:  # the GPU cases without a GPU: record what would be called
        def __init__(self):
            self.calls = []
            self.vae = self

        def __getattr__(self, name):
            return lambda *args, **kwargs: self.calls.append(name)

    small = Recorder()
    assert apply_memory_options(small, MemoryOptions(attention_slicing="auto"), SMALL_GPU)[0].startswith(
        "attention slicing: on (auto: 4.0 GiB)")
    assert "enable_attention_slicing" in small.calls
    assert apply_memory_options(Recorder(), MemoryOptions(attention_slicing="auto"), GPU)[0] == (
        "attention slicing: off (auto)")
    assert apply_memory_options(Recorder(), MemoryOptions(attention_slicing="auto"), MAC)[0] == (
        "attention slicing: on (auto: MPS)")


class FakePipe:
    """Records the calls apply_memory_options makes, standing in for a pipeline on a GPU machine."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.dtype = torch.float32
        self.vae = self

    def enable_attention_slicing(self, *args):
        self.calls.append(("enable_attention_slicing",))

    def enable_slicing(self):
        self.calls.append(("vae.enable_slicing",))

    def disable_slicing(self):
        self.calls.append(("vae.disable_slicing",))

    def enable_tiling(self):
        self.calls.append(("vae.enable_tiling",))

    def disable_tiling(self):
        self.calls.append(("vae.disable_tiling",))

    def to(self, device=None, dtype=None):
        self.calls.append(("to", device, dtype))
        return self

    def enable_model_cpu_offload(self, gpu_id=None, device=None):
        self.calls.append(("enable_model_cpu_offload", device))

    def enable_sequential_cpu_offload(self, gpu_id=None, device=None):
        self.calls.append(("enable_sequential_cpu_offload", device))


def test_medvram_on_a_gpu_offloads_instead_of_moving():
    fake = FakePipe()
    report = apply_memory_options(fake, MemoryOptions.from_flags(medvram=True), GPU, torch.float16)
    assert "model CPU offload: on (--medvram)" in report
    assert ("to", None, torch.float16) in fake.calls  # cast in place, placement left to the offload hooks
    assert ("enable_model_cpu_offload", "cuda:0") in fake.calls
    assert not any(call[0] == "to" and call[1] is not None for call in fake.calls)


def test_lowvram_wins_over_medvram():
    fake = FakePipe()
    report = apply_memory_options(fake, MemoryOptions.from_flags(medvram=True, lowvram=True), SMALL_GPU)
    assert "sequential CPU offload: on (--lowvram)" in report
    assert any("model CPU offload: skipped" in line and "precedence" in line for line in report)
    assert ("enable_sequential_cpu_offload", "cuda:1") in fake.calls
    assert not any(call[0] == "enable_model_cpu_offload" for call in fake.calls)


def test_no_offload_on_a_gpu_moves_the_pipeline():
    fake = FakePipe()
    report = apply_memory_options(fake, MemoryOptions(vae_tiling=True), GPU, torch.float16)
    assert ("to", "cuda:0", torch.float16) in fake.calls and ("vae.enable_tiling",) in fake.calls
    assert report[-1] == "device: cuda:0, float16"


def test_sdxl_pipeline_takes_the_options():
    from tools.tiny_model import build_tiny_pipeline

    pipe = build_tiny_pipeline("sdxl")
    pipe.set_progress_bar_config(disable=True)
    apply_memory_options(pipe, MemoryOptions(attention_slicing=True, vae_slicing=True, vae_tiling=True), "cpu")
    assert pipe.vae.use_slicing and pipe.vae.use_tiling
    images = pipe("a cat", num_inference_steps=2, width=64, height=64, output_type="np").images
    assert np.isfinite(images).all()
