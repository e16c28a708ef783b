"""Single-file and diffusers checkpoints load offline into pipelines that draw exactly what the originals draw."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from ckpt_layout import clip_to_ldm, open_clip_to_ldm, pipeline_to_ldm, save_single_file, unet_to_ldm, vae_to_ldm

from modules.models.checkpoints import (
    CONFIG_ROOT,
    CheckpointLoadError,
    Layout,
    default_size,
    detect_layout,
    load_pipeline,
    read_config_folder,
    resolve_configs,
)
from modules.models.registry import CheckpointInfo
from tools.tiny_model import SCHEDULER_CONFIG, build_tiny_pipeline


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No hub and no network: the env switch, huggingface_hub's parsed constant, and every socket connection."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint loading tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One config/tokenizer cache for the module, so tokenizer files are written once."""
    return tmp_path_factory.mktemp("loader-cache")


def info_for(path: Path) -> CheckpointInfo:
    kind = "diffusers" if path.is_dir() else path.suffix.lstrip(".")
    return CheckpointInfo(path.stem, path.name, path, kind, None, None, None)


def draw(pipe, **extra) -> np.ndarray:
    """Four Euler steps at 64x64 with a fixed seed (the scheduler is not part of a checkpoint, so fix it too)."""
    from diffusers import EulerDiscreteScheduler

    pipe.scheduler = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(1234)
    return pipe("a red circle", num_inference_steps=4, height=64, width=64, output_type="np",
                generator=generator, **extra).images


def faithful_sdxl():
    """The tiny SDXL with the two SDXL conventions a single file cannot carry made real.

    ``tiny_model`` gives its second encoder quick_gelu and its VAE SD 1.x's scaling factor; the real OpenCLIP
    bigG uses gelu and the SDXL VAE 0.13025, which is what the loader (rightly) assumes for an SDXL file.
    """
    from transformers import CLIPTextModelWithProjection

    pipe = build_tiny_pipeline("sdxl")
    config = pipe.text_encoder_2.config
    config.hidden_act = "gelu"
    encoder = CLIPTextModelWithProjection(config).eval()
    encoder.load_state_dict(pipe.text_encoder_2.state_dict())
    pipe.register_modules(text_encoder_2=encoder)
    pipe.vae.register_to_config(scaling_factor=0.13025)
    return pipe


def tiny_sd2():
    """A tiny SD 2.x: OpenCLIP text tower (gelu, '!' padding), linear projections, 64-wide UNet heads.

    Returns the pipeline and its original-layout state dict, whose text tower has one more block than the
    pipeline uses, as SD 2.x checkpoints do (the model conditions on the penultimate layer).
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from modules.models.clip_vocab import load_clip_tokenizer

    pipe = build_tiny_pipeline("sd1")
    torch.manual_seed(5)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(1, 1), cross_attention_dim=64, norm_num_groups=8, use_linear_projection=True,
    ).eval()
    config = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                            num_attention_heads=1, max_position_embeddings=77, hidden_act="gelu")
    full = CLIPTextModel(config).eval()
    used = CLIPTextModel(CLIPTextConfig(**{**config.to_dict(), "num_hidden_layers": 2})).eval()
    used.load_state_dict(full.state_dict(), strict=False)
    pipe.register_modules(unet=unet, text_encoder=used, tokenizer=load_clip_tokenizer(pad_token="!"))
    state = {k: v for k, v in pipeline_to_ldm(pipe).items() if not k.startswith("cond_stage_model.")}
    state.update(open_clip_to_ldm(full, "cond_stage_model.model."))
    return pipe, state


def test_sd1_safetensors_draws_the_same_image(tmp_path, cache):
    from diffusers import StableDiffusionPipeline

    original = build_tiny_pipeline("sd1")
    path = save_single_file(original, tmp_path / "Stable-diffusion" / "tiny.safetensors")
    loaded = load_pipeline(info_for(path), cache_dir=cache)
    assert type(loaded) is StableDiffusionPipeline and loaded.safety_checker is None
    assert loaded.unet.dtype == torch.float32
    assert loaded.tokenizer.pad_token == "<|endoftext|>"
    assert np.allclose(draw(loaded), draw(original), atol=1e-4)


def test_sd1_inpainting_safetensors_inpaints_the_same(tmp_path, cache):
    from diffusers import StableDiffusionInpaintPipeline
    from PIL import Image

    original = build_tiny_pipeline("sd1", inpainting=True)
    path = save_single_file(original, tmp_path / "tiny-inpainting.safetensors")
    loaded = load_pipeline(info_for(path), cache_dir=cache)
    assert loaded.unet.config.in_channels == 9
    image = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[:, None, None] * 4, (1, 64, 3)))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    extra = {"image": image, "mask_image": mask}
    ours = draw(StableDiffusionInpaintPipeline(**loaded.components), **extra)
    theirs = draw(StableDiffusionInpaintPipeline(**original.components), **extra)
    assert np.allclose(ours, theirs, atol=1e-4)


def test_sdxl_safetensors_draws_the_same_image(tmp_path, cache):
    from diffusers import StableDiffusionXLPipeline

    original = faithful_sdxl()
    path = save_single_file(original, tmp_path / "tiny-xl.safetensors")
    loaded = load_pipeline(info_for(path), cache_dir=cache)
    assert type(loaded) is StableDiffusionXLPipeline
    assert loaded.tokenizer.pad_token == "<|endoftext|>" and loaded.tokenizer_2.pad_token == "!"
    # Both tiny encoders are 64 wide, which diffusers alone would confuse; each must hold its own weights.
    assert torch.equal(loaded.text_encoder_2.text_model.embeddings.token_embedding.weight,
                       original.text_encoder_2.text_model.embeddings.token_embedding.weight)
    assert np.allclose(draw(loaded), draw(original), atol=1e-4)


def test_sd2_safetensors_and_v_prediction_sidecar(tmp_path, cache):
    from safetensors.torch import save_file

    original, state = tiny_sd2()
    path = tmp_path / "tiny-sd2.safetensors"
    save_file(state, str(path))
    loaded = load_pipeline(info_for(path), cache_dir=cache)
    assert loaded.tokenizer.pad_token == "!"
    assert loaded.text_encoder.config.hidden_act == "gelu" and loaded.text_encoder.config.num_hidden_layers == 2
    assert loaded.unet.config.use_linear_projection
    assert loaded.scheduler.config.prediction_type == "epsilon"
    assert np.allclose(draw(loaded), draw(original), atol=1e-4)

    path.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n', encoding="utf-8")
    v_model = load_pipeline(info_for(path), cache_dir=cache)
    assert v_model.scheduler.config.prediction_type == "v_prediction"
    assert v_model.unet.config.sample_size == 96 and v_model.unet.config.upcast_attention
    assert load_pipeline(info_for(path), cache_dir=cache, prediction_type="epsilon").scheduler.config.prediction_type \
        == "epsilon"


def test_weights_only_ckpt_loads_and_fp16_weights_come_back_float32(tmp_path, cache):
    original = build_tiny_pipeline("sd1")
    path = save_single_file(original, tmp_path / "tiny.ckpt")
    assert np.allclose(draw(load_pipeline(info_for(path), cache_dir=cache)), draw(original), atol=1e-4)

    from safetensors.torch import save_file

    half = tmp_path / "tiny-fp16.safetensors"
    save_file({k: v.half() for k, v in pipeline_to_ldm(original).items()}, str(half))
    loaded = load_pipeline(info_for(half), cache_dir=cache)
    assert {p.dtype for p in loaded.unet.parameters()} == {torch.float32}


class _Payload:
    """Unpickling this creates a marker file: stands in for code a malicious checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_ckpt_with_a_pickled_object_is_refused_without_running_it(tmp_path, cache):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": pipeline_to_ldm(build_tiny_pipeline("sd1")), "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointLoadError, match="may contain code") as caught:
        load_pipeline(info_for(path), cache_dir=cache)
    assert ".safetensors" in str(caught.value)
    assert not marker.exists()


