"""Train the embedded ControlNet for the embedded shapes model: a scribble / edge map decides the shape, its size
and where it is; the prompt decides the colours. Offline, on the CPU, in under half an hour::

    python -m tools.shapes_controlnet.train --base models/Stable-diffusion/sfumato-shapes \\
        --out models/ControlNet/sfumato-shapes-scribble --threads 2 --seed 0

The ControlNet is ``ControlNetModel.from_unet`` on the base model's UNet (its encoder's weights as the start), with
a conditioning embedding of two stride-2 stages (``embedding_channels``), because the base's autoencoder turns 64 px
into 16 x 16 latents (SD's four-stage embedding is for its 8x autoencoder). The autoencoder, text encoder and UNet
stay frozen; only the ControlNet learns, with the base's own noise schedule and prediction type (read from its
scheduler config) and the base trainer's loss weighting (Min-SNR with high-noise steps at full weight, more weight
on the shape's latent pixels). Examples come from ``tools/shapes_controlnet/data.py`` (training combinations only;
control maps drawn as scribbles, canny edges or silhouettes; captions that sometimes contradict the control map).

Every random draw of a step comes from (seed, step), the examples from (seed, index), so the same seed and thread
count give the same weights, and ``--resume`` from ``OUT/.train-state`` ends where an uninterrupted run would.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.shapes_controlnet.data import ExampleRecipe
from tools.training_cli import BASE_HELP, MAX_MINUTES_HELP, card_command, reproduce_command, trainer_parser

STATE_DIR = ".train-state"
CAPTION_LENGTH = 77
# The markers bench/eval_controlnet.py --card writes its tables between.
EVAL_START = "<!-- controlnet-eval:start (bench/eval_controlnet.py --card) -->"
EVAL_END = "<!-- controlnet-eval:end -->"


@dataclass(frozen=True)
class ControlNetConfig:
    """Everything that decides the trained weights besides the base model (the command line sets a few)."""

    seed: int = 0
    embedding_channels: tuple[int, ...] = (16, 32, 64)  # 64 px -> 16 x 16: two stride-2 stages
    # Batch 32 costs about the same per image as 64 on this CPU (measured), so it buys twice the updates.
    steps: int = 5000
    batch: int = 32
    lr: float = 5e-4
    warmup: int = 100
    ema_decay: float = 0.997  # 0: no EMA
    caption_dropout: float = 0.1  # empty captions, so the unconditional half of CFG follows the control map too
    snr_gamma: float = 5.0
    object_loss_weight: float = 2.0
    # A small shape's few latent pixels carry little of the loss, and small stars came out as blobs (read as
    # circles) in most of the evaluator's shape errors: an example's object weight is scaled by a large shape's
    # area (the 90th percentile) over its own, up to this factor (1: off).
    small_object_boost: float = 1.0
    examples: int = 16384  # the fixed training set (latents and control maps computed once)
    # bfloat16 autocast for the ControlNet and UNet (weights and loss stay float32): measured no faster at these
    # widths on this CPU, so off.
    bf16: bool = False
    recipe: ExampleRecipe = dataclasses.field(default_factory=ExampleRecipe)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # For tests and smoke runs: the same code path in seconds (the result controls nothing).
    "tiny": {"embedding_channels": (8, 8, 16), "steps": 3, "batch": 4, "warmup": 1, "examples": 12},
}


def make_config(preset: str = "default", seed: int = 0, steps: int | None = None,
                overrides: list[str] | None = None) -> ControlNetConfig:
    """The recipe: defaults, then the preset, then explicit ``KEY=JSON`` overrides (``recipe.KEY`` too)."""
    values: dict[str, Any] = {**PRESETS[preset], "seed": seed}
    if steps is not None:
        values["steps"] = steps
    recipe: dict[str, Any] = {}
    fields = {f.name for f in dataclasses.fields(ControlNetConfig)}
    recipe_fields = {f.name for f in dataclasses.fields(ExampleRecipe)}
    for item in overrides or []:
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        value = tuple(value) if isinstance(value, list) else value
        if key.startswith("recipe.") and key[7:] in recipe_fields:
            recipe[key[7:]] = value
        elif key in fields and key != "recipe":
            values[key] = value
        else:
            raise SystemExit(f"--set: unknown setting {key!r}")
    return ControlNetConfig(**values, recipe=ExampleRecipe(**recipe))


@dataclass(frozen=True)
class Base:
    """What the ControlNet is trained for: the base model's folder, world, schedule and recommended sampling."""

    path: Path
    rows: int
    scheduler: dict[str, Any]
    recommended: dict[str, Any]
    unet_sha256: str
    # The base draws a caption without a background on the plain grey backdrop (its training config's
    # ``plain_unnamed_background``): the ControlNet's pictures must agree, or it learns to fight the base over it.
    plain_unnamed_background: bool = False
    plain_empty_caption_share: float = 0.0  # of the empty captions, the share the base trained on the plain backdrop

    @property
    def prediction_type(self) -> str:
        return self.scheduler.get("prediction_type", "epsilon")


