"""Train the embedded sound model: a tiny Stable Audio pipeline on the synthesised world of ``world.py``.
Offline, on the CPU, in under an hour::

    python -m tools.sound.train --out models/audio/sfumato-sounds --threads 2 --seed 0

Two stages, each checkpointed in ``OUT/.train-state`` (``--resume`` continues where a run stopped):

1. ``AutoencoderOobleck`` whose decoder is an oscillator bank written into its layers (``oscillators.py``: the
   latent of each 256-sample frame is the frequency and the pure, buzzy and noise amplitudes, standardised), built
   rather than trained, and whose encoder is fitted to read those controls back from waveforms (crops of freshly
   synthesised clips). A quick check then measures held-out clips passed through the autoencoder alone (printed,
   and kept in ``training_config.json``).
2. A ``T5EncoderModel`` (over a Unigram tokenizer of the caption words, built here), the
   ``StableAudioProjectionModel`` and a ``StableAudioDiTModel`` trained together on the exact latents (controls) of
   a fixed set of sounds, with the v-objective of ``CosineDPMSolverMultistepScheduler``'s EDM preconditioning
   (sigma = tan(t pi/2), t uniform) and captions dropped (all conditioning tokens zeroed, as the pipeline's
   unconditional half) for CFG.

Every random draw of a step comes from (seed, stage, step), the clips from (seed, index), so the same seed and
thread count give the same weights, and ``--resume`` ends where an uninterrupted run would.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.sound import oscillators, world
from tools.training_cli import card_command, reproduce_command, trainer_parser

STATE_DIR = ".train-state"
EVAL_START = "<!-- sound-eval:start (bench/eval_sound.py --card) -->"
EVAL_END = "<!-- sound-eval:end -->"


@dataclass(frozen=True)
class SoundConfig:
    """Everything that decides the trained weights (the command line sets a few)."""

    seed: int = 0
    # Autoencoder: the decoder is the oscillator bank of ``oscillators.py`` (built, not trained); the encoder
    # learns to read its controls back from waveforms, on crops of fresh clips.
    ae_steps: int = 2000
    ae_batch: int = 16
    ae_crop: int = 4096  # samples of a training crop (0.512 s, 16 latent frames)
    ae_lr: float = 2e-3
    # Text encoder and tokenizer.
    max_tokens: int = 12
    t5_width: int = 64
    t5_layers: int = 2
    t5_heads: int = 4
    train_text_encoder: bool = True  # False: a frozen random T5, only the projection learns
    # Diffusion transformer.
    conditioning_dim: int = 64
    dit_layers: int = 6
    dit_heads: int = 4
    dit_head_dim: int = 16
    dit_kv_heads: int = 2
    dit_time_dim: int = 64
    examples: int = 16384  # the fixed sounds whose controls the transformer learns
    steps: int = 30000
    batch: int = 32
    lr: float = 6e-4
    warmup: int = 200
    ema_decay: float = 0.998
    caption_dropout: float = 0.1
    sigma_min: float = 0.03
    sigma_max: float = 80.0
    # Recommended sampling (recorded; the evaluator reads it).
    sample_steps: int = 20
    guidance: float = 2.0  # measured best on 480 held-out prompts (seed 4321) of CFG 2, 4, 7

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def autoencoder_json(self) -> dict[str, Any]:
        """The settings stage 1 depends on: its checkpoint stays valid when only the later stages change."""
        return {k: v for k, v in self.to_json().items() if k == "seed" or k.startswith("ae_")}


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # For tests and smoke runs: the same code path in seconds (the result makes noise, not sounds).
    "tiny": {"ae_steps": 2, "ae_batch": 2, "ae_crop": 1024, "t5_width": 16, "t5_layers": 1, "t5_heads": 2,
             "conditioning_dim": 16, "dit_layers": 1, "dit_heads": 2, "dit_head_dim": 8, "dit_kv_heads": 1,
             "dit_time_dim": 8, "examples": 8, "steps": 3, "batch": 4, "warmup": 1, "sample_steps": 4},
}


def make_config(preset: str = "default", seed: int = 0, steps: int | None = None,
                overrides: list[str] | None = None) -> SoundConfig:
    """The recipe: defaults, then the preset, then explicit ``KEY=JSON`` overrides."""
    values: dict[str, Any] = {**PRESETS[preset], "seed": seed}
    if steps is not None:
        values["steps"] = steps
    fields = {f.name for f in dataclasses.fields(SoundConfig)}
    for item in overrides or []:
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key not in fields:
            raise SystemExit(f"--set: unknown setting {key!r}")
        values[key] = tuple(value) if isinstance(value, list) else value
    return SoundConfig(**values)


# ----------------------------------------------------------------------------------------------- building blocks


def build_tokenizer(config: SoundConfig):
    """A T5 tokenizer (the class the pipeline expects) whose Unigram pieces are the caption words, with single
    characters as a fallback so any prompt turns into ids; ``</s>`` closes each sequence as in T5."""
    import string

    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -8.0)]
    pieces += [("\u2581" + word, -1.0) for word in world.vocabulary()]
    characters = string.ascii_lowercase + string.digits + string.punctuation
    pieces += [("\u2581" + c, -9.0) for c in characters] + [(c, -10.0) for c in characters]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=config.max_tokens)


def build_text_encoder(config: SoundConfig, vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=config.t5_width, d_kv=config.t5_width // config.t5_heads,
        d_ff=2 * config.t5_width, num_layers=config.t5_layers, num_heads=config.t5_heads,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def latent_frames(config: SoundConfig) -> int:
    del config  # the oscillator decoder fixes the frame (256 samples)
    return oscillators.FRAMES


def build_projection(config: SoundConfig):
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel

    return StableAudioProjectionModel(text_encoder_dim=config.t5_width, conditioning_dim=config.conditioning_dim,
                                      min_value=0, max_value=int(world.SOUND_SECONDS))


def build_transformer(config: SoundConfig):
    from diffusers import StableAudioDiTModel

    channels = len(oscillators.CHANNELS)
    return StableAudioDiTModel(
        sample_size=latent_frames(config), in_channels=channels, out_channels=channels,
        num_layers=config.dit_layers, attention_head_dim=config.dit_head_dim,
        num_attention_heads=config.dit_heads, num_key_value_attention_heads=config.dit_kv_heads,
        cross_attention_dim=config.dit_heads * config.dit_head_dim, time_proj_dim=config.dit_time_dim,
        global_states_input_dim=2 * config.conditioning_dim, cross_attention_input_dim=config.conditioning_dim)


def scheduler_config(config: SoundConfig) -> dict[str, Any]:
    return {"sigma_min": config.sigma_min, "sigma_max": config.sigma_max, "sigma_data": 1.0,
            "sigma_schedule": "exponential", "solver_order": 2, "prediction_type": "v_prediction",
            "solver_type": "midpoint", "final_sigmas_type": "zero"}


def _set_determinism(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set in this process (tests train more than once)
        torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _generator(seed: int, stage: int, step: int):
    """The generator of one step: a pure function of (seed, stage, step), so resuming changes nothing."""
    import torch

    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + stage * 100_003 + step) % (2**63))


def learning_rate(step: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then constant (the EMA averages): a run stopped by time equals one planned that short."""
    return peak * min(1.0, (step + 1) / max(1, warmup))


