"""Tiny random-weight audio models in the layouts users install, for tests: a diffusers Stable Audio folder, a
diffusers AudioLDM2 folder and a transformers VITS folder, all at 16 kHz and built offline (every tokenizer is made
here from a small vocabulary). They make noise, not sound, but they run the real pipelines end to end in well under
a second a clip.

    python -m tools.tiny_audio models/audio   # writes tiny-stable-audio, tiny-audioldm2 and tiny-vits there
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

SAMPLE_RATE = 16000
STABLE_AUDIO_SECONDS = 2  # the longest clip the tiny Stable Audio makes (its latent length)


def build_tiny_stable_audio(seed: int = 0):
    import torch
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel

    from tools.tiny_model import tiny_t5_tokenizer

    tokenizer = tiny_t5_tokenizer()
    tokenizer.model_max_length = 32
    ratios = [2, 4, 8]
    torch.manual_seed(seed)
    vae = AutoencoderOobleck(encoder_hidden_size=6, downsampling_ratios=ratios, decoder_channels=3,
                             decoder_input_channels=3, audio_channels=2, channel_multiples=[1, 2, 4],
                             sampling_rate=SAMPLE_RATE)
    with torch.no_grad():
        # Random weights encode a clip to latents of spread ~0.05 with a posterior spread of ~0.7, so any noise
        # level drowns an init clip; a trained VAE's latents spread ~1 with a narrow posterior. Scaled to that, the
        # audio-to-audio tests can see how much of the clip a strength keeps.
        final, half = vae.encoder.conv2, vae.encoder.conv2.bias.shape[0] // 2
        final.weight_g[:half].mul_(20.0)
        final.bias[:half].mul_(20.0)
        final.bias[half:].sub_(6.0)
    hop = 2 * 4 * 8
    transformer = StableAudioDiTModel(sample_size=STABLE_AUDIO_SECONDS * SAMPLE_RATE // hop, in_channels=3,
                                      num_layers=2, attention_head_dim=4, num_key_value_attention_heads=2,
                                      out_channels=3, cross_attention_dim=4, time_proj_dim=8,
                                      global_states_input_dim=8, cross_attention_input_dim=4)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=2,
                                           num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0,
                                           is_encoder_decoder=False, use_cache=False)).eval()
    projection = StableAudioProjectionModel(text_encoder_dim=16, conditioning_dim=4, min_value=0,
                                            max_value=STABLE_AUDIO_SECONDS)
    scheduler = CosineDPMSolverMultistepScheduler(solver_order=2, prediction_type="v_prediction", sigma_data=1.0,
                                                  sigma_schedule="exponential")
    return StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection, tokenizer=tokenizer,
                               transformer=transformer, scheduler=scheduler)


def tiny_roberta_tokenizer():
    """A byte-level BPE tokenizer of the class AudioLDM2's CLAP text encoder uses, with no merges: every byte is a
    token, so any prompt tokenizes."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    alphabet = sorted(ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate(special + alphabet)}
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_tiny_audioldm2(seed: int = 0):
    import torch
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    from tools.tiny_model import tiny_t5_tokenizer

    tokenizer = tiny_roberta_tokenizer()
    tokenizer_2 = tiny_t5_tokenizer()
    tokenizer_2.model_max_length = 32
    torch.manual_seed(seed)
    unet = AudioLDM2UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=32,
                                         in_channels=4, out_channels=4, norm_num_groups=4,
                                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                         cross_attention_dim=([None, 16, 32], [None, 16, 32]), attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=1, out_channels=1, norm_num_groups=4,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4)
    text_config = ClapTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=16, intermediate_size=32,
                                 num_attention_heads=2, num_hidden_layers=1, pad_token_id=1,
                                 vocab_size=len(tokenizer), projection_dim=16)
    audio_config = ClapAudioConfig(spec_size=64, window_size=4, num_mel_bins=64, intermediate_size=32,
                                   depths=[1, 1], num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=16,
                                   projection_dim=16, patch_size=2, patch_stride=2, patch_embed_input_channels=4)
    text_encoder = ClapModel(ClapConfig(text_config=text_config.to_dict(), audio_config=audio_config.to_dict(),
                                        projection_dim=16)).eval()
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=32, d_ff=32, d_kv=8, num_heads=2,
                                             num_layers=1, relative_attention_num_buckets=8, dropout_rate=0.0,
                                             is_encoder_decoder=False, use_cache=False)).eval()
    language_model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_head=2, n_layer=1, vocab_size=16, n_ctx=64, n_positions=64,
                                                bos_token_id=0, eos_token_id=0)).eval()
    language_model.config.max_new_tokens = 4
    projection = AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(model_in_dim=8, sampling_rate=SAMPLE_RATE,
                                                    upsample_initial_channel=8, upsample_rates=[8, 8],
                                                    upsample_kernel_sizes=[16, 16], resblock_kernel_sizes=[3],
                                                    resblock_dilation_sizes=[[1, 3]], normalize_before=False))
    with torch.no_grad():  # random weights give a whisper (~1e-6) that 16-bit files round to silence
        vocoder.conv_post.weight.mul_(1e5)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    return AudioLDM2Pipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                             projection_model=projection, language_model=language_model, tokenizer=tokenizer,
                             tokenizer_2=tokenizer_2, feature_extractor=ClapFeatureExtractor(), unet=unet,
                             scheduler=scheduler, vocoder=vocoder)


VITS_CHARACTERS = list(" " + string.ascii_lowercase + string.digits + "',.!?-")


def save_tiny_vits(folder: Path, seed: int = 0, speakers: int = 1) -> Path:
    """A VITS folder as MMS-TTS ships it (character vocabulary, no phonemizer), ``speakers`` voices."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: index for index, token in enumerate(["<pad>", "<unk>", *VITS_CHARACTERS])}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = VitsTokenizer(vocab_file=str(folder / "vocab.json"), phonemize=False, add_blank=True,
                              normalize=True)
    config = VitsConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        ffn_dim=32, flow_size=16, spectrogram_bins=8, duration_predictor_num_flows=2,
                        duration_predictor_filter_channels=16, prior_encoder_num_flows=2,
                        posterior_encoder_num_wavenet_layers=1, upsample_initial_channel=16,
                        upsample_rates=[8, 4], upsample_kernel_sizes=[16, 8], resblock_kernel_sizes=[3],
                        resblock_dilation_sizes=[[1, 3]], sampling_rate=SAMPLE_RATE, num_speakers=speakers,
                        speaker_embedding_size=8 if speakers > 1 else 0)
    torch.manual_seed(seed)
    VitsModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_audio_models(root: Path, seed: int = 0) -> Path:
    """``tiny-stable-audio``, ``tiny-audioldm2``, ``tiny-vits`` (one voice) and ``tiny-vits-two`` (two) in ``root``."""
    root = Path(root)
    build_tiny_stable_audio(seed).save_pretrained(root / "tiny-stable-audio")
    build_tiny_audioldm2(seed).save_pretrained(root / "tiny-audioldm2")
    save_tiny_vits(root / "tiny-vits", seed)
    save_tiny_vits(root / "tiny-vits-two", seed + 1, speakers=2)
    return root


if __name__ == "__main__":
    print(save_tiny_audio_models(Path(sys.argv[1] if len(sys.argv) > 1 else "models/audio")))
