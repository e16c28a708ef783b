"""Small Stable Diffusion models of the real architecture, built from a seed.

They stand in where no trained weights exist: the test suite runs the real diffusers pipelines on them in
milliseconds, and the app serves one until the embedded trained model lands. Every part is the class a full
SD 1.x / SDXL checkpoint uses (CLIP text encoder, conditional UNet, KL autoencoder), only narrower, and the
tokenizer is the real CLIP tokenizer, so prompts, loading and saving behave exactly as with a user's model.
Head counts follow the families' conventions (SD 1.x: 8 UNet heads; SDXL: 64-wide heads; CLIP: 64-wide heads)
so that a checkpoint's configuration can be recovered from its tensor shapes alone.

The flow-matching families (SD3, Flux.1) are built the same way: their transformer, a 16-channel VAE with the
family's scaling and shift factors, CLIP encoders with the real CLIP tokenizer, and a tiny T5 whose tokenizer is
a character-level Unigram vocabulary built here (the real T5 SentencePiece model is a download).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Family = Literal["sd1", "sdxl", "sd3", "flux", "flux-schnell", "flux-kontext"]

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


def _vae(seed: int, scaling_factor: float = 0.18215, latent_channels: int = 4, shift_factor: float | None = None):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    # The flow families' VAEs (16 latent channels) have no quant convs and shift their latents before scaling.
    flow = {} if shift_factor is None else {"shift_factor": shift_factor, "use_quant_conv": False,
                                            "use_post_quant_conv": False}
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=scaling_factor,
        **flow,
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


T5_HIDDEN = 128  # the flow families pad the CLIP features (2 x TEXT_HIDDEN for SD3) up to the T5 width
# The schedulers the published models ship: SD3 a fixed shift of 3; Flux.1-dev shifts with the image size;
# Flux.1-schnell (timestep-distilled for 1-4 steps) no shift at all.
SD3_SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX_DEV_SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
                             "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
                             "max_image_seq_len": 4096}
FLUX_SCHNELL_SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}


def tiny_t5_tokenizer():
    """A T5 tokenizer (the class the SD3 and Flux pipelines expect) over a character-level Unigram vocabulary.

    The real T5 SentencePiece model is a download; the tiny models only need a tokenizer of the right class that
    turns any prompt into ids, so every ASCII character is a piece, with and without SentencePiece's word-start
    marker, and ``</s>`` closes each sequence as in T5.
    """
    import string

    from transformers import T5Tokenizer

    characters = string.ascii_letters + string.digits + string.punctuation
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + char, -3.0) for char in characters] + [(char, -4.0) for char in characters]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _t5_encoder(seed: int, vocab_size: int):
    import torch
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=vocab_size, d_model=T5_HIDDEN, d_kv=32, d_ff=T5_HIDDEN * 2, num_layers=2,
                      num_heads=4, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                      dropout_rate=0.0, is_encoder_decoder=False, use_cache=False)
    torch.manual_seed(seed)
    return T5EncoderModel(config).eval()


def _sd3_transformer(seed: int):
    import torch
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=16,
        num_attention_heads=2, caption_projection_dim=32, joint_attention_dim=T5_HIDDEN,
        pooled_projection_dim=TEXT_HIDDEN * 2, pos_embed_max_size=32,
    ).eval()


def _flux_transformer(seed: int, guidance: bool):
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=T5_HIDDEN, pooled_projection_dim=TEXT_HIDDEN,
        guidance_embeds=guidance, axes_dims_rope=(4, 6, 6),
    ).eval()


def _build_flow_pipeline(family: str, seed: int, with_t5: bool = True):
    """SD3 (two CLIPs with projection + an optional T5) or Flux.1 (one CLIP + T5), each with a 16-channel VAE
    carrying its family's scaling and shift factors and the flow-matching Euler scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxPipeline, StableDiffusion3Pipeline

    from modules.models.clip_vocab import load_clip_tokenizer

    tokenizer = tiny_t5_tokenizer()
    t5 = _t5_encoder(seed + 4, len(tokenizer)) if with_t5 else None
    if family == "sd3":
        return StableDiffusion3Pipeline(
            transformer=_sd3_transformer(seed + 3),
            scheduler=FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER_CONFIG),
            vae=_vae(seed, scaling_factor=1.5305, latent_channels=16, shift_factor=0.0609),
            text_encoder=_text_encoder(seed + 1, TEXT_HIDDEN, projection=True),
            tokenizer=load_clip_tokenizer(),
            text_encoder_2=_text_encoder(seed + 2, TEXT_HIDDEN, projection=True, activation="gelu"),
            tokenizer_2=load_clip_tokenizer(pad_token="!"),
            text_encoder_3=t5,
            tokenizer_3=tokenizer if with_t5 else None,
        )
    schnell = family == "flux-schnell"
    config = FLUX_SCHNELL_SCHEDULER_CONFIG if schnell else FLUX_DEV_SCHEDULER_CONFIG
    # Kontext is Flux.1-dev's transformer trained to edit: the same components, saved with its own pipeline class.
    pipeline_class = FluxKontextPipeline if family == "flux-kontext" else FluxPipeline
    return pipeline_class(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(config),
        vae=_vae(seed, scaling_factor=0.3611, latent_channels=16, shift_factor=0.1159),
        text_encoder=_text_encoder(seed + 1, TEXT_HIDDEN),
        tokenizer=load_clip_tokenizer(),
        text_encoder_2=t5,
        tokenizer_2=tokenizer,
        transformer=_flux_transformer(seed + 3, guidance=not schnell),
    )


def build_tiny_pipeline(family: Family = "sd1", seed: int = 0, inpainting: bool = False, with_t5: bool = True):
    """A randomly initialised pipeline of the given family (txt2img class), on the CPU in float32.

    "flux" is Flux.1-dev (guidance-distilled), "flux-schnell" Flux.1-schnell (no guidance input), "flux-kontext"
    Flux.1 Kontext (dev's transformer in ``FluxKontextPipeline``); ``with_t5=False``
    leaves SD3's optional T5 encoder out, as SD3 allows.
    """
    if family in ("sd3", "flux", "flux-schnell", "flux-kontext"):
        return _build_flow_pipeline(family, seed, with_t5)
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


def save_tiny_model(folder: Path, family: Family = "sd1", seed: int = 0, inpainting: bool = False,
                    with_t5: bool = True) -> Path:
    """Build a tiny model and save it as a diffusers folder (safetensors weights)."""
    folder = Path(folder)
    build_tiny_pipeline(family, seed, inpainting, with_t5).save_pretrained(folder, safe_serialization=True)
    return folder
