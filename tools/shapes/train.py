"""Train the embedded default model: a small Stable Diffusion model of the shapes world, from nothing, offline.

One command reproduces it (same seed, same thread count, same PyTorch: the same weights)::

    python -m tools.shapes.train --out models/Stable-diffusion/sfumato-shapes --threads 2 --seed 0

Stage 1 trains the autoencoder (``AutoencoderKL``) on freshly drawn images; its latent scaling factor is set from
the latents' standard deviation. Stage 2 encodes a fixed training set once and trains the text encoder
(``CLIPTextModel`` over the real, unmodified CLIP tokenizer) and the ``UNet2DConditionModel`` together, with caption
dropout for classifier-free guidance and an EMA of the weights. The result is saved as an ordinary diffusers SD 1.x
folder (safetensors, float16 to stay small; it loads in float32 as well), with a model card that records the
command, the data, the vocabulary and the evaluator's accuracy on held-out prompts.

Why v-prediction on a linear (DDPM) beta schedule: at the noisiest training step that schedule leaves almost no
signal (sqrt(alpha_bar) = 0.006), so where the shape goes and its colours must come from the caption rather than
from a faint image hidden in the noise; and v-prediction, with the loss on the predicted clean latents weighted at
least 1 at every noise level (``loss_weights``), keeps the gradient that teaches layout at high noise, which
epsilon-prediction all but drops. (In a short trial at equal cost, epsilon-prediction on this schedule got 11 % of
backgrounds right, v-prediction 100 %.)

Every random draw of a step comes from a generator seeded by (seed, stage, step), so ``--resume`` from a
checkpoint in ``OUT/.train-state`` continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.training_cli import card_command

if TYPE_CHECKING:  # torch and numpy load lazily (the CLI's --help and the card writer need neither)
    import numpy as np
    import torch

    from tools.shapes.dataset import ShapeSpec, TrainingCaption

STATE_DIR = ".train-state"
# The markers bench/eval_shapes.py --forms --card writes the forms table between (kept in step with it).
FORMS_START = "<!-- forms-table:start (bench/eval_shapes.py --forms --card) -->"
FORMS_END = "<!-- forms-table:end -->"
CAPTION_LENGTH = 77


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (the command line sets a few; the rest are the recipe)."""

    seed: int = 0
    rows: int = 1  # the shapes world: 1 row (left / centre / right) or 3 rows (a 3 x 3 grid with top / bottom)
    # Stage 1: autoencoder.
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_groups: int = 4
    vae_steps: int = 2000
    vae_batch: int = 16
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-5
    vae_edge_weight: float = 8.0  # extra loss weight on pixels near edges (small stars' points are few pixels)
    # bfloat16 autocast (weights stay float32): about 1.8x faster where bf16 runs in hardware (AMX / AVX-512 BF16,
    # CUDA), many times slower where torch emulates it (seen: 10 s per step instead of 0.6 on an AVX2 CPU).
    # None: decided by the hardware when training starts; the card and training_config.json record the choice.
    vae_bf16: bool | None = None
    # Stage 2: text encoder + UNet.
    text_hidden: int = 64
    text_layers: int = 3
    text_heads: int = 2
    unet_channels: tuple[int, ...] = (32, 64, 128)
    unet_attention: tuple[bool, ...] = (False, True, True)  # cross-attention blocks, highest resolution first
    unet_heads: tuple[int, ...] = (2, 2, 4)  # 32-wide heads: fewer, wider heads are faster on a CPU
    unet_groups: int = 8
    steps: int = 6000
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    snr_gamma: float = 5.0
    # Extra loss weight on the latent pixels of the shape and its edge (``object_masks``): a small shape covers under
    # a tenth of the latents, so an even weighting spends the model on flat background and leaves round circles
    # and five-pointed stars to chance (the autoencoder's ``vae_edge_weight`` is the same idea one stage earlier).
    object_loss_weight: float = 2.0
    # How often stage 2 draws each kind of example: (size, shape, weight) rows, every other kind weighing 1. Small
    # stars are the hardest thing in the world (five points within four latent pixels): the model trained with an
    # even draw made 17 % of them right, against 95-100 % of every other size and shape.
    example_weights: tuple[tuple[str, str, float], ...] = ()
    # The draws a weight adds (a share of 1 - 1 / weight of that kind's draws) always name the size and are never
    # captionless. Otherwise the model also learns that an unnamed size is more often small: with small stars drawn
    # 2x, "a red star on a blue background" came out small 16 times in 41 (the even draw: 2 in 41), and small stars
    # are the ones drawn wrong. False: every draw gets the usual caption (session 12's runs).
    extra_draws_name_size: bool = True
    # Of those extra draws, the share whose caption also leaves the position out (on top of the forms that drop it
    # anyway): "a small red star on a blue background" lets the model place the star, and small stars drawn
    # without a position were the no-position form's misses (read as circles, 13 of its 20 errors).
    extra_draws_drop_position: float = 0.5
    # A caption that leaves the background out gets the example drawn on ``dataset.PLAIN_BACKGROUND`` (a second
    # cached latent per example). False: the background stays the example's colour whatever the caption says (the
    # runs before session 19).
    plain_unnamed_background: bool = True
    # The share of empty captions that train on the plain backdrop too (the rest keep the example's colours). The
    # unconditional prediction must know grey as well as the eight colours: trained on the colours alone, it turned
    # a grey backdrop into orange and purple blotches at CFG 7 (guidance amplifies grey minus its nearest colour),
    # and green shapes on grey came out black (no-background foreground 88.5 % at CFG 7, 98.5 % at CFG 2).
    plain_empty_caption_share: float = 0.5
    prediction_type: str = "v_prediction"
    latent_cache: int = 32768
    # Scheduler saved with the model, and the defaults the card recommends.
    beta_schedule: str = "linear"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    sample_steps: int = 20
    # Sampler and guidance scale: the best of these on validation prompts (training combinations) becomes the
    # model's default (its saved scheduler and the card's recommendation).
    samplers: tuple[str, ...] = ("Euler", "DPM++ 2M")
    guidances: tuple[float, ...] = (2.0, 3.0, 4.5, 6.0)
    choice_prompts_per_form: int = 16  # validation prompts of every evaluation form, per candidate

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # For tests and smoke runs: the same code path in seconds (the result follows no prompt).
    "tiny": {
        "vae_channels": (8, 16), "vae_steps": 3, "vae_batch": 4, "text_layers": 1, "unet_channels": (16, 32),
        "unet_attention": (False, True), "unet_heads": (2, 2), "steps": 3, "batch": 4, "warmup": 1,
        "latent_cache": 16,
    },
}