class _StateFolder:
    """Checkpoints in OUT/.train-state, written atomically (a crash mid-write keeps the previous one)."""

    def __init__(self, out: Path):
        self.folder = Path(out) / STATE_DIR

    def save(self, name: str, payload: dict[str, Any]) -> None:
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        staging = self.folder / f".{name}.pt.tmp"
        torch.save(payload, staging)
        os.replace(staging, self.folder / f"{name}.pt")

    def load(self, name: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        import torch

        path = self.folder / f"{name}.pt"
        if not path.is_file():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["config"] != settings:
            raise SystemExit("--resume: the checkpoint was made with other settings")
        return saved


# ----------------------------------------------------------------------------------------------- stage 1


def _encoder_batch(config: SoundConfig, step: int, mean, spread):
    """Crops of fresh clips (drawn from (seed, step)) on latent-frame boundaries, near an event, with the
    standardised controls of their frames and where the frequency is defined (tones and the frames beside them)."""
    import numpy as np
    import torch

    rng = np.random.default_rng([config.seed, 1, step])
    frames = config.ae_crop // oscillators.HOP
    clips, targets, tonal = [], [], []
    for i in range(config.ae_batch):
        spec, audio = world.example(config.seed + 10_000, step * config.ae_batch + i)
        start, _ = spec.events[int(rng.integers(len(spec.events)))]
        first = int(start * world.SAMPLE_RATE) // oscillators.HOP - int(rng.integers(frames // 2 + 1))
        first = int(np.clip(first, 0, oscillators.FRAMES - frames))
        control = oscillators.controls(spec)[:, first:first + frames]
        clips.append(audio[first * oscillators.HOP:(first + frames) * oscillators.HOP])
        targets.append((control - mean[:, None]) / spread[:, None])
        sounding = control[1] + control[2] > 0
        tonal.append(sounding | np.roll(sounding, 1) | np.roll(sounding, -1))
    return (torch.from_numpy(np.stack(clips))[:, None], torch.tensor(np.stack(targets), dtype=torch.float32),
            torch.from_numpy(np.stack(tonal)))


def train_autoencoder(config: SoundConfig, statistics: tuple, state: _StateFolder, resume: bool,
                      checkpoint_every: int, progress: bool):
    """Stage 1: the autoencoder whose decoder is the oscillator bank, with its encoder fitted to the controls
    (mean squared error; the frequency only where a tone sounds). Returns it (eval mode) and the seconds its
    steps took (over every resumed turn)."""
    import torch
    from tqdm import tqdm

    mean, spread = statistics
    vae = oscillators.build_vae(mean, spread, config.seed).train()
    encoder = [p for p in vae.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(encoder, lr=config.ae_lr, weight_decay=0.0)
    start, seconds = 0, 0.0
    saved = state.load("autoencoder", config.autoencoder_json()) if resume else None
    if saved is not None:
        vae.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start, seconds = saved["step"], float(saved["seconds"])
    clock = time.perf_counter()
    bar = tqdm(range(start, config.ae_steps), initial=start, total=config.ae_steps, desc="encoder",
               disable=not progress, dynamic_ncols=True, mininterval=2.0)
    running = None
    half = len(oscillators.CHANNELS)
    for step in bar:
        audio, target, tonal = _encoder_batch(config, step, mean, spread)
        found = vae.encoder(audio)[:, :half]
        error = (found - target).square()
        loss = error[:, 1:].mean() + (error[:, 0] * tonal).sum() / tonal.sum().clamp(min=1)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config.ae_lr, 50) * (0.1 if step > 0.8 * config.ae_steps else 1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder, 1.0)
        optimizer.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 5 == 0:
            pace = (time.perf_counter() - clock) / (step - start + 1)
            bar.set_postfix(loss=f"{running:.4f}", s_per_step=f"{pace:.2f}")
        done = step + 1
        if (checkpoint_every and done % max(1, checkpoint_every // 10) == 0) or done == config.ae_steps:
            state.save("autoencoder", {"config": config.autoencoder_json(), "step": done, "model": vae.state_dict(),
                                       "optimizer": optimizer.state_dict(),
                                       "seconds": seconds + time.perf_counter() - clock})
    return vae.eval(), seconds + time.perf_counter() - clock


# ----------------------------------------------------------------------------------------------- stage 2


@dataclass
class LatentSet:
    latents: Any
    specs: list


def control_latents(config: SoundConfig, statistics: tuple) -> LatentSet:
    """The fixed training sounds' latents: their synthesiser controls, standardised as the decoder reads them
    (exact, so the transformer learns the controls themselves rather than an encoder's estimate of them)."""
    import numpy as np
    import torch

    mean, spread = statistics
    specs = [world.example_spec(config.seed, i) for i in range(config.examples)]
    stacked = np.stack([oscillators.controls(spec) for spec in specs])
    return LatentSet(torch.tensor((stacked - mean[None, :, None]) / spread[None, :, None], dtype=torch.float32),
                     specs)


def conditioning(text_encoder, projection, tokenizer, captions: list[str], cache: dict[str, tuple], ends=None):
    """What the pipeline feeds the transformer for these captions (its ``encode_prompt`` and ``encode_duration``,
    asked for ``ends`` seconds, 2 by default): cross-attention tokens and the global (duration) states."""
    import torch

    missing = [c for c in dict.fromkeys(captions) if c not in cache]
    if missing:
        tokens = tokenizer(missing, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
        cache.update(zip(missing, zip(tokens.input_ids, tokens.attention_mask, strict=True), strict=True))
    ids = torch.tensor([cache[c][0] for c in captions])
    mask = torch.tensor([cache[c][1] for c in captions])
    hidden = text_encoder(ids, attention_mask=mask)[0]
    hidden = projection(text_hidden_states=hidden).text_hidden_states * mask[..., None].to(hidden.dtype)
    seconds = projection(start_seconds=torch.zeros(len(captions)),
                         end_seconds=torch.full((len(captions),), world.SOUND_SECONDS) if ends is None else ends)
    start, end = seconds.seconds_start_hidden_states, seconds.seconds_end_hidden_states
    return torch.cat([hidden, start, end], dim=1), torch.cat([start, end], dim=2)


def rotary(config: SoundConfig):
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    return get_1d_rotary_pos_embed(config.dit_head_dim // 2, latent_frames(config) + 1, use_real=True,
                                   repeat_interleave_real=False)


def train_denoiser(config: SoundConfig, data: LatentSet, state: _StateFolder, resume: bool, checkpoint_every: int,
                   progress: bool, deadline: float | None):
    """Stage 2: text encoder, projection and transformer together; returns them (EMA weights), the steps done and
    the seconds they took (over every resumed turn)."""
    import math

    import numpy as np
    import torch
    from tqdm import tqdm

    from tools.shapes.train import _Ema

    torch.manual_seed(config.seed + 1)
    tokenizer = build_tokenizer(config)
    text_encoder = build_text_encoder(config, len(tokenizer))
    projection = build_projection(config)
    transformer = build_transformer(config)
    text_encoder.requires_grad_(config.train_text_encoder)
    modules = [projection, transformer] + ([text_encoder] if config.train_text_encoder else [])
    parameters = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.01)
    ema = _Ema(parameters, config.ema_decay)
    start, seconds = 0, 0.0
    saved = state.load("denoiser", config.to_json()) if resume else None
    if saved is not None:
        text_encoder.load_state_dict(saved["text_encoder"])
        projection.load_state_dict(saved["projection"])
        transformer.load_state_dict(saved["transformer"])
        optimizer.load_state_dict(saved["optimizer"])
        ema.shadow = list(saved["ema"])
        start, seconds = saved["step"], float(saved["seconds"])
    for module in (text_encoder, projection, transformer):
        module.train()
    rotary_embedding = rotary(config)
    cache: dict[str, tuple] = {}
    clock = time.perf_counter()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="transformer",
               disable=not progress, dynamic_ncols=True, mininterval=2.0)
    running, done = None, start
    t_low = 2 / math.pi * math.atan(config.sigma_min)
    t_high = 2 / math.pi * math.atan(config.sigma_max)
    for step in bar:
        generator = _generator(config.seed, 2, step)
        rng = np.random.default_rng([config.seed, 2, step])
        index = torch.randint(len(data.specs), (config.batch,), generator=generator)
        clean = data.latents[index]
        noise = torch.randn(clean.shape, generator=generator)
        t = t_low + (t_high - t_low) * torch.rand(config.batch, generator=generator)
        sigma = torch.tan(t * math.pi / 2)[:, None, None]
        noisy = (clean + sigma * noise) / torch.sqrt(sigma**2 + 1)  # c_in x (x0 + sigma eps), sigma_data 1
        target = (noise - sigma * clean) / torch.sqrt(sigma**2 + 1)  # v
        captions = [world.caption(data.specs[int(i)], rng) for i in index.tolist()]
        # The clip is always the whole 2 s; the asked duration varies so that a shorter request (a cut of it)
        # conditions the transformer on something it has seen.
        ends = 0.5 + (world.SOUND_SECONDS - 0.5) * torch.rand(config.batch, generator=generator)
        tokens, global_states = conditioning(text_encoder, projection, tokenizer, captions, cache, ends)
        drop = torch.from_numpy(rng.random(config.batch) < config.caption_dropout)
        tokens = torch.where(drop[:, None, None], torch.zeros_like(tokens), tokens)
        prediction = transformer(noisy, t, encoder_hidden_states=tokens, global_hidden_states=global_states,
                                 rotary_embedding=rotary_embedding, return_dict=False)[0]
        loss = (prediction - target).square().mean()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config.lr, config.warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        ema.update(parameters, step)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 10 == 0:
            pace = (time.perf_counter() - clock) / (step - start + 1)
            bar.set_postfix(loss=f"{running:.4f}", s_per_step=f"{pace:.3f}")
        done = step + 1
        stop = deadline is not None and time.perf_counter() > deadline
        # Stopped by time, the state is kept at the step reached, so --resume loses no work.
        if checkpoint_every and (done % checkpoint_every == 0 or stop) and done < config.steps:
            state.save("denoiser", {"config": config.to_json(), "step": done,
                                    "text_encoder": text_encoder.state_dict(), "projection": projection.state_dict(),
                                    "transformer": transformer.state_dict(), "optimizer": optimizer.state_dict(),
                                    "ema": ema.shadow, "seconds": seconds + time.perf_counter() - clock})
        if stop:
            bar.close()
            break
    ema.copy_to(parameters)
    for module in (text_encoder, projection, transformer):
        module.eval()
    return tokenizer, text_encoder, projection, transformer, done, seconds + time.perf_counter() - clock


# ----------------------------------------------------------------------------------------------- the whole run


@dataclass
class Trained:
    pipeline: Any
    steps: int
    seconds: dict[str, float]
    autoencoder_check: dict[str, float] = dataclasses.field(default_factory=dict)


def autoencoder_check(vae, clips: int = 48) -> dict[str, float]:
    """How much of each property survives the autoencoder alone, on held-out clips (a quick stage-1 verdict: the
    transformer cannot make what the decoder cannot)."""
    import numpy as np
    import torch

    from tools.sound import measures

    rng = np.random.default_rng([7, 16])
    specs = [world.draw_spec(rng, held_out=True) for _ in range(clips)]
    audio = torch.from_numpy(np.stack([world.render(spec, seed=i) for i, spec in enumerate(specs)]))[:, None]
    with torch.no_grad():
        decoded = vae.decode(vae.encode(audio).latent_dist.mean).sample[:, 0, : audio.shape[-1]].float().numpy()
    right = dict.fromkeys(("pitch", "timbre", "count", "contour"), 0)
    scored = dict.fromkeys(right, 0)
    for spec, clip in zip(specs, decoded, strict=True):
        found = measures.measure(clip)
        for name in right:
            if spec.timbre == "noise" and name in ("pitch", "contour"):
                continue
            right[name] += getattr(found, name) == getattr(spec, name)
            scored[name] += 1
    return {name: right[name] / max(1, scored[name]) for name in right}


def build_pipeline(config: SoundConfig, vae, tokenizer, text_encoder, projection, transformer):
    from diffusers import CosineDPMSolverMultistepScheduler, StableAudioPipeline

    return StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection, tokenizer=tokenizer,
                               transformer=transformer,
                               scheduler=CosineDPMSolverMultistepScheduler(**scheduler_config(config)))


def train(out: Path, config: SoundConfig, *, resume: bool = False, threads: int = 2, checkpoint_every: int = 500,
          progress: bool = True, max_minutes: float | None = None) -> Trained:
    """Both stages; ``max_minutes`` (wall time from the start, preparation included) stops the second early."""
    _set_determinism(threads)
    clock = time.perf_counter()
    state = _StateFolder(out)
    statistics = oscillators.control_statistics(config.seed)  # the latents' standardisation, for both stages
    vae, autoencoder_seconds = train_autoencoder(config, statistics, state, resume, checkpoint_every, progress)
    preparing = time.perf_counter()
    vae.requires_grad_(False)
    check = autoencoder_check(vae)
    if progress:
        print("autoencoder check (held-out clips through the autoencoder): "
              + ", ".join(f"{k} {100 * v:.1f} %" for k, v in check.items()), flush=True)
    data = control_latents(config, statistics)
    preparing = time.perf_counter() - preparing
    deadline = clock + 60 * max_minutes if max_minutes is not None else None
    tokenizer, text_encoder, projection, transformer, steps, denoiser_seconds = train_denoiser(
        config, data, state, resume, checkpoint_every, progress, deadline)
    pipeline = build_pipeline(config, vae, tokenizer, text_encoder, projection, transformer)
    # Seconds of the steps kept, summed over resumed turns: what one uninterrupted run takes.
    return Trained(pipeline, steps, {"autoencoder": autoencoder_seconds,
                                     "total": autoencoder_seconds + preparing + denoiser_seconds}, check)


def halve_weights(folder: Path, keep: tuple[str, ...] = ("vae",)) -> None:
    """Store float32 tensors as float16 (half the size; they load as float32 as well), except in the ``keep``
    folders: the oscillator decoder computes phases of hundreds of radians, which float16 would scramble."""
    import torch
    from safetensors.torch import load_file, save_file

    for path in sorted(Path(folder).rglob("*.safetensors")):
        if path.relative_to(folder).parts[0] in keep:
            continue
        tensors = load_file(str(path))
        halved = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
        staging = path.with_suffix(".tmp")
        save_file(halved, str(staging), metadata={"format": "pt"})
        os.replace(staging, path)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and STATE_DIR not in p.parts)


