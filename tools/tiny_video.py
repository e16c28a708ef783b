"""Small video models of the real architectures, built from a seed, for tests (no download, no network).

- an AnimateDiff ``MotionAdapter`` whose widths fit ``tools.tiny_model``'s SD 1.x UNet (or any other widths);
- a Stable Video Diffusion pipeline (spatio-temporal UNet, temporal-decoder VAE, CLIP vision encoder);
- Wan 2.x text-to-video and image-to-video pipelines (Wan transformer and VAE, a tiny UMT5 with the
  character-level T5 tokenizer of ``tools.tiny_model``, and for image-to-video a tiny CLIP vision encoder).
Each is the class a published model uses, only narrow, so loading and running go through the same code.
"""

from __future__ import annotations

from pathlib import Path


def build_motion_adapter(seed: int = 0, block_out_channels: tuple[int, ...] = (32, 64), max_frames: int = 32):
    import torch
    from diffusers import MotionAdapter

    torch.manual_seed(seed)
    return MotionAdapter(block_out_channels=block_out_channels, motion_layers_per_block=1,
                         motion_norm_num_groups=8, motion_num_attention_heads=2,
                         motion_max_seq_length=max_frames).eval()


def save_motion_adapter(folder: Path, seed: int = 0, block_out_channels: tuple[int, ...] = (32, 64)) -> Path:
    build_motion_adapter(seed, block_out_channels).save_pretrained(folder)
    return Path(folder)


def _clip_vision(seed: int, hidden: int, image_size: int = 32, projection: bool = True, patch: int = 4):
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=hidden, projection_dim=hidden, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, intermediate_size=hidden * 2, patch_size=patch)
    torch.manual_seed(seed)
    model = (CLIPVisionModelWithProjection if projection else CLIPVisionModel)(config).eval()
    return model, CLIPImageProcessor(crop_size=image_size, size=image_size)


def build_svd(seed: int = 0, num_frames: int = 14):
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4, num_frames=num_frames,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, num_attention_heads=(2, 4),
        addition_time_embed_dim=32, projection_class_embeddings_input_dim=96,
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 64), in_channels=3, out_channels=3,
                                       down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                                       latent_channels=4, layers_per_block=1).eval()
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       interpolation_type="linear", num_train_timesteps=1000,
                                       prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
                                       steps_offset=1, timestep_spacing="leading", timestep_type="continuous",
                                       use_karras_sigmas=True)
    # SVD resizes its image to CLIP's 224 pixels itself; 28-pixel patches keep the encoder tiny.
    encoder, processor = _clip_vision(seed + 2, 32, image_size=224, patch=28)
    return StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder, unet=unet, scheduler=scheduler,
                                        feature_extractor=processor)


def build_wan(seed: int = 0, image_to_video: bool = False):
    import torch
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    from tools.tiny_model import tiny_t5_tokenizer

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    tokenizer = tiny_t5_tokenizer()
    config = UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, dropout_rate=0.0, is_encoder_decoder=False,
                        use_cache=False)
    torch.manual_seed(seed + 1)
    text_encoder = UMT5EncoderModel(config).eval()
    torch.manual_seed(seed + 2)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
        in_channels=36 if image_to_video else 16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        image_dim=4 if image_to_video else None,
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    if not image_to_video:
        return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                           transformer=transformer)
    encoder, processor = _clip_vision(seed + 3, 4, projection=False)
    return WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                                   transformer=transformer, image_encoder=encoder, image_processor=processor)


def save_tiny_svd(folder: Path, seed: int = 0, num_frames: int = 14) -> Path:
    build_svd(seed, num_frames).save_pretrained(folder)
    return Path(folder)


def save_tiny_wan(folder: Path, seed: int = 0, image_to_video: bool = False) -> Path:
    build_wan(seed, image_to_video).save_pretrained(folder)
    return Path(folder)


def save_motion_module_file(path: Path, seed: int = 0, block_out_channels: tuple[int, ...] = (32, 64)) -> Path:
    """A single motion-module ``.safetensors`` in AnimateDiff's original key layout (``temporal_transformer``,
    ``attention_blocks``, ``norms``, ``pos_encoder``), as A1111's AnimateDiff extension users keep them, with the
    original 8 heads and 32 norm groups (which such files never state)."""
    import re

    import torch
    from diffusers import MotionAdapter
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    adapter = MotionAdapter(block_out_channels=block_out_channels, motion_layers_per_block=1,
                            motion_norm_num_groups=32, motion_num_attention_heads=8, motion_max_seq_length=32)
    original = {}
    for key, value in adapter.state_dict().items():
        if key.endswith("pos_embed.pe"):
            stem = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key[: -len("pos_embed.pe")])
            for index in (0, 1):
                original[f"{stem}attention_blocks.{index}.pos_encoder.pe"] = value.clone().contiguous()
            continue
        name = (key.replace(".norm1", ".norms.0").replace(".norm2", ".norms.1").replace(".norm3", ".ff_norm")
                .replace(".attn1", ".attention_blocks.0").replace(".attn2", ".attention_blocks.1"))
        original[re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", name)] = value.contiguous()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(original, str(path))
    return Path(path)