def scheduler_config(config: TrainConfig) -> dict[str, Any]:
    """The noise schedule the model is trained with, in diffusers' scheduler config form (SD 1.x conventions)."""
    return {
        "beta_start": config.beta_start,
        "beta_end": config.beta_end,
        "beta_schedule": config.beta_schedule,
        "num_train_timesteps": 1000,
        "steps_offset": 1,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "prediction_type": config.prediction_type,
        "timestep_spacing": "leading",
    }


def build_vae(config: TrainConfig):
    """The autoencoder: downsamples by 2 per extra block (4x for three blocks: 64 px -> 16 x 16 latents)."""
    from diffusers import AutoencoderKL

    from tools.shapes.dataset import IMAGE_SIZE

    blocks = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks, block_out_channels=config.vae_channels, layers_per_block=1,
        latent_channels=4, norm_num_groups=config.vae_groups, sample_size=IMAGE_SIZE,
    )


def build_text_encoder(config: TrainConfig):
    """A narrow CLIP text encoder over the full CLIP vocabulary (only the rows the grammar uses get trained)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from modules.models.clip_vocab import VOCAB_SIZE

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=config.text_hidden, intermediate_size=config.text_hidden * 4,
        num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads,
        max_position_embeddings=CAPTION_LENGTH, hidden_act="quick_gelu", projection_dim=config.text_hidden,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))


def build_unet(config: TrainConfig, latent_size: int):
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.unet_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.unet_attention))
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4, down_block_types=down, up_block_types=up,
        block_out_channels=config.unet_channels, layers_per_block=1, attention_head_dim=config.unet_heads,
        cross_attention_dim=config.text_hidden, norm_num_groups=config.unet_groups,
    )


def _set_determinism(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set in this process (tests train more than once)
        torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _generator(seed: int, stage: int, step: int, device: str = "cpu"):
    """The generator of one step: a pure function of (seed, stage, step), so resuming changes nothing."""
    import torch

    return torch.Generator(device).manual_seed((seed * 1_000_003 + stage * 100_003 + step) % (2**63))


def _fused(device: str) -> dict[str, bool]:
    """AdamW's fused kernel: 4x faster on CPU, which matters for the 3.2M-entry token embedding."""
    return {"fused": torch_device_type(device) in ("cpu", "cuda")}