def save(trained: Trained, out: Path, config: SoundConfig, *, command: str, threads: int, half: bool = True) -> Path:
    """Write the diffusers pipeline folder, training_config.json and the card (README.md)."""
    import torch

    out = Path(out)
    staging = out.parent / f".{out.name}.saving"
    if staging.exists():
        shutil.rmtree(staging)
    trained.pipeline.save_pretrained(str(staging), safe_serialization=True)
    if half:
        halve_weights(staging)
    out.mkdir(parents=True, exist_ok=True)
    for child in out.iterdir():
        if child.name != STATE_DIR:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for child in staging.iterdir():
        os.replace(child, out / child.name)
    staging.rmdir()
    record = {
        **config.to_json(),
        "world": {"sample_rate": world.SAMPLE_RATE, "clip_seconds": world.CLIP_SECONDS},
        "recommended": {"steps": config.sample_steps, "guidance": config.guidance,
                        "seconds": world.CLIP_SECONDS, "precision": "float32"},
        "timing": {"threads": threads, "torch": torch.__version__, "minutes": trained.seconds["total"] / 60,
                   "autoencoder_minutes": trained.seconds["autoencoder"] / 60},
        "autoencoder_check": trained.autoencoder_check,
        "command": command,
        "steps_done": trained.steps,
        "reproduce": reproduce_command(command, trained.steps) if trained.steps < config.steps else command,
    }
    (out / "training_config.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    from tools.sound.card import write_card

    write_card(out, record)
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = trainer_parser("python -m tools.sound.train", __doc__.split("\n")[0],
                            "pipeline folder to write", PRESETS,
                            steps_help="transformer training steps", checkpoint_every=500,
                            set_example="--set lr=3e-4 --set ae_steps=400",
                            max_minutes_help="stop the transformer after this much wall time in all and save "
                                             "(the card then gives the --steps that reproduce the weights)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = parse_args(arguments)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = make_config(args.preset, args.seed, args.steps, args.set)
    out = Path(args.out)
    if not args.resume and (out / STATE_DIR).exists():
        shutil.rmtree(out / STATE_DIR)
    trained = train(out, config, resume=args.resume, threads=args.threads, checkpoint_every=args.checkpoint_every,
                    progress=not args.quiet, max_minutes=args.max_minutes)
    command = card_command("tools.sound.train", arguments)
    save(trained, out, config, command=command, threads=args.threads, half=not args.full_precision)
    if not args.keep_state and (out / STATE_DIR).exists():
        shutil.rmtree(out / STATE_DIR)
    print(f"Trained {trained.steps} of {config.steps} steps in {trained.seconds['total'] / 60:.1f} min; "
          f"saved to {out} ({folder_size(out) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
