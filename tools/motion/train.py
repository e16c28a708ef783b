"""Train the embedded motion model: an AnimateDiff ``MotionAdapter`` for the embedded shapes model, offline, on the
CPU, in under an hour::

    python -m tools.motion.train --base models/Stable-diffusion/sfumato-shapes \\
        --out models/animatediff/sfumato-shapes-motion --threads 2 --seed 0

The adapter's block widths are the base UNet's, so ``UNetMotionModel.from_unet2d(base_unet, adapter)`` (what
``AnimateDiffPipeline`` does) accepts it. The base model (autoencoder, text encoder, UNet) stays frozen; only the
motion modules learn, on 16-frame clips of ``tools/motion/clips.py`` (training combinations only), with the base's
noise schedule and prediction type, the base trainer's loss weighting (Min-SNR with high-noise steps at full
weight, more weight on the shape's latent pixels) and its EMA.

The motion modules are temporal self-attention: they read the caption only through the features the UNet's
spatial cross-attention made of it, and the base's text encoder has never seen the motion words ("moving", "up",
"down", "growing", "shrinking", "still": their input embeddings are still the random ones it started with, and
"a red circle moving up" and "... moving down" come out of it 0.05 apart, against 0.37 for two colours; see
``tools/motion/text_probe.py``). So a small LoRA on the UNet's cross-attention keys and values (``lora_rank``)
learns with the motion modules, to make those words readable; it is saved beside the adapter as
``pytorch_lora_weights.safetensors`` (diffusers' LoRA format: an ordinary LoRA for the base model, the way
AnimateDiff v3 ships its adapter LoRA with its motion module), and the studio's video path loads it with the adapter.

What makes motion learnable fast at this size: each motion module's output projection starts at zero (the frozen
base is undisturbed at step 0); the motion is decided at high noise, so half the timesteps are drawn from the
noisier half of the schedule (``high_noise_share``); one temporal transformer layer per module; the clips' latents
are encoded once.

Every random draw of a step comes from (seed, step), the clips from (seed, index), so the same seed and thread
count give the same weights, and ``--resume`` from ``OUT/.train-state`` ends where an uninterrupted run would.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.video.pipelines import MOTION_LORA_FILE
from tools.motion.clips import MOTIONS
from tools.training_cli import BASE_HELP, MAX_MINUTES_HELP, card_command, reproduce_command, trainer_parser

STATE_DIR = ".train-state"
# The base UNet's spatial cross-attention key and value projections (not the motion modules' attention).
LORA_TARGETS = r".*attentions\.\d+\.transformer_blocks\.\d+\.attn2\.(to_k|to_v)"
# The text encoder's self-attention projections (CLIPTextModel's names).
TEXT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
CAPTION_LENGTH = 77
# The markers bench/eval_motion.py --card writes its table between.
EVAL_START = "<!-- motion-eval:start (bench/eval_motion.py --card) -->"
EVAL_END = "<!-- motion-eval:end -->"


@dataclass(frozen=True)
class MotionConfig:
    """Everything that decides the trained weights besides the base model (the command line sets a few)."""

    seed: int = 0
    frames: int = 16
    clips: int = 3072  # the fixed training set (latents computed once)
    steps: int = 4000
    batch: int = 4  # clips per step (x frames = images through the UNet)
    lr: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.995  # 0: no EMA
    caption_dropout: float = 0.1
    snr_gamma: float = 5.0
    object_loss_weight: float = 2.0
    high_noise_share: float = 0.5  # share of timesteps drawn from the noisier half of the schedule
    head_dim: int = 16  # temporal attention head width: 2, 4 and 8 heads at the base's widths 32, 64, 128
    transformer_layers: int = 1
    mid_block: bool = True
    max_seq_length: int = 32
    lora_rank: int = 8  # LoRA on the base UNet's cross-attention keys/values, learning the motion words; 0: none
    # LoRA on the text encoder's self-attention (0: none): makes the motion words tell apart where the caption is
    # read, for a base whose text encoder maps them almost alike (saved in the same LoRA file; the studio gives
    # the video pipeline its own copy of the text encoder for it, so images are untouched).
    text_lora_rank: int = 0
    motions: tuple[str, ...] = MOTIONS  # a subset trains on those motions only (quick experiments)
    motion_weights: tuple[float, ...] = ()  # one per motion: how often its clips are drawn (empty: all alike)
    readable_weight: float = 0.1  # weight of the training-only readout loss (MotionReadout); 1.0 hurt colours
    # Recommended sampling (recorded, not trained): the share of the steps the adapter acts in before the image
    # model alone finishes the frames (modules/video/motion_end.py). Chosen with bench/eval_motion.py
    # --motion-end on held-out prompts: 0.7 kept the motion and brought the shapes back for an adapter without a
    # text-encoder LoRA; with one (text_lora_rank 8, the committed model) shapes stay sharp to the end: it records 1.
    motion_end: float = 0.7

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # For tests and smoke runs: the same code path in seconds (the result moves nothing).
    "tiny": {"frames": 8, "clips": 4, "steps": 3, "batch": 2, "warmup": 1},
}


def make_config(preset: str = "default", seed: int = 0, steps: int | None = None,
                overrides: list[str] | None = None) -> MotionConfig:
    """The recipe: defaults, then the preset, then explicit ``KEY=JSON`` overrides."""
    values: dict[str, Any] = {**PRESETS[preset], "seed": seed}
    if steps is not None:
        values["steps"] = steps
    fields = {f.name for f in dataclasses.fields(MotionConfig)}
    for item in overrides or []:
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key not in fields:
            raise SystemExit(f"--set: unknown setting {key!r}")
        values[key] = tuple(value) if isinstance(value, list) else value
    config = MotionConfig(**values)
    if config.motion_weights:
        from tools.motion.clips import motion_odds

        try:
            motion_odds(tuple(config.motions), tuple(config.motion_weights))
        except ValueError as error:
            raise SystemExit(f"--set: {error}") from None
    return config


def build_adapter(base_unet_config: dict[str, Any], config: MotionConfig):
    """A MotionAdapter whose widths, layers per block and norm groups are the base UNet's; output projections
    zeroed, so the base's images are untouched until the modules learn."""
    import torch
    from diffusers import MotionAdapter

    channels = tuple(base_unet_config["block_out_channels"])
    heads = tuple(max(1, c // config.head_dim) for c in channels)
    adapter = MotionAdapter(
        block_out_channels=channels, motion_layers_per_block=base_unet_config["layers_per_block"],
        motion_transformer_layers_per_block=config.transformer_layers,
        motion_mid_block_layers_per_block=1, motion_transformer_layers_per_mid_block=config.transformer_layers,
        motion_num_attention_heads=heads, motion_norm_num_groups=base_unet_config["norm_num_groups"],
        motion_max_seq_length=config.max_seq_length, use_motion_mid_block=config.mid_block)
    with torch.no_grad():
        for name, parameter in adapter.named_parameters():
            if ".proj_out." in name:
                parameter.zero_()
    return adapter


def add_text_lora(unet, config: MotionConfig) -> None:
    """Put a LoRA (zero at the start: the base is unchanged) on the spatial cross-attention keys and values of a
    ``UNetMotionModel`` whose base is frozen; the LoRA and the motion modules are what learns."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_rank, target_modules=LORA_TARGETS,
                                init_lora_weights=True))
    unet.freeze_unet2d_params()  # peft froze everything but the LoRA; the motion modules learn too
    for name, parameter in unet.named_parameters():
        if ".lora_" in name:
            parameter.requires_grad_(True)


class MotionReadout:
    """Training only: a linear head per spatial transformer of the UNet that reads the asked motion from every
    pixel of that transformer's output (what the motion module after it sees). Its cross-entropy, added to the loss,
    gives the cross-attention LoRA a gradient from the first step: up and down (growing and shrinking) clips have
    the same frames, so the denoising loss alone asks the LoRA to tell them apart only through motion modules that
    start at zero. The heads are not saved."""

    def __init__(self, unet, motions: tuple[str, ...]) -> None:
        import re

        import torch

        self.motions = motions
        self.features: dict[int, Any] = {}
        self.heads = torch.nn.ModuleList()
        self.hooks = []
        for name, module in unet.named_modules():
            if re.fullmatch(r"(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.attentions\.\d+", name):
                channels = module.proj_out.out_features if hasattr(module.proj_out, "out_features") \
                    else module.proj_out.out_channels
                self.hooks.append(module.register_forward_hook(self._keeper(len(self.heads))))
                self.heads.append(torch.nn.Linear(channels, len(motions)))

    def _keeper(self, at: int):
        def keep(_module, _inputs, out) -> None:
            self.features[at] = out[0] if isinstance(out, tuple) else out.sample
        return keep

    def parameters(self) -> list:
        return list(self.heads.parameters())

    def loss(self, asked: list[str | None], frames: int):
        """Mean cross-entropy of every head over every pixel of the frames whose caption named a motion."""
        import torch
        import torch.nn.functional as F

        features, self.features = self.features, {}
        labels = torch.tensor([self.motions.index(m) if m is not None else -100 for m in asked]).repeat_interleave(
            frames)
        if bool((labels < 0).all()):
            return torch.zeros(())
        losses = []
        for at, head in enumerate(self.heads):
            logits = head(features[at].permute(0, 2, 3, 1))  # (images, h, w, motions)
            pixel_labels = labels[:, None, None].expand(logits.shape[:-1])
            losses.append(F.cross_entropy(logits.reshape(-1, len(self.motions)), pixel_labels.reshape(-1)))
        return torch.stack(losses).mean()


def add_text_encoder_lora(text_encoder, config: MotionConfig) -> list:
    """Put a LoRA (zero at the start) on the frozen text encoder's self-attention; returns its parameters. PEFT
    injects it directly (transformers' ``add_adapter`` demands a newer PEFT than diffusers needs, as the studio's
    LoRA loader notes)."""
    from peft import LoraConfig, inject_adapter_in_model

    text_encoder.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=config.text_lora_rank, lora_alpha=config.text_lora_rank,
                                       target_modules=TEXT_LORA_TARGETS, init_lora_weights=True), text_encoder)
    parameters = [p for name, p in text_encoder.named_parameters() if ".lora_" in name]
    for parameter in parameters:
        parameter.requires_grad_(True)
    return parameters


def text_lora_state(model) -> dict:
    """A model's LoRA weights in diffusers' naming (what ``save_lora_weights`` writes), empty when there is none."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    if not any(".lora_" in name for name, _ in model.named_parameters()):
        return {}
    return convert_state_dict_to_diffusers(get_peft_model_state_dict(model))


@dataclass
class ClipSet:
    """The fixed training clips: latent mean / std (F x 4 x h x w each), shape masks at the latents' size, specs."""

    means: Any
    stds: Any
    masks: Any
    specs: list
    plain_means: Any = None  # the same clips on the plain backdrop (when the base draws unnamed backgrounds so)
    plain_stds: Any = None


def build_clip_set(vae, config: MotionConfig, progress: bool = True, plain: bool = False) -> ClipSet:
    """Draw the clips and encode their frames once (the autoencoder is frozen); ``plain`` also encodes each clip
    on the plain backdrop (``world.PLAIN_BACKGROUND``), which a caption without a background trains on."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from tools.motion.clips import training_clip

    means, stds, masks, specs, plain_means, plain_stds = [], [], [], [], [], []

    def encode(frames):
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        return vae.encode(pixels).latent_dist

    with torch.no_grad():
        for index in tqdm(range(config.clips), desc="clips", disable=not progress, dynamic_ncols=True,
                          mininterval=2.0):
            frames, coverages, spec = training_clip(config.seed, index, config.frames, tuple(config.motions),
                                                   tuple(config.motion_weights))
            posterior = encode(frames)
            means.append(posterior.mean.to(torch.float16))
            stds.append(posterior.std.to(torch.float16))
            touched = torch.from_numpy((coverages > 0.03).astype(np.float32))[:, None]
            mask = F.max_pool2d(F.adaptive_max_pool2d(touched, posterior.mean.shape[-1]), 3, stride=1, padding=1)
            masks.append(mask.to(torch.bool))
            specs.append(spec)
            if plain:
                grey, _, _ = training_clip(config.seed, index, config.frames, tuple(config.motions),
                                           tuple(config.motion_weights), plain=True)
                posterior = encode(grey)
                plain_means.append(posterior.mean.to(torch.float16))
                plain_stds.append(posterior.std.to(torch.float16))
    clip_set = ClipSet(torch.stack(means), torch.stack(stds), torch.stack(masks), specs)
    if plain:
        clip_set.plain_means, clip_set.plain_stds = torch.stack(plain_means), torch.stack(plain_stds)
    return clip_set


def _step_generator(seed: int, step: int):
    """The generator of one step: a pure function of (seed, step), so resuming changes nothing."""
    import torch

    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + 15 * 100_003 + step) % (2**63))


def draw_timesteps(count: int, total: int, high_share: float, generator):
    """Timesteps: uniform, except that ``high_share`` of them come from the noisier half (where motion is laid
    out)."""
    import torch

    uniform = torch.randint(0, total, (count,), generator=generator)
    high = torch.randint(total // 2, total, (count,), generator=generator)
    pick = torch.rand(count, generator=generator) < high_share
    return torch.where(pick, high, uniform)


def _save_state(out: Path, payload: dict[str, Any]) -> None:
    """A checkpoint in OUT/.train-state, written atomically (a crash mid-write keeps the previous one)."""
    import torch

    folder = out / STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / ".motion.pt.tmp"
    torch.save(payload, staging)
    os.replace(staging, folder / "motion.pt")


def _load_state(out: Path) -> dict[str, Any] | None:
    import torch

    path = out / STATE_DIR / "motion.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


@dataclass
class Trained:
    """What ``train`` returns: the adapter (EMA weights), how long each part took, the steps done, and the
    cross-attention LoRA's weights and the text encoder's (diffusers' naming; empty without one)."""

    adapter: Any
    seconds: dict[str, float]
    steps: int
    lora: dict = dataclasses.field(default_factory=dict)
    text_encoder_lora: dict = dataclasses.field(default_factory=dict)


def train(base, config: MotionConfig, out: Path, *, resume: bool = False, threads: int = 2,
          checkpoint_every: int = 200, progress: bool = True, max_minutes: float | None = None) -> Trained:
    """Train the motion modules for ``base`` (a ``tools.shapes_controlnet.train.Base``); checkpoints in
    ``out/.train-state``. ``max_minutes`` stops after the step that passes that much wall time."""
    import numpy as np
    import torch
    from diffusers import UNetMotionModel
    from tqdm import tqdm

    from tools.motion.clips import training_caption
    from tools.shapes.train import _Ema, on_plain_backdrop, where_plain
    from tools.shapes_controlnet.train import (
        _set_determinism,
        learning_rate,
        load_base_parts,
        loss_weights,
        noise_schedule,
    )

    _set_determinism(threads)
    clock = time.perf_counter()
    vae, text_encoder, tokenizer, unet2d = load_base_parts(base)
    data = build_clip_set(vae, config, progress, plain=base.plain_unnamed_background)
    prepared = time.perf_counter() - clock
    schedule = noise_schedule(base)
    alphas_cumprod = schedule.alphas_cumprod
    torch.manual_seed(config.seed)
    adapter = build_adapter(dict(unet2d.config), config)
    unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    unet.freeze_unet2d_params()
    if config.lora_rank:
        add_text_lora(unet, config)
    unet.train()
    parameters = [p for p in unet.parameters() if p.requires_grad]
    if config.text_lora_rank:
        parameters += add_text_encoder_lora(text_encoder, config)
    readout = None
    if config.readable_weight:
        readout = MotionReadout(unet, tuple(config.motions))
        parameters += readout.parameters()
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.0, fused=True)
    ema = _Ema(parameters, config.ema_decay) if config.ema_decay else None
    start, earlier = 0, 0.0
    saved = _load_state(out) if resume else None
    if saved is not None:
        if saved["config"] != config.to_json() or saved["base_unet_sha256"] != base.unet_sha256:
            raise SystemExit("--resume: the checkpoint was made with other settings or another base model")
        for parameter, value in zip(parameters, saved["parameters"], strict=True):
            parameter.data.copy_(value)
        optimizer.load_state_dict(saved["optimizer"])
        if ema is not None:
            ema.shadow = list(saved["ema"])
        start, earlier = saved["step"], float(saved["seconds"])
    scaling = vae.config.scaling_factor
    token_cache: dict[str, list[int]] = {}

    def encode(captions: list[str]):
        missing = [c for c in dict.fromkeys(captions) if c not in token_cache]
        if missing:
            ids = tokenizer(missing, padding="max_length", max_length=CAPTION_LENGTH, truncation=True).input_ids
            token_cache.update(zip(missing, ids, strict=True))
        with torch.set_grad_enabled(bool(config.text_lora_rank)):
            return text_encoder(torch.tensor([token_cache[c] for c in captions], dtype=torch.long))[0]

    frames = config.frames
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="motion",
               disable=not progress, dynamic_ncols=True, mininterval=2.0)
    started, running, done = time.perf_counter(), None, start
    for step in bar:
        generator = _step_generator(config.seed, step)
        rng = np.random.default_rng([config.seed, 15, 7, step])
        index = torch.randint(len(data.specs), (config.batch,), generator=generator)
        shape = (config.batch * frames, *data.means.shape[2:])
        latent_noise = torch.randn(shape, generator=generator)
        noise = torch.randn(shape, generator=generator)
        timesteps = draw_timesteps(config.batch, schedule.config.num_train_timesteps, config.high_noise_share,
                                   generator)
        frame_timesteps = timesteps.repeat_interleave(frames)
        drop = rng.random(config.batch) < config.caption_dropout
        drawn = [None if drop[i] else training_caption(data.specs[int(j)], rng) for i, j in enumerate(index.tolist())]
        captions = ["" if d is None else d.text for d in drawn]
        means, stds = data.means[index], data.stds[index]
        if data.plain_means is not None:
            plain = on_plain_backdrop(drawn, base.plain_empty_caption_share, [config.seed, 15, 7, step, 3])
            means = where_plain(plain, data.plain_means[index], means)
            stds = where_plain(plain, data.plain_stds[index], stds)
        latents = (means.flatten(0, 1).float() + stds.flatten(0, 1).float() * latent_noise) * scaling
        noisy = schedule.add_noise(latents, noise, frame_timesteps)
        target = schedule.get_velocity(latents, noise, frame_timesteps) if base.prediction_type == "v_prediction" \
            else noise
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config.lr, config.warmup)
        hidden = encode(captions)
        # UNetMotionModel takes (batch, channels, frames, h, w) and the captions repeated for every frame.
        sample = noisy.unflatten(0, (config.batch, frames)).permute(0, 2, 1, 3, 4)
        prediction = unet(sample, timesteps, hidden.repeat_interleave(frames, dim=0)).sample
        prediction = prediction.permute(0, 2, 1, 3, 4).flatten(0, 1)
        weights = 1.0 + config.object_loss_weight * data.masks[index].flatten(0, 1).float()
        error = (prediction.float() - target.float()).square() * weights
        per_clip = error.unflatten(0, (config.batch, frames)).mean(dim=(1, 2, 3, 4))
        loss = (per_clip * loss_weights(alphas_cumprod, timesteps, base.prediction_type, config.snr_gamma)).mean()
        if readout is not None:
            asked = [None if drop[i] else data.specs[int(j)].motion for i, j in enumerate(index.tolist())]
            loss = loss + config.readable_weight * readout.loss(asked, frames)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        if ema is not None:
            ema.update(parameters, step)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 10 == 0:
            pace = (time.perf_counter() - started) / (step - start + 1)
            bar.set_postfix(loss=f"{running:.4f}", s_per_step=f"{pace:.2f}")
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < config.steps:
            _save_state(out, {"config": config.to_json(), "base_unet_sha256": base.unet_sha256, "step": step + 1,
                              "seconds": earlier + time.perf_counter() - clock,
                              "parameters": [p.detach().clone() for p in parameters],
                              "optimizer": optimizer.state_dict(),
                              "ema": ema.shadow if ema is not None else []})
        done = step + 1
        if max_minutes is not None and earlier + time.perf_counter() - clock > 60 * max_minutes:
            bar.close()
            break
    if ema is not None:
        ema.copy_to(parameters)
    motion_state = {k: v for k, v in unet.state_dict().items() if "motion_modules." in k}
    adapter.load_state_dict(motion_state)
    adapter.eval()
    lora = {k: v.detach().clone() for k, v in text_lora_state(unet).items()}
    text_lora = {k: v.detach().clone() for k, v in text_lora_state(text_encoder).items()}
    return Trained(adapter, {"prepare": prepared, "total": earlier + time.perf_counter() - clock}, done, lora,
                   text_lora)