def torch_device_type(device: str) -> str:
    return device.split(":", 1)[0]


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _to_tensor(images):
    """uint8 NxHxWx3 -> float NxCxHxW in [-1, 1]."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class _StateFolder:
    """Checkpoints in OUT/.train-state, written atomically (a crash mid-write leaves the previous one)."""

    def __init__(self, out: Path):
        self.folder = out / STATE_DIR

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.pt"

    def save(self, name: str, payload: dict[str, Any]) -> None:
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        staging = self.folder / f".{name}.pt.tmp"
        torch.save(payload, staging)
        os.replace(staging, self.path(name))

    def load(self, name: str) -> dict[str, Any] | None:
        import torch

        path = self.path(name)
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def _check_same_config(saved: dict[str, Any], config: TrainConfig) -> None:
    current = json.loads(json.dumps(config.to_json()))
    saved = json.loads(json.dumps(saved))
    differing = sorted(k for k in current if saved.get(k) != current[k])
    if differing:
        raise SystemExit(f"--resume: the checkpoint was made with different settings ({', '.join(differing)})")


def train_vae(config: TrainConfig, state: _StateFolder, resume: bool, device: str, checkpoint_every: int,
              progress: bool = True):
    """Stage 1: the autoencoder, on images drawn fresh every step; returns it with its scaling factor set."""
    import torch
    from tqdm import tqdm

    from tools.shapes.dataset import training_batch

    torch.manual_seed(config.seed)
    done = state.load("vae-final") if resume else None
    if done is not None:
        _check_same_config(done["config"], config)
        vae = build_vae(config)
        vae.load_state_dict(done["vae"])
        vae.register_to_config(scaling_factor=done["scaling_factor"])
        return vae.to(device).eval()
    vae = build_vae(config).to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0, **_fused(device))
    start = 0
    saved = state.load("vae") if resume else None
    if saved is not None:
        _check_same_config(saved["config"], config)
        vae.load_state_dict(saved["vae"])
        optimizer.load_state_dict(saved["optimizer"])
        start = saved["step"]
    bar = tqdm(range(start, config.vae_steps), initial=start, total=config.vae_steps, desc="autoencoder",
               disable=not progress, dynamic_ncols=True, mininterval=2.0)
    for step in bar:
        images, _, _ = training_batch(config.seed, step * config.vae_batch, config.vae_batch, config.rows,
                                      plain=vae_plain_flags(config, step * config.vae_batch, config.vae_batch))
        pixels = _to_tensor(images).to(device).contiguous(memory_format=torch.channels_last)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config.vae_steps, config.vae_lr, min(200, config.vae_steps // 10 + 1))
        with torch.autocast(torch_device_type(device), dtype=torch.bfloat16, enabled=config.vae_bf16):
            posterior = vae.encode(pixels).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=_generator(config.seed, 1, step)).to(device)
            decoded = vae.decode(posterior.mean + posterior.std * noise).sample
        error = (decoded.float() - pixels) * edge_weights(pixels, config.vae_edge_weight)
        mean, logvar = posterior.mean.float(), posterior.logvar.float()
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
        loss = error.square().mean() + error.abs().mean() + config.vae_kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if step % 10 == 0:
            psnr = 10 * math.log10(4.0 / max(error.detach().square().mean().item(), 1e-10))
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr:.1f}dB")
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < config.vae_steps:
            state.save("vae", {"config": config.to_json(), "step": step + 1, "vae": vae.state_dict(),
                               "optimizer": optimizer.state_dict()})
    vae = vae.to(memory_format=torch.contiguous_format).eval()
    scaling = _scaling_factor(vae, config, device)
    vae.register_to_config(scaling_factor=scaling)
    state.save("vae-final", {"config": config.to_json(), "vae": vae.state_dict(), "scaling_factor": scaling})
    return vae


def vae_plain_flags(config: TrainConfig, start: int, count: int) -> list[bool]:
    """Which autoencoder examples are drawn on the plain backdrop: every fourth, when the model uses it at all."""
    return [config.plain_unnamed_background and index % 4 == 3 for index in range(start, start + count)]


def edge_weights(pixels, weight: float):
    """1 on flat areas, 1 + ``weight`` within a pixel of an edge: the loss must not drown shape detail in background."""
    import torch.nn.functional as F

    if not weight:
        return 1.0
    padded = F.pad(pixels, (1, 1, 1, 1), mode="replicate")
    horizontal = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]).abs()
    vertical = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]).abs()
    edges = (horizontal + vertical).amax(dim=1, keepdim=True).clamp(max=1.0)
    return 1.0 + weight * F.max_pool2d(edges, 3, stride=1, padding=1)


def _scaling_factor(vae, config: TrainConfig, device: str) -> float:
    """1 / std of sampled latents over held-apart images (SD's recipe), so latents enter the UNet at unit scale."""
    import torch

    from tools.shapes.dataset import training_batch

    images, _, _ = training_batch(config.seed + 1, 0, 512, config.rows)
    with torch.no_grad():
        posterior = vae.encode(_to_tensor(images).to(device)).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(
            posterior.mean.shape, generator=_generator(config.seed, 3, 0)).to(device)
    return float(1.0 / latents.std().item())


def object_masks(images: np.ndarray, specs: Sequence[ShapeSpec], latent_size: int) -> torch.Tensor:
    """Where each image's shape is, at the latents' resolution (1 on any latent pixel the shape or its antialiased
    edge touches, grown by one latent pixel so that the edge's surroundings count too), as a float tensor Nx1xHxW.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from tools.shapes.dataset import PALETTE

    backgrounds = np.asarray([PALETTE[spec.background] for spec in specs], dtype=np.float32)[:, None, None, :]
    touched = np.abs(images.astype(np.float32) - backgrounds).max(axis=-1) > 8.0
    mask = torch.from_numpy(touched.astype(np.float32))[:, None]
    mask = F.adaptive_max_pool2d(mask, latent_size)
    return F.max_pool2d(mask, 3, stride=1, padding=1)


@dataclass
class CachedLatents:
    """Stage 2's training set, encoded once: latent mean and std per example (and on the plain backdrop, when the
    recipe uses it), the examples' specs, and where each shape is at the latents' resolution."""

    means: Any
    stds: Any
    specs: list[ShapeSpec]
    masks: Any
    plain_means: Any = None
    plain_stds: Any = None


def encode_training_set(vae, config: TrainConfig, device: str, progress: bool = True) -> CachedLatents:
    """Encode examples 0..latent_cache-1 (``CachedLatents``); masks come from the palette pictures, whose geometry
    the plain ones share."""
    import torch
    from tqdm import tqdm

    from tools.shapes.dataset import training_batch

    means, stds, specs, masks, plain_means, plain_stds = [], [], [], [], [], []
    chunk = 256
    with torch.no_grad():
        for start in tqdm(range(0, config.latent_cache, chunk), desc="encoding", disable=not progress,
                          dynamic_ncols=True):
            count = min(chunk, config.latent_cache - start)
            images, _, batch_specs = training_batch(config.seed, start, count, config.rows)
            posterior = vae.encode(_to_tensor(images).to(device)).latent_dist
            means.append(posterior.mean.float().cpu())
            stds.append(posterior.std.float().cpu())
            masks.append(object_masks(images, batch_specs, posterior.mean.shape[-1]))
            specs += batch_specs
            if config.plain_unnamed_background:
                plain, _, _ = training_batch(config.seed, start, count, config.rows, plain=True)
                posterior = vae.encode(_to_tensor(plain).to(device)).latent_dist
                plain_means.append(posterior.mean.float().cpu())
                plain_stds.append(posterior.std.float().cpu())
    cached = CachedLatents(torch.cat(means), torch.cat(stds), specs, torch.cat(masks))
    if plain_means:
        cached.plain_means, cached.plain_stds = torch.cat(plain_means), torch.cat(plain_stds)
    return cached


class _Ema:
    """Exponential moving average of parameters (with the usual warm-up of the decay)."""

    def __init__(self, parameters, decay: float):
        self.decay = decay
        self.shadow = [p.detach().clone() for p in parameters]

    def update(self, parameters, step: int) -> None:
        import torch

        decay = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for shadow, param in zip(self.shadow, parameters, strict=True):
                shadow.lerp_(param.detach(), 1.0 - decay)

    def copy_to(self, parameters) -> None:
        import torch

        with torch.no_grad():
            for shadow, param in zip(self.shadow, parameters, strict=True):
                param.copy_(shadow)


def example_odds(specs: Sequence[ShapeSpec], weights: Sequence[Sequence[Any]]):
    """Each cached example's chance of being drawn, from ``TrainConfig.example_weights`` (None: an even draw)."""
    import torch

    if not weights:
        return None
    odds = torch.tensor(_example_weight_of(specs, weights), dtype=torch.float64)
    return odds / odds.sum()


def extra_draw_shares(specs: Sequence[ShapeSpec], weights: Sequence[Sequence[Any]]) -> np.ndarray | None:
    """Per cached example, the share of its draws that ``example_weights`` added (1 - 1 / weight; 0 for weight <= 1).

    A drawn example counts as one of those extra draws with this probability; the rest are distributed exactly
    as under an even draw, so captions that leave the size open keep the even draw's odds.
    """
    import numpy as np

    if not weights:
        return None
    weight = np.asarray(_example_weight_of(specs, weights), dtype=np.float64)
    return np.where(weight > 1.0, 1.0 - 1.0 / np.maximum(weight, 1.0), 0.0)


