"""The train kind's request: what to learn, from which images, how, and where the result goes.

One frozen record holds every choice of a run, so the stored job (and the run's ``config.json``) reproduces it.
The checks here need nothing but the request; images, the base model and the tokenizer are checked by the kind.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image

from modules.errors import RequestError, check_range

METHODS = ("lora", "dreambooth", "textual_inversion")
MIXED_PRECISION = ("no", "fp16", "bf16")
# diffusers.optimization.get_scheduler's names
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$")
MIN_RESOLUTION, MAX_RESOLUTION = 64, 2048
MAX_RANK = 256
PRIOR_TARGETS: tuple[str, ...] = ("images", "base_model")


@dataclass(frozen=True, eq=False)
class TrainRequest:
    """One training run. ``images`` (uploads, with ``captions`` beside them, "" = none) and/or ``data_dir`` (a
    folder of images, each with an optional ``<stem>.txt`` caption) are the instance images; an image without a
    caption is trained on ``instance_prompt``, which holds ``rare_token`` (for textual inversion the token stands
    for the new embedding). ``prior_preservation`` mixes in ``num_class_images`` pictures of ``class_prompt``
    (one prompt, or several one per line that the pictures cycle through) made by the base model itself, weighted
    by ``prior_loss_weight``; ``class_data_dir`` gives your own class pictures instead (kohya's "regularisation
    images": a folder, each picture with an optional ``<stem>.txt`` caption, else the class prompt), topped up
    with generated ones to ``num_class_images`` when a class prompt is given. ``prior_target`` "images" trains
    the class half on the class pictures as DreamBooth does; "base_model" makes the frozen base model's own
    prediction on them the target (output preservation, as ai-toolkit's "differential output preservation" does),
    every second one with an empty caption, so what the trained weights change without the rare token, the
    unconditional half of CFG included, is pulled back to what the base did. ``steps`` count optimizer updates
    (each of ``gradient_accumulation`` batches).
    ``resume`` continues from the newest checkpoint of an identical run. ``train_token_embedding`` (LoRA only:
    "pivotal tuning") also trains the rare token's input embedding, at ``embedding_learning_rate``, starting from
    the embedding of ``token_init_text`` ("" = the token's own); the LoRA file then bundles it as A1111 and kohya
    do (``bundle_emb.<token>.string_to_param.*``), and a prompt that uses the LoRA gets the token with it."""

    output_name: str = ""
    method: str = "lora"
    base_model: str | None = None  # None = the studio's default model, decided at submission
    data_dir: str | None = None
    images: tuple[Image.Image, ...] = ()
    captions: tuple[str, ...] = ()
    instance_prompt: str = "a photo of sks"
    rare_token: str = "sks"
    class_prompt: str = ""
    class_data_dir: str | None = None
    prior_preservation: bool = False
    prior_loss_weight: float = 1.0
    prior_target: str = "images"
    num_class_images: int = 50
    class_steps: int = 20  # sampling steps of the generated class images
    resolution: int = 512
    buckets: bool = True  # aspect-ratio buckets; else every image is cropped square
    flip: bool = False
    random_crop: bool = False
    steps: int = 500
    batch_size: int = 1
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    seed: int = 0
    mixed_precision: str = "no"
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_targets: tuple[str, ...] = UNET_TARGETS
    train_text_encoder: bool = False
    text_encoder_targets: tuple[str, ...] = TEXT_TARGETS
    train_token_embedding: bool = False  # LoRA: pivotal tuning, the rare token's embedding trained with the LoRA
    embedding_learning_rate: float = 5e-3  # embeddings want a higher rate than LoRA layers
    token_init_text: str = ""  # pivotal tuning: the word(s) the token's vector starts from ("" = the token itself)
    ema: bool = False
    ema_decay: float = 0.999
    ti_vectors: int = 1  # textual inversion: vectors per token
    ti_init_text: str = "*"  # textual inversion: the words the vectors start from
    ti_continue: bool = False  # textual inversion: start from models/embeddings/<output_name>.pt (A1111's way)
    checkpoint_every: int = 100
    checkpoint_limit: int = 3  # 0 = keep every checkpoint
    sample_every: int = 0  # 0 = no samples
    sample_prompts: tuple[str, ...] = ()
    sample_steps: int = 20
    tensorboard: bool = False
    resume: bool = True

    def replace(self, **changes: Any) -> TrainRequest:
        return dataclasses.replace(self, **changes)

    @property
    def trains_lora(self) -> bool:
        return self.method == "lora"


def validate_fields(request: TrainRequest) -> None:
    """Everything that can be said from the request alone, each error naming its field."""
    if not NAME_PATTERN.match(request.output_name or "") or request.output_name.strip() != request.output_name:
        raise RequestError("output_name", "give the result a name: letters, digits, spaces, '_', '-' or '.', "
                                          "starting with a letter or digit, at most 100 characters")
    if request.method not in METHODS:
        raise RequestError("method", f"unknown method {request.method!r}; choose one of {', '.join(METHODS)}")
    if not request.images and not request.data_dir:
        raise RequestError("images", "no training images: upload some or give a folder of images")
    if request.captions and len(request.captions) != len(request.images):
        raise RequestError("captions", f"{len(request.captions)} captions for {len(request.images)} images")
    if not request.rare_token.strip() or len(request.rare_token.split()) != 1:
        raise RequestError("rare_token", "give one word (the rare token the subject is bound to, e.g. sks)")
    if not re.search(rf"(?<!\w){re.escape(request.rare_token)}(?!\w)", request.instance_prompt):
        raise RequestError("instance_prompt", f"the instance prompt must contain the rare token "
                                              f"{request.rare_token!r}, e.g. 'a photo of {request.rare_token} dog'")
    if request.class_data_dir and not request.prior_preservation:
        raise RequestError("class_data_dir", "class images are used for prior preservation: turn it on, or leave "
                                             "the class image folder empty")
    if request.prior_preservation:
        if not request.class_prompt.strip() and not request.class_data_dir:
            raise RequestError("class_prompt", "prior preservation needs a class prompt (e.g. 'a photo of a dog') "
                                               "or a folder of class images")
        check_range("num_class_images", request.num_class_images, 1, 10000)
        check_range("prior_loss_weight", request.prior_loss_weight, 0.0, 100.0)
        check_range("class_steps", request.class_steps, 1, 150)
        if request.prior_target not in PRIOR_TARGETS:
            raise RequestError("prior_target", f"one of {', '.join(PRIOR_TARGETS)}, got {request.prior_target!r}")
        if request.prior_target == "base_model" and request.method != "lora":
            raise RequestError("prior_target", "the base model's output is the LoRA switched off, so this target is "
                                               "for LoRA training; use images")
    check_range("resolution", request.resolution, MIN_RESOLUTION, MAX_RESOLUTION)
    if request.resolution % 8:
        raise RequestError("resolution", f"must be a multiple of 8, got {request.resolution}")
    check_range("steps", request.steps, 1, 1_000_000)
    check_range("batch_size", request.batch_size, 1, 64)
    check_range("gradient_accumulation", request.gradient_accumulation, 1, 1024)
    if not 0 < request.learning_rate <= 1:  # NaN fails too
        raise RequestError("learning_rate", f"must be above 0 and at most 1, got {request.learning_rate:g}")
    if request.lr_schedule not in LR_SCHEDULES:
        raise RequestError("lr_schedule", f"unknown schedule {request.lr_schedule!r}; one of {', '.join(LR_SCHEDULES)}")
    check_range("lr_warmup_steps", request.lr_warmup_steps, 0, request.steps)
    check_range("seed", request.seed, 0, 2**32 - 1)
    if request.mixed_precision not in MIXED_PRECISION:
        raise RequestError("mixed_precision", f"one of {', '.join(MIXED_PRECISION)}")
    if request.method == "lora":
        check_range("lora_rank", request.lora_rank, 1, MAX_RANK)
        if not 0 < request.lora_alpha <= 4 * MAX_RANK:
            raise RequestError("lora_alpha", f"must be above 0 and at most {4 * MAX_RANK}, got {request.lora_alpha:g}")
        if not request.lora_targets:
            raise RequestError("lora_targets", "name at least one UNet layer for the LoRA (e.g. to_q)")
    if request.train_token_embedding:
        if request.method != "lora":
            raise RequestError("train_token_embedding", "training the token's embedding with the weights (pivotal "
                                                        "tuning) is a LoRA option; textual inversion trains it alone")
        if not 0 < request.embedding_learning_rate <= 1:  # NaN fails too
            raise RequestError("embedding_learning_rate", f"must be above 0 and at most 1, got "
                                                          f"{request.embedding_learning_rate:g}")
    if request.ema:
        check_range("ema_decay", request.ema_decay, 0.0, 1.0)
    if request.method == "textual_inversion":
        check_range("ti_vectors", request.ti_vectors, 1, 75)
    check_range("checkpoint_every", request.checkpoint_every, 1, 1_000_000)
    check_range("checkpoint_limit", request.checkpoint_limit, 0, 1000)
    check_range("sample_every", request.sample_every, 0, 1_000_000)
    check_range("sample_steps", request.sample_steps, 1, 150)
    if request.sample_every and not request.sample_prompts:
        raise RequestError("sample_prompts", "samples every N steps need at least one prompt")