def save(trained: Trained, out: Path, base, config: MotionConfig, *, command: str, threads: int,
         half: bool = True) -> Path:
    """Write the diffusers MotionAdapter folder (config.json + safetensors), training_config.json and the card."""
    import torch

    from tools.shapes_controlnet.train import halve_weights

    out = Path(out)
    staging = out.parent / f".{out.name}.saving"
    if staging.exists():
        shutil.rmtree(staging)
    trained.adapter.save_pretrained(str(staging), safe_serialization=True)
    if trained.lora or trained.text_encoder_lora:
        from diffusers import AnimateDiffPipeline

        AnimateDiffPipeline.save_lora_weights(str(staging), unet_lora_layers=trained.lora or None,
                                              text_encoder_lora_layers=trained.text_encoder_lora or None,
                                              weight_name=MOTION_LORA_FILE, safe_serialization=True)
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
        "base": {"name": base.path.name, "unet_sha256": base.unet_sha256,
                 "prediction_type": base.prediction_type},
        "recommended": {**base.recommended, "frames": 16, "fps": 8, "motion_end": config.motion_end},
        "timing": {"threads": threads, "torch": torch.__version__, "minutes": trained.seconds["total"] / 60,
                   "prepare_minutes": trained.seconds["prepare"] / 60},
        "command": command,
        "steps_done": trained.steps,
        "reproduce": reproduce_command(command, trained.steps) if trained.steps < config.steps else command,
    }
    (out / "training_config.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    from tools.motion.card import write_card

    write_card(out, record)
    return out


def folder_size(folder: Path) -> int:
    """Bytes of a model folder (without training state)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and STATE_DIR not in p.parts)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = trainer_parser("python -m tools.motion.train", __doc__.split("\n")[0],
                            "MotionAdapter folder to write", PRESETS,
                            steps_help="training steps", checkpoint_every=200,
                            set_example="--set lr=5e-4 --set batch=2",
                            max_minutes_help=MAX_MINUTES_HELP)
    parser.add_argument("--base", type=Path, default=Path("models/Stable-diffusion/sfumato-shapes"),
                        help=BASE_HELP)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = parse_args(arguments)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tools.shapes_controlnet.train import read_base

    config = make_config(args.preset, args.seed, args.steps, args.set)
    base = read_base(args.base)
    out = Path(args.out)
    if not args.resume and (out / STATE_DIR).exists():
        shutil.rmtree(out / STATE_DIR)
    trained = train(base, config, out, resume=args.resume, threads=args.threads,
                    checkpoint_every=args.checkpoint_every, progress=not args.quiet, max_minutes=args.max_minutes)
    command = card_command("tools.motion.train", arguments)
    save(trained, out, base, config, command=command, threads=args.threads, half=not args.full_precision)
    if not args.keep_state and (out / STATE_DIR).exists():
        shutil.rmtree(out / STATE_DIR)
    print(f"Trained {trained.steps} of {config.steps} steps in {trained.seconds['total'] / 60:.1f} min; "
          f"saved to {out} ({folder_size(out) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