def batch_captions(config: TrainConfig, specs: Sequence[ShapeSpec], index: Sequence[int], step: int,
                   rng: np.random.Generator, extra_shares: np.ndarray | None) -> tuple[list[str], list[bool]]:
    """Stage 2's captions for the drawn examples ``index``, and for each whether its picture is the one on the plain
    backdrop (``plain_unnamed_background``: the caption names no background). Some captions are empty (for
    classifier-free guidance; ``plain_empty_caption_share`` of them on the plain backdrop), the rest in a drawn
    prompt form; the draws ``example_weights`` added name the size, are never empty, and leave the position out
    ``extra_draws_drop_position`` of the time."""
    import numpy as np

    from tools.shapes.dataset import draw_caption

    drop = rng.random(len(index)) < config.caption_dropout
    extra = np.zeros(len(index), dtype=bool)
    no_position = np.zeros(len(index), dtype=bool)
    if extra_shares is not None:  # their own generators: the even draw's captions stay exactly as they were
        extra = np.random.default_rng([config.seed, 2, step, 1]).random(len(index)) < extra_shares[np.asarray(index)]
        no_position = extra & (np.random.default_rng([config.seed, 2, step, 2]).random(len(index))
                               < config.extra_draws_drop_position)
    drawn = [None if drop[i] and not extra[i] else
             draw_caption(specs[j], rng, config.rows, bool(extra[i]), bool(no_position[i]))
             for i, j in enumerate(index)]
    captions = ["" if d is None else d.text for d in drawn]
    if not config.plain_unnamed_background:
        return captions, [False] * len(drawn)
    return captions, on_plain_backdrop(drawn, config.plain_empty_caption_share, [config.seed, 2, step, 3])


def on_plain_backdrop(drawn: Sequence[TrainingCaption | None], empty_share: float, seed: Sequence[int]) -> list[bool]:
    """Which examples of a batch train on the plain backdrop: a caption that names no background, and
    ``empty_share`` of the empty ones (None in ``drawn``). ``seed`` keys the draws for the empty captions, so the
    other captions' draws stay as they were. The base, ControlNet and motion trainers all call this."""
    import numpy as np

    empty_draws = np.random.default_rng(list(seed)).random(len(drawn))
    return [bool(empty_draws[i] < empty_share) if d is None else not d.names_background
            for i, d in enumerate(drawn)]


def where_plain(flags: Sequence[bool], plain, usual):
    """``plain`` for the examples ``flags`` marks, ``usual`` for the rest (tensors of any rank, batch first)."""
    import torch

    if not any(flags):
        return usual
    mask = torch.tensor(list(flags), device=usual.device).view(-1, *([1] * (usual.dim() - 1)))
    return torch.where(mask, plain, usual)


def _example_weight_of(specs: Sequence[ShapeSpec], weights: Sequence[Sequence[Any]]) -> list[float]:
    by_kind = {(str(size), str(shape)): float(weight) for size, shape, weight in weights}
    return [by_kind.get((spec.size, spec.shape), 1.0) for spec in specs]


def loss_weights(alphas_cumprod, timesteps, config: TrainConfig):
    """Per-sample loss weights: Min-SNR-gamma, with the high-noise steps kept at full weight.

    The v loss is (SNR + 1) x the loss on the predicted clean latents, so weighting it by
    (min(SNR, gamma) + 1) / (SNR + 1) weights the clean-latent loss by min(SNR, gamma) + 1: at least 1 at high noise,
    where the layout is decided (Min-SNR proper gives those steps almost nothing), and capped at low noise. For
    epsilon-prediction it is the usual min(SNR, gamma) / SNR.
    """
    snr = alphas_cumprod[timesteps] / (1.0 - alphas_cumprod[timesteps])
    if config.prediction_type == "v_prediction":
        return (snr.clamp(max=config.snr_gamma) + 1.0) / (snr + 1.0)
    return snr.clamp(max=config.snr_gamma) / snr


def train_denoiser(config: TrainConfig, vae, state: _StateFolder, resume: bool, device: str,
                   checkpoint_every: int, progress: bool = True):
    """Stage 2: text encoder + UNet on cached latents; returns both with their EMA weights loaded."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler
    from tqdm import tqdm

    from modules.models.clip_vocab import load_clip_tokenizer

    cached = encode_training_set(vae, config, device, progress)
    means, stds, specs, masks = cached.means, cached.stds, cached.specs, cached.masks
    scaling = vae.config.scaling_factor
    latent_size = means.shape[-1]
    tokenizer = load_clip_tokenizer()
    noise_schedule = DDPMScheduler.from_config(scheduler_config(config))
    alphas_cumprod = noise_schedule.alphas_cumprod.to(device)
    torch.manual_seed(config.seed + 2)
    text_encoder = build_text_encoder(config).to(device).train()
    # channels-last convolutions are about 15 % faster on CPU (oneDNN); the numbers are the same either way.
    unet = build_unet(config, latent_size).to(device, memory_format=torch.channels_last).train()
    parameters = list(text_encoder.parameters()) + list(unet.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.01, **_fused(device))
    ema = _Ema(parameters, config.ema_decay)
    start = 0
    saved = state.load("denoiser") if resume else None
    if saved is not None:
        _check_same_config(saved["config"], config)
        text_encoder.load_state_dict(saved["text_encoder"])
        unet.load_state_dict(saved["unet"])
        optimizer.load_state_dict(saved["optimizer"])
        ema.shadow = [t.to(device) for t in saved["ema"]]
        start = saved["step"]
    means, stds = means.to(device), stds.to(device)
    if cached.plain_means is not None:
        plain_means, plain_stds = cached.plain_means.to(device), cached.plain_stds.to(device)
    # Per latent pixel: 1 on the background, 1 + object_loss_weight on and around the shape.
    pixel_weights = (1.0 + config.object_loss_weight * masks).to(device)
    draw_odds = example_odds(specs, config.example_weights)
    extra_shares = extra_draw_shares(specs, config.example_weights) if config.extra_draws_name_size else None
    token_cache: dict[str, list[int]] = {}

    def tokens(captions: list[str]):
        missing = [c for c in dict.fromkeys(captions) if c not in token_cache]
        if missing:
            ids = tokenizer(missing, padding="max_length", max_length=CAPTION_LENGTH, truncation=True).input_ids
            token_cache.update(zip(missing, ids, strict=True))
        return torch.tensor([token_cache[c] for c in captions], dtype=torch.long, device=device)

    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="text encoder + unet",
               disable=not progress, dynamic_ncols=True, mininterval=2.0)
    started, running = time.perf_counter(), None
    for step in bar:
        generator = _generator(config.seed, 2, step)
        rng = np.random.default_rng([config.seed, 2, step])
        if draw_odds is None:
            index = torch.randint(len(specs), (config.batch,), generator=generator)
        else:
            index = torch.multinomial(draw_odds, config.batch, replacement=True, generator=generator)
        shape = (config.batch, *means.shape[1:])
        latent_noise = torch.randn(shape, generator=generator).to(device)
        noise = torch.randn(shape, generator=generator).to(device)
        timesteps = torch.randint(0, noise_schedule.config.num_train_timesteps, (config.batch,),
                                  generator=generator).to(device)
        index_d = index.to(device)
        captions, plain = batch_captions(config, specs, index.tolist(), step, rng, extra_shares)
        mean, std = means[index_d], stds[index_d]
        if any(plain):
            mean, std = where_plain(plain, plain_means[index_d], mean), where_plain(plain, plain_stds[index_d], std)
        latents = (mean + std * latent_noise) * scaling
        noisy = noise_schedule.add_noise(latents, noise, timesteps)
        if config.prediction_type == "v_prediction":
            target = noise_schedule.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config.steps, config.lr, config.warmup)
        hidden = text_encoder(tokens(captions))[0]
        prediction = unet(noisy.contiguous(memory_format=torch.channels_last), timesteps, hidden).sample
        error = (prediction.float() - target.float()).square() * pixel_weights[index_d]
        per_sample = error.mean(dim=(1, 2, 3))
        loss = (per_sample * loss_weights(alphas_cumprod, timesteps, config)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        ema.update(parameters, step)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 10 == 0:
            pace = (time.perf_counter() - started) / (step - start + 1)
            bar.set_postfix(loss=f"{running:.4f}", s_per_step=f"{pace:.2f}")
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < config.steps:
            state.save("denoiser", {
                "config": config.to_json(), "step": step + 1, "text_encoder": text_encoder.state_dict(),
                "unet": unet.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema.shadow,
            })
    ema.copy_to(parameters)
    return text_encoder.eval(), unet.eval()


def sampler_scheduler(config: TrainConfig, sampler: str):
    """The model's scheduler as the named A1111 sampler (what ``from_pretrained`` will hand out by default)."""
    from modules.image.samplers import make_scheduler, resolve_sampler

    scheduler = make_scheduler(resolve_sampler(sampler), scheduler_config(config))
    # The config remembers the model's own schedule under a private key; a saved model needs only the schedule.
    return type(scheduler).from_config({k: v for k, v in scheduler.config.items() if not k.startswith("_")})


