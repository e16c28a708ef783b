"""The training loop: LoRA (PEFT on the UNet's attention, optionally the text encoder), DreamBooth (the whole
UNet, optionally the text encoder) or textual inversion (new token vectors), on accelerate.

Determinism and resuming: micro-batch number m draws its noise, timesteps, VAE sample, flips and crops from a
generator seeded by (seed, m), and visits the examples ``data.batch_at(m)`` names, so a run is a function of its
configuration and the step it starts from. A checkpoint holds what else a step depends on: the trained weights,
the optimizer's and the learning-rate scheduler's state, the EMA copy, the loss history and (for whatever a
library draws from the global generators) the torch, numpy and python random states. A run killed at any point
and resumed from its newest checkpoint therefore reaches the same weights and the same loss curve.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from modules.errors import RequestError
from modules.training import data as dataset
from modules.training.request import TrainRequest
from modules.training.run_folder import RunFolder

log = logging.getLogger(__name__)
PLACEHOLDER = "<sfumato-train-{}>"


@dataclass
class StepReport:
    step: int
    steps: int
    loss: float
    learning_rate: float


@dataclass
class TrainHooks:
    """What the loop tells its caller and asks it. ``should_stop`` is polled between steps (pause, cancel,
    shutdown): the loop then writes a checkpoint of where it got to and returns."""

    should_stop: Callable[[], bool] = lambda: False
    on_step: Callable[[StepReport], None] = lambda _report: None
    on_samples: Callable[[int, list[Image.Image]], None] = lambda _step, _images: None
    on_checkpoint: Callable[[int], None] = lambda _step: None


@dataclass
class TrainOutcome:
    step: int
    losses: list[float]
    stopped: bool
    resumed_from: int = 0  # the checkpoint's step the run continued from (0: from the start)
    state: dict[str, Any] = field(default_factory=dict)  # what the result writer needs (LoRA layers, vectors...)


class TokenVectors:
    """Factory for the textual-inversion parameter (a module, so accelerate can prepare it like any model)."""

    @staticmethod
    def make(initial: Any) -> Any:
        import torch

        module = torch.nn.Module()
        module.vectors = torch.nn.Parameter(initial.clone())
        return module


def step_generator(seed: int, micro: int) -> Any:
    """The generator of micro-batch ``micro``: independent of everything that ran before it."""
    import numpy as np
    import torch

    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, micro]).generate_state(1)[0]))


@contextmanager
def adapters_off(*models: Any) -> Iterator[None]:
    """The models as the base was: every PEFT LoRA layer in them bypassed for the block (the trained token vector is
    not used by captions without the token)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [module for model in models if hasattr(model, "modules") for module in model.modules()
              if isinstance(module, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


class Trainer:
    """One run on a loaded pipeline (a fresh float32 copy of the base model this run owns and changes)."""

    def __init__(self, request: TrainRequest, pipe: Any, examples: list[dataset.Example],
                 class_examples: list[dataset.Example], folder: RunFolder, initial_vectors: Any = None) -> None:
        self.request = request
        self.pipe = pipe
        self.examples = examples
        self.class_examples = class_examples
        self.folder = folder
        sizes = dataset.bucket_sizes(request.resolution, request.buckets)
        self.buckets = [dataset.nearest_bucket(example.image.size, sizes) for example in examples]
        self._placeholder_tokenizer: Any = None
        self.initial_vectors = initial_vectors  # textual inversion continuing an embedding

    # -- set-up --------------------------------------------------------------------------------------------------
    def _prepare_models(self) -> dict[str, Any]:
        """Freeze what is not trained, add what is; the modules whose parameters the optimizer takes."""
        import torch
        from peft import LoraConfig, inject_adapter_in_model

        request, pipe = self.request, self.pipe
        for part in (pipe.vae, pipe.unet, *self.text_encoders.values()):
            part.requires_grad_(False)
        trained: dict[str, Any] = {}
        torch.manual_seed(request.seed)  # the LoRA layers' initial weights
        if request.method == "lora":
            inject_adapter_in_model(LoraConfig(r=request.lora_rank, lora_alpha=request.lora_alpha,
                                               target_modules=list(request.lora_targets)), pipe.unet)
            trained["unet"] = pipe.unet
            if request.train_text_encoder:
                for name, encoder in self.text_encoders.items():
                    inject_adapter_in_model(LoraConfig(r=request.lora_rank, lora_alpha=request.lora_alpha,
                                                       target_modules=list(request.text_encoder_targets)), encoder)
                    trained[name] = encoder
            for model in trained.values():
                for name, parameter in model.named_parameters():
                    parameter.requires_grad_("lora_" in name)
            if not any(p.requires_grad for p in pipe.unet.parameters()):
                raise RequestError("lora_targets", f"no UNet layer is named {', '.join(request.lora_targets)}")
            if request.train_token_embedding:  # pivotal tuning: the token's vector learns with the LoRA
                trained["vectors"] = TokenVectors.make(self._token_vector())
        elif request.method == "dreambooth":
            pipe.unet.requires_grad_(True)
            trained["unet"] = pipe.unet
            if request.train_text_encoder:
                for name, encoder in self.text_encoders.items():
                    encoder.requires_grad_(True)
                    trained[name] = encoder
        else:
            trained["vectors"] = TokenVectors.make(self._initial_vectors())
        if request.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
            for name, encoder in self.text_encoders.items():
                if name in trained:
                    encoder.gradient_checkpointing_enable()
        return trained

    def _token_vector(self) -> Any:
        """Pivotal tuning's one vector: the embedding of ``token_init_text`` (the mean of its tokens), or of the rare
        token itself when that is empty."""
        tokenizer, encoder = self.pipe.tokenizer, self.pipe.text_encoder
        text = self.request.token_init_text.strip() or self.request.rare_token
        ids = tokenizer(text, add_special_tokens=False).input_ids or [tokenizer.eos_token_id]
        table = encoder.get_input_embeddings().weight.detach()
        return table[ids].float().mean(dim=0, keepdim=True)

    def _initial_vectors(self) -> Any:
        """Textual inversion starts from the embedding of ``ti_init_text`` (repeated to the asked count)."""
        import torch

        if self.initial_vectors is not None:
            return self.initial_vectors.detach().float().clone()
        tokenizer, encoder = self.pipe.tokenizer, self.pipe.text_encoder
        ids = tokenizer(self.request.ti_init_text or "*", add_special_tokens=False).input_ids
        ids = ids or [tokenizer.eos_token_id]
        table = encoder.get_input_embeddings().weight.detach()
        rows = [table[ids[index % len(ids)]] for index in range(self.request.ti_vectors)]
        return torch.stack(rows).float()

    def _parameter_groups(self, trained: dict[str, Any]) -> list[dict[str, Any]]:
        """The optimizer's groups: the weights at ``learning_rate``; a token vector trained beside a LoRA at its
        own ``embedding_learning_rate`` (textual inversion's vectors, alone, take ``learning_rate``)."""
        request = self.request
        weights = [p for name, model in trained.items() if name != "vectors"
                   for p in model.parameters() if p.requires_grad]
        groups = [{"params": weights, "lr": request.learning_rate}] if weights else []
        if "vectors" in trained:
            rate = request.embedding_learning_rate if request.method == "lora" else request.learning_rate
            groups.append({"params": list(trained["vectors"].parameters()), "lr": rate})
        return groups

    # -- text ------------------------------------------------------------------------------------------------------
    @property
    def text_encoders(self) -> dict[str, Any]:
        """The pipeline's text encoders by component name (SDXL has two)."""
        names = ("text_encoder", "text_encoder_2")
        return {name: getattr(self.pipe, name) for name in names if getattr(self.pipe, name, None) is not None}

    @property
    def is_xl(self) -> bool:
        return "text_encoder_2" in self.text_encoders

    def conditioning(self, captions: list[str], vectors: Any = None) -> tuple[Any, Any]:
        """(text states, pooled embedding or None) for ``captions``: SD 1.x/2.x read the one encoder's last
        layer; SDXL joins both encoders' penultimate layers and pools the second, as its pipeline does."""
        if not self.is_xl:
            return self.encode(captions, vectors), None
        import torch

        states, pooled = [], None
        for tokenizer, encoder in ((self.pipe.tokenizer, self.pipe.text_encoder),
                                   (self.pipe.tokenizer_2, self.pipe.text_encoder_2)):
            ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(encoder.device)
            output = encoder(ids, output_hidden_states=True)
            states.append(output.hidden_states[-2])
            pooled = output[0]
        return torch.cat(states, dim=-1), pooled

    def encode(self, captions: list[str], vectors: Any = None) -> Any:
        """Text-encoder states for ``captions``; for textual inversion the rare token's place holds ``vectors``
        (placeholder tokens past the vocabulary, whose embeddings a hook fills in)."""
        import re

        import torch

        tokenizer, encoder = self.pipe.tokenizer, self.pipe.text_encoder
        device = encoder.device
        if vectors is None:
            ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(device)
            return encoder(ids)[0]
        if self._placeholder_tokenizer is None:
            import copy

            self._placeholder_tokenizer = copy.deepcopy(tokenizer)
            self._placeholder_tokenizer.add_tokens([PLACEHOLDER.format(i) for i in range(vectors.shape[0])])
        words = " ".join(PLACEHOLDER.format(i) for i in range(vectors.shape[0]))
        token = re.compile(rf"(?<!\w){re.escape(self.request.rare_token)}(?!\w)")
        texts = [token.sub(words, caption) for caption in captions]
        ids = self._placeholder_tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                                          truncation=True, return_tensors="pt").input_ids.to(device)
        first = len(tokenizer)
        slots = ids >= first
        embedding = encoder.get_input_embeddings()

        def put_vectors(_module: Any, _inputs: Any, output: Any) -> Any:
            output = output.clone()
            output[slots] = vectors.to(output.dtype)[ids[slots] - first]
            return output

        handle = embedding.register_forward_hook(put_vectors)
        try:
            return encoder(torch.where(slots, torch.zeros_like(ids), ids))[0]
        finally:
            handle.remove()

    # -- the loop --------------------------------------------------------------------------------------------------
    def train(self, hooks: TrainHooks, device: str | None = None) -> TrainOutcome:
        import torch
        from accelerate import Accelerator
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler

        request, pipe = self.request, self.pipe
        if request.mixed_precision == "fp16" and not torch.cuda.is_available():
            raise RequestError("mixed_precision", "fp16 needs a CUDA GPU; this device has none (use bf16 or no)")
        from accelerate.state import AcceleratorState, GradientState

        # accelerate keeps its state in process-wide singletons, fixed by the first Accelerator: a studio runs many
        # trainings in one process, each with its own precision and accumulation
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        accelerator = Accelerator(mixed_precision=request.mixed_precision,
                                  gradient_accumulation_steps=request.gradient_accumulation,
                                  cpu=device == "cpu")
        trained = self._prepare_models()
        pipe.to(accelerator.device)
        parameters = [p for model in trained.values() for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self._parameter_groups(trained), lr=request.learning_rate)
        schedule = get_scheduler(request.lr_schedule, optimizer=optimizer,
                                 num_warmup_steps=request.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=request.steps * accelerator.num_processes)
        names = list(trained)
        prepared = accelerator.prepare(*trained.values(), optimizer, schedule)
        models = dict(zip(names, prepared[:len(names)], strict=True))
        optimizer, schedule = prepared[len(names):]
        ema = None
        if request.ema:
            from diffusers.training_utils import EMAModel

            ema = EMAModel(parameters, decay=request.ema_decay)
        noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

        step, losses = 0, []
        latest = self.folder.latest_checkpoint()
        if latest is not None:
            step, losses = self._load_checkpoint(latest[1], parameters, optimizer, schedule, ema)
            log.info("resuming %s from step %d", request.output_name, step)

        writer = self._tensorboard() if request.tensorboard else None
        stopped = False
        try:
            for model in models.values():
                model.train()
            while step < request.steps:
                if hooks.should_stop():
                    stopped = True
                    break
                step_loss = 0.0
                for k in range(request.gradient_accumulation):
                    micro = step * request.gradient_accumulation + k
                    with accelerator.accumulate(*models.values()):
                        loss = self._loss(micro, models, noise_scheduler, accelerator.device)
                        accelerator.backward(loss)
                        if accelerator.sync_gradients:
                            accelerator.clip_grad_norm_(parameters, 1.0)
                        optimizer.step()
                        schedule.step()
                        optimizer.zero_grad(set_to_none=True)
                    step_loss += float(loss.detach()) / request.gradient_accumulation
                if ema is not None:
                    ema.step(parameters)
                step += 1
                losses.append(step_loss)
                learning_rate = float(schedule.get_last_lr()[0])
                if writer is not None:
                    writer.add_scalar("loss", step_loss, step)
                    writer.add_scalar("learning_rate", learning_rate, step)
                hooks.on_step(StepReport(step, request.steps, step_loss, learning_rate))
                if step % request.checkpoint_every == 0 or step == request.steps:
                    self._save_checkpoint(step, losses, parameters, optimizer, schedule, ema)
                    hooks.on_checkpoint(step)
                if request.sample_every and step % request.sample_every == 0:
                    hooks.on_samples(step, self.samples(models, parameters, ema))
            if stopped and (latest is None or step > latest[0]) and step > 0:
                saved = self.folder.latest_checkpoint()
                if saved is None or saved[0] < step:
                    self._save_checkpoint(step, losses, parameters, optimizer, schedule, ema)
                    hooks.on_checkpoint(step)
        finally:
            if writer is not None:
                writer.close()
        if ema is not None and not stopped:
            ema.copy_to(parameters)
        state = {"models": {**{name: accelerator.unwrap_model(model) for name, model in models.items()}, "pipe": pipe}}
        return TrainOutcome(step=step, losses=losses, stopped=stopped, state=state,
                            resumed_from=latest[0] if latest is not None else 0)

    def _loss(self, micro: int, models: dict[str, Any], noise_scheduler: Any, device: Any) -> Any:
        import torch
        import torch.nn.functional as F

        request, pipe = self.request, self.pipe
        generator = step_generator(request.seed, micro)
        indices = dataset.batch_at(micro, self.buckets, request.batch_size, request.seed)
        size = self.buckets[indices[0]]
        chosen = [self.examples[index] for index in indices]
        if self.class_examples:
            first = micro * request.batch_size
            chosen += [self.class_examples[(first + j) % len(self.class_examples)] for j in range(len(indices))]
        pixels = torch.stack([dataset.to_tensor(example.image, size, flip=request.flip,
                                                random_crop=request.random_crop, generator=generator)
                              for example in chosen]).to(device=device, dtype=pipe.vae.dtype)
        with torch.no_grad():
            posterior = pipe.vae.encode(pixels).latent_dist
        # drawn from this micro-batch's generator (the posterior's own sample would take a device generator)
        draw = torch.randn(posterior.mean.shape, generator=generator).to(device=device, dtype=posterior.mean.dtype)
        latents = (posterior.mean + posterior.std * draw) * pipe.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(device=device, dtype=latents.dtype)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  generator=generator).to(device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        captions = [example.caption for example in chosen]
        preserve = bool(self.class_examples) and request.prior_target == "base_model"
        half = len(indices)  # the class pictures, when there are any, are the second half of the batch
        if preserve:  # every second class picture speaks for the unconditional half of CFG
            captions[half:] = ["" if (micro * request.batch_size + j) % 2 else caption
                               for j, caption in enumerate(captions[half:])]
        vectors = models["vectors"].vectors if "vectors" in models else None
        if any(name in models for name in self.text_encoders) or vectors is not None:
            states, pooled = self.conditioning(captions, vectors)
        else:
            with torch.no_grad():
                states, pooled = self.conditioning(captions)
        extra = {}
        if pooled is not None:  # SDXL's size conditioning: the picture as it is, uncropped
            height, width = size[1], size[0]
            time_ids = torch.tensor([[height, width, 0, 0, height, width]] * latents.shape[0], device=device,
                                    dtype=states.dtype)
            extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
        prediction = pipe.unet(noisy, timesteps, states, **extra).sample
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        if not self.class_examples:
            return F.mse_loss(prediction.float(), target.float())
        if preserve:
            with torch.no_grad(), adapters_off(*models.values()):
                base_states, base_pooled = self.conditioning(captions[half:])
                base_extra = {}
                if base_pooled is not None:
                    base_extra["added_cond_kwargs"] = {"text_embeds": base_pooled,
                                                       "time_ids": extra["added_cond_kwargs"]["time_ids"][half:]}
                base = pipe.unet(noisy[half:], timesteps[half:], base_states, **base_extra).sample
            target = torch.cat([target[:half], base.to(target.dtype)])
        own, prior = prediction.float().chunk(2), target.float().chunk(2)
        return F.mse_loss(own[0], prior[0]) + request.prior_loss_weight * F.mse_loss(own[1], prior[1])

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def _save_checkpoint(self, step: int, losses: list[float], parameters: list[Any], optimizer: Any,
                         schedule: Any, ema: Any) -> None:
        import numpy as np
        import torch

        from modules.training.outputs import write_torch

        payload = {
            "step": step, "losses": list(losses),
            "parameters": [p.detach().cpu().clone() for p in parameters],
            "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "data_order": {"seed": self.request.seed, "next_micro": step * self.request.gradient_accumulation},
        }
        write_torch(self.folder.checkpoint_path(step), payload)
        self.folder.prune(self.request.checkpoint_limit)

    def _load_checkpoint(self, path: Any, parameters: list[Any], optimizer: Any, schedule: Any, ema: Any
                         ) -> tuple[int, list[float]]:
        import numpy as np
        import torch

        payload = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by this code
        saved = payload["parameters"]
        if len(saved) != len(parameters) or any(a.shape != b.shape for a, b in zip(saved, parameters, strict=True)):
            raise RequestError("resume", f"the checkpoint {path.name} does not match this run's trained weights")
        with torch.no_grad():
            for parameter, value in zip(parameters, saved, strict=True):
                parameter.copy_(value.to(parameter.device, parameter.dtype))
        optimizer.load_state_dict(payload["optimizer"])
        schedule.load_state_dict(payload["scheduler"])
        if ema is not None and payload.get("ema") is not None:
            ema.load_state_dict(payload["ema"])
        rng = payload.get("rng") or {}
        if rng:
            random.setstate(rng["python"])
            np.random.set_state(rng["numpy"])
            torch.set_rng_state(rng["torch"])
            if rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        return int(payload["step"]), [float(value) for value in payload["losses"]]

    # -- samples and logs ------------------------------------------------------------------------------------------
    def samples(self, models: dict[str, Any], parameters: list[Any], ema: Any) -> list[Image.Image]:
        """One picture per sample prompt from the weights as they are now (the EMA copy when there is one)."""
        import torch

        request, pipe = self.request, self.pipe
        vectors = models["vectors"].vectors.detach() if "vectors" in models else None
        for model in models.values():
            model.eval()
        images = []
        try:
            with torch.no_grad(), _ema_weights(ema, parameters):
                negative, negative_pooled = self.conditioning([""])
                for index, prompt in enumerate(request.sample_prompts):
                    generator = torch.Generator().manual_seed(request.seed + index)
                    states, pooled = self.conditioning([prompt], vectors)
                    pooling = {} if pooled is None else {"pooled_prompt_embeds": pooled,
                                                         "negative_pooled_prompt_embeds": negative_pooled}
                    result = pipe(prompt_embeds=states, negative_prompt_embeds=negative, **pooling,
                                  num_inference_steps=request.sample_steps, width=request.resolution,
                                  height=request.resolution, generator=generator, output_type="pil")
                    images.append(result.images[0])
        finally:
            for model in models.values():
                model.train()
        return images

    def _tensorboard(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.folder.tensorboard_dir))


class _ema_weights:
    """The EMA weights in place for the ``with`` block, the trained ones back after."""

    def __init__(self, ema: Any, parameters: list[Any]) -> None:
        self.ema, self.parameters = ema, parameters

    def __enter__(self) -> None:
        if self.ema is not None:
            self.ema.store(self.parameters)
            self.ema.copy_to(self.parameters)

    def __exit__(self, *_exc: Any) -> None:
        if self.ema is not None:
            self.ema.restore(self.parameters)