def read_base(path: Path) -> Base:
    """The base model's settings from its folder (scheduler config, training_config.json, UNet weights' hash)."""
    path = Path(path)
    scheduler = json.loads((path / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    training = path / "training_config.json"
    record = json.loads(training.read_text(encoding="utf-8")) if training.is_file() else {}
    weights = sorted((path / "unet").glob("*.safetensors"))
    digest = hashlib.sha256(weights[0].read_bytes()).hexdigest() if weights else ""
    recommended = {"sampler": "Euler", "steps": 20, "guidance": 3.0, **record.get("recommended", {})}
    return Base(path=path, rows=int(record.get("rows", 3)), scheduler=scheduler, recommended=recommended,
                unet_sha256=digest, plain_unnamed_background=bool(record.get("plain_unnamed_background", False)),
                plain_empty_caption_share=float(record.get("plain_empty_caption_share", 0.0)))


def noise_schedule(base: Base):
    """The base's training noise schedule (DDPM form of its saved sampler's betas and prediction type)."""
    from diffusers import DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
            "steps_offset", "timestep_spacing", "rescale_betas_zero_snr")
    return DDPMScheduler.from_config({k: base.scheduler[k] for k in keys if k in base.scheduler})


def build_controlnet(unet, config: ControlNetConfig):
    """The ControlNet: the UNet's encoder and middle block copied, zero-initialised output convolutions."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(config.embedding_channels),
                                     conditioning_channels=3)


def _set_determinism(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set in this process (tests train more than once)
        torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _step_generator(seed: int, step: int):
    """The generator of one step: a pure function of (seed, step), so resuming changes nothing."""
    import torch

    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + 7 * 100_003 + step) % (2**63))


def learning_rate(step: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then constant (the EMA does the averaging a decay would): the weights after step k do not
    depend on how many steps were planned, so a run stopped by ``--max-minutes`` is reproduced by ``--steps k``."""
    return peak * min(1.0, (step + 1) / max(1, warmup))


def object_boost(masks, limit: float):
    """Per example (shaped to broadcast over the masks), a large object's area (the 90th percentile) over the
    example's own, clamped to [1, ``limit``]: small shapes' pixels weigh about as much in all as a large one's."""
    import torch

    areas = masks.flatten(1).sum(dim=1).clamp(min=1e-6)
    boost = (areas.quantile(0.9) / areas).clamp(min=1.0, max=max(1.0, limit))
    return boost.view(-1, *([1] * (masks.dim() - 1))).to(torch.float32)


def loss_weights(alphas_cumprod, timesteps, prediction_type: str, snr_gamma: float):
    """The base trainer's per-sample weights: for v-prediction, the clean-latent loss weighted by
    min(SNR, gamma) + 1 (high-noise steps, where the layout is decided, keep full weight); Min-SNR for epsilon."""
    snr = alphas_cumprod[timesteps] / (1.0 - alphas_cumprod[timesteps])
    if prediction_type == "v_prediction":
        return (snr.clamp(max=snr_gamma) + 1.0) / (snr + 1.0)
    return snr.clamp(max=snr_gamma) / snr


@dataclass
class TrainingSet:
    """The fixed examples: latent mean / std, control maps (uint8, one channel), specs, shape masks at the
    latents' resolution."""

    means: Any
    stds: Any
    controls: Any
    specs: list
    masks: Any
    kinds: list
    plain_means: Any = None  # the same pictures on the plain backdrop (when the base uses it)
    plain_stds: Any = None


def build_training_set(vae, config: ControlNetConfig, rows: int, progress: bool = True,
                       plain: bool = False) -> TrainingSet:
    """Draw the examples and encode their images once (the autoencoder is frozen); ``plain`` also encodes each
    picture on the plain backdrop (``world.PLAIN_BACKGROUND``)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from tools.shapes.train import object_masks
    from tools.shapes_controlnet.data import training_example

    means, stds, controls, specs, masks, kinds, plain_means, plain_stds = [], [], [], [], [], [], [], []
    chunk = 256
    with torch.no_grad():
        for start in tqdm(range(0, config.examples, chunk), desc="examples", disable=not progress,
                          dynamic_ncols=True, mininterval=2.0):
            batch = [training_example(config.seed, i, rows, config.recipe)
                     for i in range(start, min(start + chunk, config.examples))]
            images = np.stack([e.image for e in batch])
            posterior = vae.encode(_pixels(images)).latent_dist
            means.append(posterior.mean.float())
            stds.append(posterior.std.float())
            controls.append(torch.from_numpy(np.stack([e.control for e in batch]))[:, None])
            masks.append(object_masks(images, [e.spec for e in batch], posterior.mean.shape[-1]))
            specs += [e.spec for e in batch]
            kinds += [e.kind for e in batch]
            if plain:
                posterior = vae.encode(_pixels(np.stack([e.plain_image() for e in batch]))).latent_dist
                plain_means.append(posterior.mean.float())
                plain_stds.append(posterior.std.float())
    data = TrainingSet(torch.cat(means), torch.cat(stds), torch.cat(controls), specs, torch.cat(masks), kinds)
    if plain:
        data.plain_means, data.plain_stds = torch.cat(plain_means), torch.cat(plain_stds)
    return data


def _pixels(images):
    """uint8 NxHxWx3 pictures as the autoencoder's input (float, -1..1, NCHW)."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _save_state(out: Path, payload: dict[str, Any]) -> None:
    """A checkpoint in OUT/.train-state, written atomically (a crash mid-write keeps the previous one)."""
    import torch

    folder = out / STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / ".controlnet.pt.tmp"
    torch.save(payload, staging)
    os.replace(staging, folder / "controlnet.pt")


def _load_state(out: Path) -> dict[str, Any] | None:
    import torch

    path = out / STATE_DIR / "controlnet.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def load_base_parts(base: Base):
    """The frozen parts of the base model: autoencoder, text encoder, tokenizer, UNet (float32, eval mode)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = str(base.path)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32, local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=torch.float32,
                                                 local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32,
                                                local_files_only=True)
    for module in (vae, text_encoder, unet):
        module.requires_grad_(False)
        module.eval()
    return vae, text_encoder, tokenizer, unet


@dataclass
class Trained:
    """What ``train`` returns: the ControlNet (EMA weights loaded) and how long each part took."""

    controlnet: Any
    seconds: dict[str, float]
    steps: int


def train(base: Base, config: ControlNetConfig, out: Path, *, resume: bool = False, threads: int = 2,
          checkpoint_every: int = 200, progress: bool = True, max_minutes: float | None = None) -> Trained:
    """Train the ControlNet for ``base`` (checkpoints in ``out/.train-state``); returns it with its timings.

    ``max_minutes`` stops after the step that passes that much wall time (preparation included); ``Trained.steps``
    says how many steps were done.
    """
    import numpy as np
    import torch
    from tqdm import tqdm

    from tools.shapes.train import on_plain_backdrop, where_plain
    from tools.shapes_controlnet.data import training_caption

    _set_determinism(threads)
    clock = time.perf_counter()
    vae, text_encoder, tokenizer, unet = load_base_parts(base)
    data = build_training_set(vae, config, base.rows, progress, plain=base.plain_unnamed_background)
    prepared = time.perf_counter() - clock
    schedule = noise_schedule(base)
    alphas_cumprod = schedule.alphas_cumprod
    torch.manual_seed(config.seed)
    controlnet = build_controlnet(unet, config).train()
    # channels-last convolutions are faster on CPU (oneDNN); the numbers are the same either way.
    controlnet = controlnet.to(memory_format=torch.channels_last)
    unet = unet.to(memory_format=torch.channels_last)
    parameters = list(controlnet.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.0, fused=True)
    from tools.shapes.train import _Ema  # the base model's EMA, with the same decay warm-up

    ema = _Ema(parameters, config.ema_decay) if config.ema_decay else None
    start, earlier = 0, 0.0
    saved = _load_state(out) if resume else None
    if saved is not None:
        if saved["config"] != config.to_json() or saved["base_unet_sha256"] != base.unet_sha256:
            raise SystemExit("--resume: the checkpoint was made with other settings or another base model")
        controlnet.load_state_dict(saved["controlnet"])
        optimizer.load_state_dict(saved["optimizer"])
        if ema is not None:
            ema.shadow = list(saved["ema"])
        start, earlier = saved["step"], float(saved["seconds"])
    scaling = vae.config.scaling_factor
    pixel_weights = 1.0 + config.object_loss_weight * object_boost(data.masks, config.small_object_boost) * data.masks
    token_cache: dict[str, list[int]] = {}

    def encode(captions: list[str]):
        missing = [c for c in dict.fromkeys(captions) if c not in token_cache]
        if missing:
            ids = tokenizer(missing, padding="max_length", max_length=CAPTION_LENGTH, truncation=True).input_ids
            token_cache.update(zip(missing, ids, strict=True))
        with torch.no_grad():
            return text_encoder(torch.tensor([token_cache[c] for c in captions], dtype=torch.long))[0]

    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="controlnet",
               disable=not progress, dynamic_ncols=True, mininterval=2.0)
    started, running, done = time.perf_counter(), None, start
    for step in bar:
        generator = _step_generator(config.seed, step)
        rng = np.random.default_rng([config.seed, 7, step])
        index = torch.randint(len(data.specs), (config.batch,), generator=generator)
        shape = (config.batch, *data.means.shape[1:])
        latent_noise = torch.randn(shape, generator=generator)
        noise = torch.randn(shape, generator=generator)
        timesteps = torch.randint(0, schedule.config.num_train_timesteps, (config.batch,), generator=generator)
        drop = rng.random(config.batch) < config.caption_dropout
        drawn = [None if drop[i] else training_caption(data.specs[int(j)], rng, base.rows, config.recipe)
                 for i, j in enumerate(index.tolist())]
        captions = ["" if d is None else d.text for d in drawn]
        mean, std = data.means[index], data.stds[index]
        if data.plain_means is not None:
            plain = on_plain_backdrop(drawn, base.plain_empty_caption_share, [config.seed, 7, step, 3])
            mean = where_plain(plain, data.plain_means[index], mean)
            std = where_plain(plain, data.plain_stds[index], std)
        latents = (mean + std * latent_noise) * scaling
        control = data.controls[index].float().div(255.0).expand(-1, 3, -1, -1)
        noisy = schedule.add_noise(latents, noise, timesteps).contiguous(memory_format=torch.channels_last)
        target = schedule.get_velocity(latents, noise, timesteps) if base.prediction_type == "v_prediction" \
            else noise
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config.lr, config.warmup)
        hidden = encode(captions)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            down, mid = controlnet(noisy, timesteps, hidden, controlnet_cond=control.contiguous(
                memory_format=torch.channels_last), return_dict=False)
            prediction = unet(noisy, timesteps, hidden, down_block_additional_residuals=down,
                              mid_block_additional_residual=mid).sample
        error = (prediction.float() - target.float()).square() * pixel_weights[index]
        per_sample = error.mean(dim=(1, 2, 3))
        loss = (per_sample * loss_weights(alphas_cumprod, timesteps, base.prediction_type, config.snr_gamma)).mean()
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
                              "controlnet": controlnet.state_dict(), "optimizer": optimizer.state_dict(),
                              "ema": ema.shadow if ema is not None else []})
        done = step + 1
        if max_minutes is not None and earlier + time.perf_counter() - clock > 60 * max_minutes:
            bar.close()
            break
    if ema is not None:
        ema.copy_to(parameters)
    controlnet = controlnet.to(memory_format=torch.contiguous_format).eval()
    # A resumed run counts the interrupted run's time up to its checkpoint too (the wall time of the whole job).
    return Trained(controlnet, {"prepare": prepared, "total": earlier + time.perf_counter() - clock}, done)


def halve_weights(folder: Path) -> None:
    """Store the float32 tensors of a saved model as float16 (half the size; they load as float32 as well)."""
    import torch
    from safetensors.torch import load_file, save_file

    for path in sorted(Path(folder).glob("*.safetensors")):
        tensors = load_file(str(path))
        halved = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
        staging = path.with_suffix(".tmp")
        save_file(halved, str(staging), metadata={"format": "pt"})
        os.replace(staging, path)


def save(trained: Trained, out: Path, base: Base, config: ControlNetConfig, *, command: str, threads: int,
         half: bool = True) -> Path:
    """Write the diffusers ControlNet folder (config.json + safetensors), training_config.json and the card."""
    import torch

    out = Path(out)
    staging = out.parent / f".{out.name}.saving"
    if staging.exists():
        shutil.rmtree(staging)
    trained.controlnet.save_pretrained(str(staging), safe_serialization=True)
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
        "base": {"name": base.path.name, "unet_sha256": base.unet_sha256, "rows": base.rows,
                 "prediction_type": base.prediction_type},
        "recommended": base.recommended,
        "timing": {"threads": threads, "torch": torch.__version__, "minutes": trained.seconds["total"] / 60,
                   "prepare_minutes": trained.seconds["prepare"] / 60},
        "command": command,
        "steps_done": trained.steps,
        "reproduce": reproduce_command(command, trained.steps) if trained.steps < config.steps else command,
    }
    (out / "training_config.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    from tools.shapes_controlnet.card import write_card

    write_card(out, record)
    return out


def folder_size(folder: Path) -> int:
    """Bytes of a model folder (without training state)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and STATE_DIR not in p.parts)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = trainer_parser("python -m tools.shapes_controlnet.train", __doc__.split("\n")[0],
                            "ControlNet folder to write", PRESETS,
                            steps_help="training steps", checkpoint_every=200,
                            set_example="--set lr=3e-4 --set recipe.canny=0.3",
                            max_minutes_help=MAX_MINUTES_HELP)
    parser.add_argument("--base", type=Path, default=Path("models/Stable-diffusion/sfumato-shapes"),
                        help=BASE_HELP)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = parse_args(arguments)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = make_config(args.preset, args.seed, args.steps, args.set)
    base = read_base(args.base)
    out = Path(args.out)
    if not args.resume and (out / STATE_DIR).exists():
        shutil.rmtree(out / STATE_DIR)
    trained = train(base, config, out, resume=args.resume, threads=args.threads,
                    checkpoint_every=args.checkpoint_every, progress=not args.quiet, max_minutes=args.max_minutes)
    command = card_command("tools.shapes_controlnet.train", arguments)
    save(trained, out, base, config, command=command, threads=args.threads, half=not args.full_precision)
    if not args.keep_state and (out / STATE_DIR).exists():
        shutil.rmtree(out / STATE_DIR)
    print(f"Trained {trained.steps} of {config.steps} steps in {trained.seconds['total'] / 60:.1f} min; "
          f"saved to {out} ({folder_size(out) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
