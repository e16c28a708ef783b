"""Shared fixtures: small models the tests build themselves, and services wired to temporary folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_store(tmp_path_factory) -> Path:
    """A models folder in A1111 layout with a tiny SD 1.x model, a tiny inpainting model and two tiny upscalers
    (a 2x .safetensors in ESRGAN/, a 4x .pth in RealESRGAN/), built once."""
    from tools.tiny_model import save_tiny_model
    from tools.tiny_upscaler import save_tiny_upscaler

    root = tmp_path_factory.mktemp("model-store")
    save_tiny_model(root / "Stable-diffusion" / "tiny-sd1", family="sd1", seed=0)
    save_tiny_model(root / "Stable-diffusion" / "tiny-sd1-inpainting", family="sd1", seed=0, inpainting=True)
    save_tiny_upscaler(root / "ESRGAN" / "2x-TinyCompact.safetensors", scale=2)
    save_tiny_upscaler(root / "RealESRGAN" / "4x-TinyCompact.pth", scale=4, seed=1)
    return root


@pytest.fixture(scope="session")
def network_files(tmp_path_factory):
    """LoRA and embedding files for the tiny SD 1.x model (and one LoRA for the tiny SDXL), built once."""
    import shutil

    from tools.tiny_lora import save_tiny_embedding, save_tiny_lora
    from tools.tiny_model import build_tiny_pipeline

    root = tmp_path_factory.mktemp("networks")
    sd1 = build_tiny_pipeline("sd1", seed=0)
    save_tiny_lora(sd1, root / "Lora" / "peftstyle.safetensors", "peft", seed=1)
    save_tiny_lora(sd1, root / "Lora" / "kohyastyle.safetensors", "kohya", seed=1)  # the same weights, kohya keys
    save_tiny_lora(sd1, root / "Lora" / "sub" / "other.safetensors", "kohya", seed=2)
    save_tiny_lora(build_tiny_pipeline("sdxl", seed=0), root / "Lora" / "xl-only.safetensors", "kohya", seed=3)
    truncated = root / "Lora" / "broken.safetensors"
    shutil.copy(root / "Lora" / "peftstyle.safetensors", truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    save_tiny_embedding(root / "embeddings" / "shinyemb.pt", vectors=2, seed=4)
    save_tiny_embedding(root / "embeddings" / "glossyemb.safetensors", vectors=1, seed=5)
    save_tiny_embedding(root / "embeddings" / "xlemb.safetensors", vectors=1, seed=6, sdxl_dim=64)
    return root


@pytest.fixture
def app_config(tmp_path, tiny_model_store):
    """An AppConfig whose models, outputs and data live under tmp_path (models copied from the session store)."""
    from modules.runtime.config import AppConfig

    models = tmp_path / "models"
    shutil.copytree(tiny_model_store, models)
    return AppConfig(models_dir=models, outdir=tmp_path / "outputs", data_dir=tmp_path / "data",
                     default_ckpt="tiny-sd1", preview_interval=2)


@pytest.fixture
def services(app_config):
    """Running services (worker thread started) on the tiny models; stopped after the test."""
    from modules.runtime.services import build_services

    built = build_services(app_config)
    built.start()
    yield built
    built.stop()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine spinning threads make them 5x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def video_model_store(tmp_path_factory, tiny_model_store) -> Path:
    """``tiny_model_store`` plus a tiny SDXL checkpoint and tiny video models, built once: an AnimateDiff motion
    adapter fitting tiny-sd1 and tiny-sdxl (in ``animatediff/``), the same kind as a single file in AnimateDiff's
    original layout (in ``AnimateDiff/``), one made for SDXL-width UNets (config only: it is refused before any
    weight is read), and SVD, Wan text-to-video and Wan image-to-video folders (in ``video/``)."""
    import json

    from tools.tiny_model import save_tiny_model
    from tools.tiny_video import save_motion_adapter, save_motion_module_file, save_tiny_svd, save_tiny_wan

    root = tmp_path_factory.mktemp("video-store")
    shutil.copytree(tiny_model_store, root, dirs_exist_ok=True)
    save_motion_adapter(root / "animatediff" / "tiny-motion", seed=0)  # its widths fit tiny-sdxl's UNet too
    save_tiny_model(root / "Stable-diffusion" / "tiny-sdxl", family="sdxl", seed=0)
    save_motion_module_file(root / "AnimateDiff" / "v2-motion-module.safetensors", seed=3)  # A1111's single file
    xl = root / "AnimateDiff" / "xl-motion"
    xl.mkdir(parents=True)
    (xl / "config.json").write_text(json.dumps({"_class_name": "MotionAdapter", "block_out_channels": [320, 640, 1280],
                                                "motion_max_seq_length": 32}))
    save_tiny_svd(root / "video" / "tiny-svd", seed=0)
    save_tiny_wan(root / "video" / "tiny-wan", seed=0)
    save_tiny_wan(root / "video" / "tiny-wan-i2v", seed=0, image_to_video=True)
    return root


@pytest.fixture(scope="session")
def tiny_audio_store(tmp_path_factory) -> Path:
    """A models folder with ``audio/`` holding tiny Stable Audio, AudioLDM2 and VITS models (one and two voices),
    built once."""
    from tools.tiny_audio import save_tiny_audio_models

    root = tmp_path_factory.mktemp("audio-models")
    save_tiny_audio_models(root / "audio")
    return root