def _record_defaults(out: Path, config: TrainConfig, recommended: dict[str, Any],
                     timing: dict[str, Any] | None = None, command: str | None = None) -> None:
    """Save the chosen sampler as the model's scheduler, and the recipe plus the recommendation as JSON (with how
    long training took and the command, so ``--finish`` can write the card of a folder whose evaluation was cut
    off)."""
    sampler_scheduler(config, recommended["sampler"]).save_pretrained(str(out / "scheduler"))
    record = {**config.to_json(), "recommended": recommended}
    if timing is not None:
        record["timing"] = timing
    if command is not None:
        record["command"] = command
    (out / "training_config.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def build_pipeline(config: TrainConfig, vae, text_encoder, unet):
    """The trained parts as a txt2img pipeline with the real CLIP tokenizer and the model's default sampler."""
    import torch
    from diffusers import StableDiffusionPipeline

    from modules.models.clip_vocab import load_clip_tokenizer

    return StableDiffusionPipeline(
        vae=vae.float().cpu(), text_encoder=text_encoder.float().cpu(), tokenizer=load_clip_tokenizer(),
        unet=unet.float().cpu().to(memory_format=torch.contiguous_format),
        scheduler=sampler_scheduler(config, config.samplers[0]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def halve_weights(folder: Path) -> None:
    """Store every float32 tensor of a saved pipeline as float16 (half the size); configs keep float32.

    The configs still say float32, so ``from_pretrained`` without a dtype (or with ``torch_dtype=torch.float32``)
    builds float32 modules and upcasts the stored values.
    """
    import torch
    from safetensors.torch import load_file, save_file

    for path in sorted(Path(folder).glob("*/*.safetensors")):
        tensors = load_file(str(path))
        halved = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
        staging = path.with_suffix(".tmp")
        save_file(halved, str(staging), metadata={"format": "pt"})
        os.replace(staging, path)


def folder_size(folder: Path) -> int:
    """Bytes of a model folder (without training state)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and STATE_DIR not in p.parts)


def with_hardware_choices(config: TrainConfig, device: str) -> TrainConfig:
    """Settle the settings left to the hardware (``vae_bf16=None``), so the saved recipe says what ran."""
    if config.vae_bf16 is not None:
        return config
    return dataclasses.replace(config, vae_bf16=native_bf16(device))


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CPU with AVX-512 BF16 or AMX, a CUDA GPU with bf16."""
    import torch

    from modules.runtime.devices import cpu_flags, cpu_native_bf16

    kind = torch_device_type(device)
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return kind == "cpu" and cpu_native_bf16(cpu_flags())


def train(out: Path, config: TrainConfig, *, resume: bool = False, threads: int = 2, device: str = "cpu",
          checkpoint_every: int = 250, eval_prompts: int = 256, keep_state: bool = False, half: bool = True,
          command: str | None = None, progress: bool = True, form_prompts: int = 200) -> Path:
    """Run both stages and save the model folder (with its card) to ``out``; returns ``out``."""
    import torch

    out = Path(out)
    _set_determinism(threads)
    config = with_hardware_choices(config, device)
    state = _StateFolder(out)
    if not resume and state.folder.exists():
        shutil.rmtree(state.folder)
    clock = time.perf_counter()
    vae = train_vae(config, state, resume, device, checkpoint_every, progress)
    vae_minutes = (time.perf_counter() - clock) / 60
    text_encoder, unet = train_denoiser(config, vae, state, resume, device, checkpoint_every, progress)
    minutes = (time.perf_counter() - clock) / 60
    pipe = build_pipeline(config, vae, text_encoder, unet)
    staging = out.parent / f".{out.name}.saving"
    if staging.exists():
        shutil.rmtree(staging)
    pipe.save_pretrained(str(staging), safe_serialization=True)
    if half:
        halve_weights(staging)
    # Swap in the new model, keeping the training state (it lives inside ``out``) for a later --resume.
    out.mkdir(parents=True, exist_ok=True)
    for child in out.iterdir():
        if child.name != STATE_DIR:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for child in staging.iterdir():
        os.replace(child, out / child.name)
    staging.rmdir()
    timing = {"threads": threads, "device": device, "vae_minutes": vae_minutes, "minutes": minutes,
              "torch": torch.__version__}
    command = command or _command_line(out, config, threads)
    # The weights are saved: record the recipe now, so an evaluation cut off can be redone with --finish.
    _record_defaults(out, config, _first_candidates(config), timing, command)
    finish(out, config, timing, command, device=device, eval_prompts=eval_prompts, form_prompts=form_prompts)
    if not keep_state and state.folder.exists():
        shutil.rmtree(state.folder)
    return out


def _first_candidates(config: TrainConfig) -> dict[str, Any]:
    return {"sampler": config.samplers[0], "steps": config.sample_steps, "guidance": config.guidances[0]}


def finish(out: Path, config: TrainConfig, timing: dict[str, Any], command: str, *, device: str = "cpu",
           eval_prompts: int = 256, form_prompts: int = 200) -> Path:
    """Evaluate a saved model folder: choose its default sampler and guidance, record them, write its card."""
    recommended, report = _first_candidates(config), None
    if eval_prompts:
        recommended, report = _evaluate_saved(out, config, eval_prompts, device, form_prompts)
    _record_defaults(out, config, recommended, timing, command)
    write_model_card(out, config, command, timing, report, recommended)
    return out


def read_saved_recipe(out: Path) -> tuple[TrainConfig, dict[str, Any], str]:
    """The recipe, training time and command a model folder's training_config.json holds (for ``--finish``)."""
    path = Path(out) / "training_config.json"
    if not path.is_file():
        raise SystemExit(f"--finish: {path} is missing (only a folder this trainer saved can be finished)")
    record = json.loads(path.read_text(encoding="utf-8"))
    if "timing" not in record or "command" not in record:
        raise SystemExit(f"--finish: {path} has no timing/command (it was saved before --finish existed)")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return _config_from(**{k: v for k, v in record.items() if k in fields}), record["timing"], record["command"]


def _frozen(value: Any) -> Any:
    """JSON lists as tuples, nested ones too, as the frozen recipe holds them."""
    return tuple(_frozen(item) for item in value) if isinstance(value, list | tuple) else value


def _config_from(**values: Any) -> TrainConfig:
    """A recipe from JSON-shaped values (``--set`` overrides, a saved training_config.json): one normalisation for
    both, so a finished folder's recipe equals the one that trained it."""
    values = {k: _frozen(v) for k, v in values.items()}
    if "unet_attention" in values:
        values["unet_attention"] = tuple(bool(x) for x in values["unet_attention"])
    return TrainConfig(**values)


def _evaluate_saved(out: Path, config: TrainConfig, count: int, device: str,
                    form_prompts: int = 200) -> tuple[dict[str, Any], dict[str, Any]]:
    """Choose the default sampler and guidance, then measure the saved model on the held-out prompts.

    Returns the recommendation and the report (the table with the autoencoder's ceiling and the metric's check on
    the dataset images, timings, the choice's own scores, and ``form_prompts`` held-out prompts of every prompt
    form at the chosen CFG and at CFG 7: the table ``bench/eval_shapes.py --forms`` prints).
    """
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    from tools.shapes import dataset as world
    from tools.shapes import metrics as metrics

    pipe = StableDiffusionPipeline.from_pretrained(str(out), torch_dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    trials = {}
    for sampler in config.samplers:
        for guidance in config.guidances:
            # Every prompt form people type, on training combinations (the held-out ones stay unseen): a default
            # that only suits the full caption is what issue 12 was about.
            tally = metrics.Tally()
            for form in world.EVALUATION_FORMS:
                cases = world.form_cases(form, config.choice_prompts_per_form, seed=4321, rows=config.rows,
                                         split="validation")
                images = metrics.generate(pipe, cases, steps=config.sample_steps, guidance=guidance,
                                          sampler=sampler, form=form)
                for image, (spec, _) in zip(images, cases, strict=True):
                    tally.add(metrics.score_named(image, spec, form.named))
            trials[(sampler, guidance)] = tally
    # Best "everything named right"; ties go to the best mean over the attributes, then to the earlier candidate.
    sampler, guidance = max(trials, key=lambda k: (trials[k].accuracy()["all"], sum(trials[k].accuracy().values())))
    recommended = {"sampler": sampler, "steps": config.sample_steps, "guidance": guidance}

    cases = world.evaluation_cases(count, rows=config.rows)
    specs = [spec for spec, _ in cases]
    truth = np.stack([world.render(spec, np.random.default_rng(seed)) for spec, seed in cases])
    with torch.no_grad():
        pixels = _to_tensor(truth).to(device)
        decoded = pipe.vae.decode(pipe.vae.encode(pixels).latent_dist.mode()).sample
        round_trip = ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    started = time.perf_counter()
    generated, images = metrics.evaluate(pipe, count, steps=config.sample_steps, guidance=guidance, sampler=sampler,
                                         rows=config.rows)
    seconds = (time.perf_counter() - started) / max(1, count)
    latency = []
    for attempt in range(4):  # one image, as the app makes it; the first call is a warm-up
        clock = time.perf_counter()
        pipe(cases[0][0].caption(), num_inference_steps=config.sample_steps, guidance_scale=guidance,
             generator=torch.Generator().manual_seed(attempt))
        latency.append(time.perf_counter() - clock)
    rows = {
        f"generated ({sampler}, {config.sample_steps} steps, CFG {guidance:g})": generated,
        "autoencoder round trip (ceiling)": metrics.tally(round_trip, specs),
        "dataset images (metric check)": metrics.tally(truth, specs),
    }
    choice = metrics.markdown_table({f"{s}, CFG {g:g}": t for (s, g), t in trials.items()}, "all named")
    forms_table = None
    if form_prompts:
        guidances = list(dict.fromkeys([guidance, metrics.HIGH_CFG]))
        results, _ = metrics.evaluate_forms(pipe, world.EVALUATION_FORMS, form_prompts, steps=config.sample_steps,
                                            guidances=guidances, default_guidance=guidance, sampler=sampler,
                                            rows=config.rows)
        forms_table = metrics.forms_table(results, sampler, config.sample_steps)
    grid = np.concatenate([np.concatenate([np.asarray(im) for im in images[r * 8:(r + 1) * 8]], axis=1)
                           for r in range(min(4, len(images) // 8))], axis=0) if len(images) >= 8 else None
    if grid is not None:
        from PIL import Image

        Image.fromarray(grid).save(out / "samples.png")
    report = {"table": metrics.markdown_table(rows), "choice_table": choice, "count": count,
              "forms_table": forms_table, "form_prompts": form_prompts,
              "seconds_per_image": seconds, "latency": sorted(latency[1:])[1]}
    return recommended, report


def _command_line(out: Path, config: TrainConfig, threads: int) -> str:
    parts = ["python -m tools.shapes.train", f"--out {out}", f"--threads {threads}", f"--seed {config.seed}"]
    defaults = TrainConfig()
    if config.steps != defaults.steps:
        parts.append(f"--steps {config.steps}")
    if config.vae_steps != defaults.vae_steps:
        parts.append(f"--vae-steps {config.vae_steps}")
    return " ".join(parts)


def _plain_note(config: TrainConfig) -> str:
    """The card's sentence on ``plain_unnamed_background`` (empty when the recipe does not use it)."""
    if not config.plain_unnamed_background:
        return ""
    share = config.plain_empty_caption_share
    empty = (f"{share:.0%} of the empty captions train on grey too and the rest keep the picture's own colours,"
             " so the\n   unconditional prediction that guidance pushes away from knows the grey backdrop."
             if share else "the empty caption keeps the picture's own colours.")
    return ("\n   A caption that names no background trains on the same picture drawn on plain grey"
            f" (RGB 128, 128, 128),\n   so \"a green star\" means a green star on grey; {empty}")


def _draw_odds_note(config: TrainConfig) -> str:
    """The card's sentence on ``example_weights`` (empty for an even draw)."""
    if not config.example_weights:
        return ""
    kinds = ", ".join(f"{size} {shape}s {float(weight):g}x" for size, shape, weight in config.example_weights)
    named = (" The added draws always name the size (and are never captionless), so a prompt that leaves the size open"
             " keeps the even draw's odds." if config.extra_draws_name_size else "")
    placed = (f" {config.extra_draws_drop_position:.0%} of them also leave the position out, so the model learns to"
              " draw those kinds where it likes." if named and config.extra_draws_drop_position else "")
    return f"\n   Examples drawn more often than the others (`example_weights`): {kinds}.{named}{placed}"


def write_model_card(out: Path, config: TrainConfig, command: str, timing: dict[str, Any],
                     report: dict[str, Any] | None, recommended: dict[str, Any]) -> Path:
    """README.md of the model folder: how it was made, what it knows, how well it does."""
    from tools.shapes import dataset as world
    from tools.shapes.metrics import ATTRIBUTES

    size_mb = folder_size(out) / 1e6
    accuracy = report["table"] if report else "_Not measured: run `python bench/eval_shapes.py MODEL --card`._"
    choice = (f"The default sampler and guidance scale were chosen on {config.choice_prompts_per_form} validation "
              f"prompts of each prompt form (training combinations and captions, other seeds), by the share of images "
              f"with everything the prompt named right:\n\n"
              f"{report['choice_table']}" if report else "")
    speed = (f"One image ({recommended['steps']} steps, CFG, batch 1) takes {report['latency']:.2f} s "
             f"({timing['device']}, {timing['threads']} thread(s)); in batches of 16, "
             f"{report['seconds_per_image']:.3f} s per image.\n\n![samples](samples.png)" if report else "")
    forms_count = report.get("form_prompts", 200) if report else 200
    forms = (f"{FORMS_START}\n{report['forms_table']}\n{FORMS_END}" if report and report.get("forms_table") else
             f"{FORMS_START}\n_Not measured: run `python bench/eval_shapes.py MODEL --forms --card`._\n{FORMS_END}")
    grammar = world.__doc__.split("Caption grammar", 1)[1].split("Geometry", 1)[0].strip()
    weights = ", ".join(f"{_form_label(form)} {weight:.0%}" for form, weight in world.FORM_WEIGHTS.items())
    grammar = grammar.replace("``FORM_WEIGHTS``", f"these weights ({weights})").replace("::", ":")
    where = ("a 3 x 3 grid (top / middle / bottom x left / centre / right)" if config.rows == 3 else
             "left / centre / right, vertically centred (this model knows no top or bottom)")
    vae_config = json.loads((out / "vae" / "config.json").read_text(encoding="utf-8"))
    scaling = f"{vae_config['scaling_factor']:.4f}"
    text = f"""---
license: agpl-3.0
library_name: diffusers
pipeline_tag: text-to-image
tags: [stable-diffusion, sfumato, shapes]
---

# Sfumato shapes — the embedded default model

A small Stable Diffusion 1.x model (CLIP text encoder, conditional UNet, KL autoencoder, the real CLIP
tokenizer) trained from scratch by Sfumato's own script on a procedurally drawn world of coloured shapes. It
follows prompts such as "a large red circle on the left, on a blue background", works with no network, and loads
like any SD 1.x diffusers folder (`StableDiffusionPipeline`, `StableDiffusionImg2ImgPipeline`,
`StableDiffusionInpaintPipeline`).

- **Default size:** {world.IMAGE_SIZE} x {world.IMAGE_SIZE}. **Default sampler:** {recommended["sampler"]}, \
{recommended["steps"]} steps, CFG {recommended["guidance"]:g} (the saved scheduler is that sampler's).
- **Prediction:** {config.prediction_type}; {config.beta_schedule} betas {config.beta_start}–{config.beta_end},
  1000 training steps, `steps_offset` 1, "leading" spacing.
- **Size on disk:** {size_mb:.1f} MB (weights stored as float16; they load as float32 too).

## How it was trained
```
{command}
```
Took {timing['minutes']:.1f} minutes on {timing['threads']} CPU thread(s) ({timing['device']}, torch \
{timing['torch']}); the autoencoder stage {timing['vae_minutes']:.1f} of them. The same command, seed, thread count
and PyTorch version give the same weights; `--resume` continues from `.train-state/` after an interruption.

1. Autoencoder (`AutoencoderKL`, channels {config.vae_channels}, {config.vae_groups} groups per norm): \
{config.vae_steps} steps of
   batch {config.vae_batch} on freshly drawn images, AdamW {config.vae_lr:g}, MSE + L1 + {config.vae_kl_weight:g} x KL,
   bfloat16 autocast {"on" if config.vae_bf16 else "off"}; latents 4 x 16 x 16, scaling factor = 1 / std of the
   latents ({scaling}).
2. Text encoder (`CLIPTextModel`, {config.text_layers} layers, width {config.text_hidden}) and UNet
   (`UNet2DConditionModel`, channels {config.unet_channels}, cross-attention {config.unet_attention}) together:
   {config.steps} steps of batch {config.batch} over {config.latent_cache} cached latents, AdamW {config.lr:g} with
   {config.warmup} warm-up steps and cosine decay, EMA {config.ema_decay}, {config.caption_dropout:.0%} empty
   captions (for classifier-free guidance), {config.prediction_type} loss weighted by Min-SNR (gamma
   {config.snr_gamma:g}) on the predicted latents, never below the plain v loss, and by 1 + \
{config.object_loss_weight:g} on the latent
   pixels of the shape and its edge. Captions are drawn in every prompt form (see the grammar below).\
{_plain_note(config)}{_draw_odds_note(config)}

The tokenizer is the real, unmodified CLIP BPE tokenizer, so the text encoder keeps the full 49,408-row embedding;
only the rows of the grammar's words are trained. Stored as float16 that table is 6.3 MB, which keeps the whole
model small while any stock `CLIPTokenizer` reads the prompts.

All settings are in `training_config.json`.

## Data and vocabulary
{world.IMAGE_SIZE} x {world.IMAGE_SIZE} images of one shape on a flat background, drawn by
`tools/shapes/dataset.py` (antialiased, deterministic from the seed). Shapes: {", ".join(world.SHAPES)}.
Colours (foreground and background, always different): {", ".join(world.COLOURS)}. Sizes: small (box
{world.SIZE_RANGES["small"][0]}–{world.SIZE_RANGES["small"][1]} px), large ({world.SIZE_RANGES["large"][0]}–\
{world.SIZE_RANGES["large"][1]} px). Positions: {where}.

Caption grammar {grammar}

Words outside this vocabulary reach embedding rows that were never trained; the model ignores them at best.

## Measured accuracy
`python bench/eval_shapes.py MODEL` generates {report['count'] if report else 256} held-out prompts (attribute
combinations that training never drew, one fixed seed each) and measures from the pixels
({", ".join(ATTRIBUTES)}; `tools/shapes/metrics.py`).

{accuracy}

### By prompt form
`python bench/eval_shapes.py MODEL --forms --card` writes each prompt form separately, {forms_count} prompts per
form and CFG, on combinations held out for that form (a held-out short prompt was never a training caption
either); an attribute the prompt does not name is not scored ("—"). ✓ / ✗: the targets of issue 12.

{forms}

{speed}

{choice}
"""
    path = out / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def _form_label(parts: tuple[bool, bool, bool]) -> str:
    """A training form's name from its (size, where, background) flags, for the model card."""
    names = [n for n, on in zip(("size", "position", "background"), parts, strict=True) if on]
    return "full" if len(names) == 3 else ("colour + shape" + "".join(f" + {n}" for n in names))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.shapes.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--steps", type=int, help="text encoder + UNet steps")
    parser.add_argument("--vae-steps", type=int, help="autoencoder steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (results depend on it: keep it fixed)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/.train-state")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (0: none)")
    parser.add_argument("--eval-prompts", type=int, default=256, help="held-out prompts to evaluate (0: skip)")
    parser.add_argument("--form-prompts", type=int, default=200,
                        help="held-out prompts per prompt form and CFG for the card's forms table (0: skip)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a recipe setting, e.g. --set guidance=6 --set 'unet_attention=[1,1,1]'")
    parser.add_argument("--device", default="cpu", help="cpu (reference) or cuda for experiments")
    parser.add_argument("--keep-state", action="store_true", help="keep .train-state after saving")
    parser.add_argument("--full-precision", action="store_true", help="save float32 weights")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--finish", action="store_true",
                        help="only evaluate the model already saved in OUT and write its defaults and card (after "
                             "an evaluation that was cut off; the recipe and timing come from its training_config)")
    return parser.parse_args(argv)


def make_config(preset: str = "default", seed: int = 0, steps: int | None = None, vae_steps: int | None = None,
                overrides: list[str] | None = None) -> TrainConfig:
    """The recipe: defaults, then the preset, then explicit overrides."""
    values: dict[str, Any] = {**PRESETS[preset], "seed": seed}
    if steps is not None:
        values["steps"] = steps
    if vae_steps is not None:
        values["vae_steps"] = vae_steps
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for item in overrides or []:
        key, _, raw = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--set: unknown setting {key!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare string, e.g. --set sampler=Euler
        values[key] = value
    return _config_from(**values)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.finish:
        _set_determinism(args.threads)
        config, timing, command = read_saved_recipe(args.out)
        finish(args.out, config, timing, command, device=args.device, eval_prompts=args.eval_prompts,
               form_prompts=args.form_prompts)
        print(f"Evaluated {args.out}; card written ({folder_size(args.out) / 1e6:.1f} MB)")
        return 0
    config = make_config(args.preset, args.seed, args.steps, args.vae_steps, args.set)
    command = card_command("tools.shapes.train", sys.argv[1:] if argv is None else argv)
    out = train(args.out, config, resume=args.resume, threads=args.threads, device=args.device,
                checkpoint_every=args.checkpoint_every, eval_prompts=args.eval_prompts,
                keep_state=args.keep_state, half=not args.full_precision, command=command,
                progress=not args.quiet, form_prompts=args.form_prompts)
    print((out / "README.md").read_text(encoding="utf-8").split("## Measured accuracy", 1)[-1])
    print(f"Saved to {out} ({folder_size(out) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
