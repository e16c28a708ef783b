"""A LoRA shipped beside a motion adapter (``pytorch_lora_weights.safetensors`` in its folder, as the embedded
motion model ships the one that teaches the base UNet's cross-attention the motion words) is loaded with the adapter
by the video path: the clip changes with it, the image model's own pictures do not, and a broken LoRA file is a
notice naming the model while the worker goes on. Tiny random-weight models; the LoRA is made and saved by the
motion trainer's own functions, so the format the trainer writes is the one the studio reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.errors import RequestError
from modules.image.request import GenerationRequest
from modules.video.encode import read_frames
from modules.video.pipelines import MOTION_LORA_FILE
from modules.video.request import VideoRequest


def save_lora_for(checkpoint: Path, adapter: Path, folder: Path, text_encoder: bool = False) -> None:
    """The adapter's folder copied to ``folder`` with a non-zero cross-attention LoRA for ``checkpoint``'s UNet
    (and, with ``text_encoder``, one for its text encoder's self-attention, as ``text_lora_rank`` trains)."""
    from diffusers import AnimateDiffPipeline, MotionAdapter, UNet2DConditionModel, UNetMotionModel
    from transformers import CLIPTextModel

    from tools.motion.train import add_text_encoder_lora, add_text_lora, make_config, text_lora_state

    shutil.copytree(adapter, folder)
    unet = UNetMotionModel.from_unet2d(UNet2DConditionModel.from_pretrained(str(checkpoint), subfolder="unet"),
                                       MotionAdapter.from_pretrained(str(adapter)))
    add_text_lora(unet, make_config(overrides=["lora_rank=4"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0.0, 0.5)  # a trained LoRA is not zero
    state = text_lora_state(unet)
    assert state and all(".attn2.to_k." in k or ".attn2.to_v." in k for k in state)
    assert not any("motion_modules" in k for k in state)
    text_state = None
    if text_encoder:
        encoder = CLIPTextModel.from_pretrained(str(checkpoint), subfolder="text_encoder")
        assert add_text_encoder_lora(encoder, make_config(overrides=["text_lora_rank=4"]))
        with torch.no_grad():
            for name, parameter in encoder.named_parameters():
                if ".lora_B." in name:
                    parameter.normal_(0.0, 0.5)
        text_state = text_lora_state(encoder)
        assert text_state and all(".self_attn." in k for k in text_state)
    AnimateDiffPipeline.save_lora_weights(str(folder), unet_lora_layers=state, text_encoder_lora_layers=text_state,
                                          weight_name=MOTION_LORA_FILE)


@pytest.fixture(scope="module")
def lora_services(tmp_path_factory, video_model_store, one_thread):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    root = tmp_path_factory.mktemp("motion-lora-studio")
    models = root / "models"
    shutil.copytree(video_model_store, models)
    save_lora_for(models / "Stable-diffusion" / "tiny-sd1", models / "animatediff" / "tiny-motion",
                  models / "animatediff" / "tiny-motion-lora")
    save_lora_for(models / "Stable-diffusion" / "tiny-sd1", models / "animatediff" / "tiny-motion",
                  models / "animatediff" / "tiny-motion-text-lora", text_encoder=True)
    broken = models / "animatediff" / "tiny-motion-broken-lora"
    shutil.copytree(models / "animatediff" / "tiny-motion", broken)
    (broken / MOTION_LORA_FILE).write_bytes(b"not a safetensors file")
    services = build_services(AppConfig(models_dir=models, outdir=root / "outputs", data_dir=root / "data",
                                        default_ckpt="tiny-sd1"))
    services.start()
    yield services
    services.stop()


def clip(services, model: str) -> np.ndarray:
    result = services.run(VideoRequest(model=model, prompt="a red circle moving up", frames=4, fps=8, steps=2,
                                       width=64, height=64, seed=5), timeout=300)
    return np.stack([np.asarray(frame, dtype=np.int16) for frame in read_frames(result.videos[0].path)])


def picture(services) -> np.ndarray:
    request = GenerationRequest(prompt="a red circle moving up", seed=5, steps=2, width=64, height=64)
    return np.asarray(services.run(request, timeout=300).images[0].image, dtype=np.int16)


def test_the_lora_beside_the_adapter_changes_the_clip_and_leaves_the_image_model_alone(lora_services):
    before = picture(lora_services)
    plain = clip(lora_services, "tiny-motion")
    with_lora = clip(lora_services, "tiny-motion-lora")
    assert plain.shape == with_lora.shape == (4, 64, 64, 3)
    assert np.abs(plain - with_lora).mean() > 1.0
    # the LoRA went into the motion pipeline's own UNet copy: the checkpoint's pictures are what they were
    assert np.array_equal(picture(lora_services), before)
    # and going back to the adapter alone gives its clip again
    assert np.abs(clip(lora_services, "tiny-motion") - plain).mean() < 0.5


def test_a_text_encoder_lora_beside_the_adapter_reads_the_prompt_for_clips_only(lora_services):
    before = picture(lora_services)
    unet_only = clip(lora_services, "tiny-motion-lora")
    with_text = clip(lora_services, "tiny-motion-text-lora")
    assert np.abs(with_text - unet_only).mean() > 1.0  # the prompt reads differently in the clip
    # the video pipeline had its own copy of the text encoder: the checkpoint's pictures are what they were
    assert np.array_equal(picture(lora_services), before)
    assert np.abs(clip(lora_services, "tiny-motion-lora") - unet_only).mean() < 0.5
    # motion_end 0 switches the text-encoder part off with the rest: the image model alone reads the prompt
    off_with_text, _ = ended_clip(lora_services, "tiny-motion-text-lora", 0.0)
    off_without, _ = ended_clip(lora_services, "tiny-motion", 0.0)
    assert np.abs(off_with_text - off_without).mean() < 0.5


def test_a_broken_lora_beside_the_adapter_names_the_model_and_the_worker_goes_on(lora_services):
    with pytest.raises(RequestError) as raised:
        clip(lora_services, "tiny-motion-broken-lora")
    assert raised.value.field == "model" and "tiny-motion-broken-lora" in str(raised.value)
    assert clip(lora_services, "tiny-motion").shape == (4, 64, 64, 3)


def ended_clip(services, model: str, motion_end: float) -> tuple[np.ndarray, str]:
    result = services.run(VideoRequest(model=model, prompt="a red circle moving up", frames=4, fps=8, steps=4,
                                       width=64, height=64, seed=5, motion_end=motion_end), timeout=300)
    frames = np.stack([np.asarray(frame, dtype=np.int16) for frame in read_frames(result.videos[0].path)])
    return frames, result.infotext


def test_motion_end_stops_the_adapter_and_its_lora_then_puts_both_back(lora_services):
    full, full_text = ended_clip(lora_services, "tiny-motion-lora", 1.0)
    half, half_text = ended_clip(lora_services, "tiny-motion-lora", 0.5)
    assert np.abs(full - half).mean() > 1.0
    assert "Motion end: 0.5" in half_text and "Motion end" not in full_text
    # at 0 neither the motion modules nor the LoRA act: with or without the LoRA, the image model alone
    off_with_lora, _ = ended_clip(lora_services, "tiny-motion-lora", 0.0)
    off_without, _ = ended_clip(lora_services, "tiny-motion", 0.0)
    assert np.abs(off_with_lora - off_without).mean() < 0.5
    assert np.abs(off_with_lora - full).mean() > 1.0
    # and the next clip has the whole adapter again
    again, _ = ended_clip(lora_services, "tiny-motion-lora", 1.0)
    assert np.abs(again - full).mean() < 0.5
