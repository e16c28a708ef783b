"""Small Stable Diffusion models of the real architecture, built from a seed.

They stand in where no trained weights exist: the test suite runs the real diffusers pipelines on them in
milliseconds, and the app serves one until the embedded trained model lands. Every part is the class a full
SD 1.x / SDXL checkpoint uses (CLIP text encoder, conditional UNet, KL autoencoder), only narrower, and the
tokenizer is the real CLIP tokenizer, so prompts, loading and saving behave exactly as with a user's model.
Head counts follow the families' conventions (SD 1.x: 8 UNet heads; SDXL: 64-wide heads; CLIP: 64-wide heads)
so that a checkpoint's configuration can be recovered from its tensor shapes alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Family = Literal["sd1", "sdxl"]

TEXT_HIDDEN = 64
SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


def _text_encoder(seed: int, hidden: int, projection: bool = False, activation: str = "quick_gelu"):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from modules.models.clip_vocab import VOCAB_SIZE

    config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=2,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=77,
        hidden_act=activation,
        projection_dim=hidden,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    torch.manual_seed(seed)
    model_class = CLIPTextModelWithProjection if projection else CLIPTextModel
    return model_class(config).eval()


def _vae(seed: int, scaling_factor: float = 0.18215):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=scaling_factor,
    ).eval()


def _unet(seed: int, family: Family, in_channels: int):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    if family == "sdxl":
        return UNet2DConditionModel(
            sample_size=8,
            in_channels=in_channels,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            attention_head_dim=(1, 1),
            cross_attention_dim=TEXT_HIDDEN * 2,
            norm_num_groups=8,
            transformer_layers_per_block=(1, 1),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=TEXT_HIDDEN + 6 * 8,
        ).eval()
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=8,
        cross_attention_dim=TEXT_HIDDEN,
        norm_num_groups=8,
    ).eval()


def build_tiny_pipeline(family: Family = "sd1", seed: int = 0, inpainting: bool = False):
    """A randomly initialised pipeline of the given family (txt2img class), on the CPU in float32."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from modules.models.clip_vocab import load_clip_tokenizer

    scheduler = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    in_channels = 9 if inpainting else 4
    if family == "sdxl":
        return StableDiffusionXLPipeline(
            # As real SDXL: an OpenCLIP second encoder (gelu) and SDXL's VAE scaling factor.
            vae=_vae(seed, scaling_factor=0.13025),
            text_encoder=_text_encoder(seed + 1, TEXT_HIDDEN),
            text_encoder_2=_text_encoder(seed + 2, TEXT_HIDDEN, projection=True, activation="gelu"),
            tokenizer=load_clip_tokenizer(),
            tokenizer_2=load_clip_tokenizer(pad_token="!"),
            unet=_unet(seed + 3, "sdxl", in_channels),
            scheduler=scheduler,
        )
    return StableDiffusionPipeline(
        vae=_vae(seed),
        text_encoder=_text_encoder(seed + 1, TEXT_HIDDEN),
        tokenizer=load_clip_tokenizer(),
        unet=_unet(seed + 3, "sd1", in_channels),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_model(folder: Path, family: Family = "sd1", seed: int = 0, inpainting: bool = False) -> Path:
    """Build a tiny model and save it as a diffusers folder (safetensors weights)."""
    folder = Path(folder)
    build_tiny_pipeline(family, seed, inpainting).save_pretrained(folder, safe_serialization=True)
    return folder