def test_unsupported_files_are_refused_clearly(tmp_path, cache):
    from safetensors.torch import save_file

    other = tmp_path / "model.pt"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointLoadError, match="unsupported checkpoint type"):
        load_pipeline(info_for(other), cache_dir=cache)

    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, str(lora))
    with pytest.raises(CheckpointLoadError, match="not a Stable Diffusion"):
        load_pipeline(info_for(lora), cache_dir=cache)

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointLoadError, match="could not be read"):
        load_pipeline(info_for(garbage), cache_dir=cache)

    incomplete = tmp_path / "incomplete.safetensors"
    state = pipeline_to_ldm(build_tiny_pipeline("sd1"))
    del state["cond_stage_model.transformer.text_model.final_layer_norm.weight"]
    save_file(state, str(incomplete))
    with pytest.raises(CheckpointLoadError, match="lacks 1 weights of its text_encoder"):
        load_pipeline(info_for(incomplete), cache_dir=cache)


def test_diffusers_folder_loads_as_is(tmp_path, cache):
    from tools.tiny_model import save_tiny_model

    folder = save_tiny_model(tmp_path / "tiny-sd1")
    loaded = load_pipeline(info_for(folder), cache_dir=cache)
    assert np.allclose(draw(loaded), draw(build_tiny_pipeline("sd1")), atol=1e-4)
    assert default_size("sd1", model_path=folder) == 64
    v_model = load_pipeline(info_for(folder), cache_dir=cache, prediction_type="v")
    assert v_model.scheduler.config.prediction_type == "v_prediction"


def test_default_sizes():
    assert default_size("sd1") == 512
    assert default_size("sd2") == 512
    assert default_size("sd2", prediction_type="v_prediction") == 768
    assert default_size("sdxl") == 1024


def _real_shapes(family: str) -> dict[str, tuple[int, ...]]:
    """Original-layout tensor shapes of a full-size model built on the meta device (no memory, no weights)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = CONFIG_ROOT / {"sd1": "sd15", "sd1-inpainting": "sd15-inpainting"}.get(family, family)
    configs = read_config_folder(folder)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        text = CLIPTextConfig(**configs["text_encoder"])
        if family == "sd2":
            text.num_hidden_layers += 1  # the checkpoint holds the last block too
            text_state = open_clip_to_ldm(CLIPTextModel(text), "cond_stage_model.model.")
        elif family == "sdxl":
            text_state = clip_to_ldm(CLIPTextModel(text), "conditioner.embedders.0.transformer.")
            bigg = CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"]))
            text_state.update(open_clip_to_ldm(bigg, "conditioner.embedders.1.model."))
        else:
            text_state = clip_to_ldm(CLIPTextModel(text), "cond_stage_model.transformer.")
    state = {**unet_to_ldm(unet), **vae_to_ldm(vae), **text_state}
    return {key: tuple(value.shape) for key, value in state.items()}


@pytest.mark.parametrize("family", ["sd1", "sd1-inpainting", "sd2", "sdxl"])
def test_real_model_shapes_resolve_to_the_shipped_configs(family):
    shapes = _real_shapes(family)
    layout = detect_layout(shapes)
    assert layout == Layout(family.split("-")[0], family.endswith("inpainting"))
    assert resolve_configs(shapes, layout) == read_config_folder(CONFIG_ROOT / layout.config_name)
