"""The train kind of work: a fine-tuning run through the job queue, with progress, cancel and persistence.

A run lives in its own folder (``run_folder``), keyed by its output name: a job that is stopped (cancelled,
paused from the Train tab, or cut short by a shutdown, after which the queue runs it again) keeps its newest
checkpoint there, and running the same request again continues from it. The result is written into ``models/``
only when the last step is done, atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from modules.errors import RequestError
from modules.image.codec import read_saved_image, write_saved_image
from modules.image.request import GenerationRequest
from modules.jobs.control import JobControl, Progress
from modules.jobs.kinds import Kind
from modules.training.request import TrainRequest, validate_fields
from modules.training.results import TrainResult, result_from_dict, result_to_dict
from modules.training.run_folder import RunFolder, identity

log = logging.getLogger(__name__)
TRAIN = "train"
TRAINABLE_FAMILIES = ("sd1", "sd2", "sdxl")
RARE_TOKENS = ("sks", "ohwx", "phol", "zxc", "vwx", "qwe", "btw", "olis", "xqz")


def rare_token_problem(token: str) -> str | None:
    """None when ``token`` is one token of the CLIP vocabulary, else why not and one that is."""
    from modules.models.clip_vocab import load_clip_tokenizer

    tokenizer = load_clip_tokenizer()
    pieces = tokenizer.tokenize(token)
    if len(pieces) == 1:
        return None
    suggestion = next((word for word in RARE_TOKENS if len(tokenizer.tokenize(word)) == 1 and word != token), "sks")
    return (f"{token!r} is {len(pieces)} tokens to the tokenizer ({' '.join(pieces)}), so the subject would be "
            f"spread over several words; use one token, e.g. {suggestion!r}")


class TrainWriteError(RuntimeError):
    """A run's files could not be written (a full disk ...); the message says what is kept."""


class TrainRunner:
    """Runs train requests on the worker thread (which owns the device while a run trains)."""

    def __init__(self, *, registry: Any, models_dir: Path, training_root: Path,
                 load_base: Callable[[Any], Any],
                 generate: Callable[[GenerationRequest, JobControl], list[Image.Image]],
                 default_model: Callable[[], str | None] = lambda: None,
                 release_generation: Callable[[], None] = lambda: None,
                 device: Callable[[], str] = lambda: "cpu",
                 folders: Any = None) -> None:
        from modules.upscaling.kind import FolderPolicy

        self.registry = registry
        self.models_dir = Path(models_dir)
        self.training_root = Path(training_root)
        self.load_base = load_base
        self.generate = generate
        self.default_model = default_model
        self.release_generation = release_generation
        self.device = device
        self.folders = folders if folders is not None else FolderPolicy()

    # -- before queueing -------------------------------------------------------------------------------------------
    def resolve(self, request: TrainRequest) -> TrainRequest:
        if request.base_model:
            return request
        return request.replace(base_model=self.default_model())

    def validate(self, request: TrainRequest) -> None:
        from modules.models.registry import UnknownModelError
        from modules.training.data import read_examples

        validate_fields(request)
        if not request.base_model:
            raise RequestError("base_model", "no base model: put a checkpoint in models/Stable-diffusion")
        try:
            info = self.registry.find(request.base_model)
        except UnknownModelError as error:
            raise RequestError("base_model", str(error)) from None
        if info.family not in TRAINABLE_FAMILIES:
            raise RequestError("base_model", f"{info.name} is a {info.family or 'unknown'} model; this trainer "
                                             f"trains SD 1.x, 2.x and SDXL models")
        if info.family == "sdxl" and request.method == "textual_inversion":
            raise RequestError("method", "textual inversion trains SD 1.x/2.x embeddings; on SDXL use LoRA")
        if info.family == "sdxl" and request.train_token_embedding:
            raise RequestError("train_token_embedding", "training the token's embedding with the LoRA is done for "
                                                        "SD 1.x/2.x models; on SDXL train the LoRA alone")
        folder = self._folder(request)
        read_examples(request.images, request.captions, folder, request.instance_prompt)
        self._own_class_images(request)
        if request.mixed_precision == "fp16" and not str(self.device()).startswith("cuda"):
            raise RequestError("mixed_precision", f"fp16 needs a CUDA GPU; this studio runs on {self.device()} "
                                                  f"(use bf16 or no)")
        problem = None if request.method == "textual_inversion" else rare_token_problem(request.rare_token)
        if problem:  # an embedding's token is replaced by its own vectors: any word will do
            raise RequestError("rare_token", problem)

    def _folder(self, request: TrainRequest) -> Path | None:
        if not request.data_dir:
            return None
        try:
            return self.folders.check(request.data_dir)
        except RequestError as error:
            raise RequestError("data_dir", error.message) from None

    def _own_class_images(self, request: TrainRequest) -> list[tuple[Image.Image, str]]:
        """The class image folder's pictures with their captions (none without prior preservation)."""
        from modules.training.prior import own_class_images

        if not (request.prior_preservation and request.class_data_dir):
            return []
        try:
            folder = self.folders.check(request.class_data_dir)
        except RequestError as error:
            raise RequestError("class_data_dir", error.message) from None
        return own_class_images(folder, request.class_prompt)

    # -- running ---------------------------------------------------------------------------------------------------
    def run_folder(self, request: TrainRequest) -> RunFolder:
        return RunFolder(self.training_root / request.output_name)

    def run(self, request: TrainRequest, control: JobControl) -> TrainResult:
        from modules.training.curve import loss_curve
        from modules.training.data import read_examples
        from modules.training.trainer import Trainer, TrainHooks

        info = self.registry.find(request.base_model)
        folder = self.run_folder(request)
        self._claim_folder(request, folder, info)
        progress = Progress(steps=request.steps, text="Reading the images")
        control.report(progress)
        examples = read_examples(request.images, request.captions, self._folder(request), request.instance_prompt)
        if request.method == "textual_inversion":
            examples = with_token(examples, request.rare_token, request.instance_prompt)
        class_examples = self._class_examples(request, info, control, progress)
        if control.interrupted.is_set():
            return TrainResult(None, request.method, 0, request.steps, run_folder=folder.path, stopped=True)
        self.release_generation()  # the run loads its own copy of the base model and changes it
        progress.text = f"Loading {info.name}"
        control.report(progress)
        pipe = self.load_base(info)
        trainer = Trainer(request, pipe, examples, class_examples, folder,
                          initial_vectors=self._existing_vectors(request))
        samples: list[Path] = []
        newest: list[Image.Image] = []

        def on_step(report: Any) -> None:
            progress.step, progress.text = report.step, f"step {report.step}/{report.steps}, loss {report.loss:.4f}"
            losses.append(report.loss)
            snapshot, sample = list(losses), newest[-1] if newest else None
            progress.offer_preview(lambda: beside(loss_curve(snapshot), sample))
            control.report(progress)

        def on_samples(step: int, images: list[Image.Image]) -> None:
            folder.samples_dir.mkdir(parents=True, exist_ok=True)
            for index, image in enumerate(images):
                path = folder.samples_dir / f"step-{step:07d}-{index}.png"
                image.save(path)
                samples.append(path)
            newest[:] = images[:1]

        losses: list[float] = []
        latest = folder.latest_checkpoint()
        if latest is not None:
            import torch

            losses = list(torch.load(latest[1], map_location="cpu", weights_only=False)["losses"])
            progress.step = latest[0]
        try:
            outcome = trainer.train(TrainHooks(should_stop=control.interrupted.is_set, on_step=on_step,
                                               on_samples=on_samples), device=self.device())
        except OSError as error:
            raise TrainWriteError(f"could not write a checkpoint into {folder.checkpoints_dir}: "
                                  f"{error.strerror or error}; the newest complete checkpoint is kept") from error
        curve = loss_curve(outcome.losses)
        curve.save(folder.loss_curve)
        progress.preview = curve
        output = None
        if not outcome.stopped:
            progress.text = "Saving the result"
            control.report(progress)
            try:
                output = self._write_result(request, info, outcome)
            except OSError as error:  # a full disk, a read-only folder, a name taken by a folder
                raise TrainWriteError(f"could not write the trained {request.method} into {self.models_dir}: "
                                      f"{error.strerror or error}. Nothing half-written was left there; the "
                                      f"checkpoint of step {outcome.step} is kept, so running the same request "
                                      f"again writes it without training again") from error
        return TrainResult(output=output, method=request.method, step=outcome.step, steps=request.steps,
                           losses=outcome.losses, loss_curve=folder.loss_curve, samples=samples,
                           run_folder=folder.path, stopped=outcome.stopped, resumed_from=outcome.resumed_from)

    def embedding_path(self, name: str) -> Path:
        from modules.models.registry import EMBEDDINGS_DIR

        return self.models_dir / EMBEDDINGS_DIR / f"{name}.pt"

    def _existing_vectors(self, request: TrainRequest) -> Any:
        """The vectors of the embedding a textual-inversion run continues (A1111 trains a created embedding)."""
        if request.method != "textual_inversion" or not request.ti_continue:
            return None
        from modules.models.networks import NetworkFile, NetworkLoadError, read_embedding

        path = self.embedding_path(request.output_name)
        if not path.is_file():
            raise RequestError("output_name", f"no embedding {path.name} to continue; create it first")
        try:
            return read_embedding(NetworkFile(request.output_name, path, request.output_name))["clip_l"]
        except NetworkLoadError as error:
            raise RequestError("output_name", str(error)) from None

    def create_embedding(self, name: str, vectors: int, init_text: str, overwrite: bool, model: str | None) -> Path:
        """A1111's "Create embedding": ``vectors`` vectors taken from ``init_text``'s token embeddings (zeros for an
        empty text) in the base model's text encoder, written as an untrained embedding (step 0)."""
        import torch

        from modules.models.registry import UnknownModelError
        from modules.training import outputs
        from modules.training.request import NAME_PATTERN

        if not NAME_PATTERN.match(name or ""):
            raise RequestError("name", "give the embedding a name: letters, digits, spaces, '_', '-' or '.'")
        if not 1 <= vectors <= 75:
            raise RequestError("num_vectors_per_token", f"must be between 1 and 75, got {vectors}")
        path = self.embedding_path(name)
        if path.exists() and not overwrite:
            raise RequestError("name", f"file {path} already exists")
        try:
            info = self.registry.find(model or self.default_model() or "")
        except UnknownModelError as error:
            raise RequestError("model", str(error)) from None
        pipe = self.load_base(info)
        table = pipe.text_encoder.get_input_embeddings().weight.detach().float()
        ids = pipe.tokenizer(init_text, add_special_tokens=False).input_ids if init_text else []
        start = torch.zeros(vectors, table.shape[1])
        for index in range(vectors):
            if ids:
                start[index] = table[ids[index * len(ids) // vectors]]
        return outputs.write_torch(path, outputs.embedding_payload(name, start, 0, info.short_hash, info.name))

    def _claim_folder(self, request: TrainRequest, folder: RunFolder, info: Any) -> None:
        """Resume an identical earlier run of this name, else start afresh; write the configuration either way."""
        config = run_config(request, folder.path / "inputs", info)
        old = folder.read_config()
        if not (request.resume and old is not None and identity(old) == identity(config)):
            folder.start_afresh()
        folder.write_config(config)

    def _class_examples(self, request: TrainRequest, info: Any, control: JobControl, progress: Progress) -> list:
        from modules.training.data import Example
        from modules.training.prior import class_folder, class_images

        if not request.prior_preservation:
            return []
        own = self._own_class_images(request)
        missing = request.num_class_images - len(own) if request.class_prompt.strip() else 0
        if missing <= 0:
            return [Example(image, prompt, f"class-{index}") for index, (image, prompt) in enumerate(own)]
        info = self.registry.ensure_hash(info) if hasattr(self.registry, "ensure_hash") else info
        cache = class_folder(self.training_root / "class-images", info.sha256 or info.title, request.class_prompt,
                             request.resolution, request.class_steps)

        def generate(generation: GenerationRequest) -> list[Image.Image]:
            if control.interrupted.is_set():
                return []
            return self.generate(generation, control)

        def on_progress(done: int, count: int) -> None:
            progress.text = f"Class images {done}/{count}"
            control.report(progress)

        images = own + class_images(cache, missing, info.title, request.class_prompt, request.resolution,
                                    request.class_steps, request.seed, generate, on_progress)
        return [Example(image, prompt, f"class-{index}") for index, (image, prompt) in enumerate(images)]

    def _write_result(self, request: TrainRequest, info: Any, outcome: Any) -> Path:
        from modules.models.registry import CHECKPOINT_DIR, EMBEDDINGS_DIR, LORA_DIR
        from modules.training import outputs

        models = outcome.state["models"]
        if request.method == "lora":
            xl = info.family == "sdxl"
            state = outputs.kohya_state_dict(
                {name: model for name, model in models.items() if name in ("unet", "text_encoder", "text_encoder_2")},
                request.lora_alpha, xl=xl, layers_per_block=int(models["unet"].config.layers_per_block))
            metadata = outputs.lora_metadata(request.output_name, request.lora_rank, request.lora_alpha, info.title,
                                             info.family or "sd1", outcome.step)
            if "vectors" in models:  # pivotal tuning: the token travels with the LoRA
                state.update(outputs.bundled_embedding(request.rare_token, models["vectors"].vectors))
            return outputs.write_safetensors(self.models_dir / LORA_DIR / f"{request.output_name}.safetensors",
                                             state, metadata)
        if request.method == "textual_inversion":
            vectors = models["vectors"].vectors
            payload = outputs.embedding_payload(request.output_name, vectors, outcome.step, info.short_hash,
                                                info.name)
            return outputs.write_torch(self.models_dir / EMBEDDINGS_DIR / f"{request.output_name}.pt", payload)
        return self._write_dreambooth(request, self.models_dir / CHECKPOINT_DIR / request.output_name, models)

    def _write_dreambooth(self, request: TrainRequest, target: Path, models: dict[str, Any]) -> Path:
        """The fine-tuned model as one original-layout ``.safetensors`` (what A1111 and ComfyUI load), written
        atomically; the checkpoint list is refreshed so it can be chosen at once."""
        from modules.models.ldm_layout import pipeline_to_ldm
        from modules.training import outputs

        state = pipeline_to_ldm(models["pipe"])
        path = outputs.write_safetensors(target.with_name(target.name + ".safetensors"),
                                         {key: value.float() for key, value in state.items()},
                                         {"sfumato_trainer": "dreambooth", "modelspec.title": request.output_name})
        self.registry.refresh()
        return path


def beside(curve: Image.Image, sample: Image.Image | None) -> Image.Image:
    """The live preview: the loss curve, and the newest sample to its right scaled to the curve's height."""
    if sample is None:
        return curve
    scaled = sample.resize((max(1, sample.width * curve.height // sample.height), curve.height))
    joined = Image.new("RGB", (curve.width + scaled.width, curve.height), (255, 255, 255))
    joined.paste(curve, (0, 0))
    joined.paste(scaled.convert("RGB"), (curve.width, 0))
    return joined


def with_token(examples: list, token: str, instance_prompt: str) -> list:
    """Textual inversion learns only where its token is: a caption without it is joined to the instance prompt."""
    import dataclasses as dc
    import re

    word = re.compile(rf"(?<!\w){re.escape(token)}(?!\w)")
    return [example if word.search(example.caption) or example.caption == instance_prompt
            else dc.replace(example, caption=f"{instance_prompt}, {example.caption}") for example in examples]


def run_config(request: TrainRequest, inputs: Path, info: Any) -> dict[str, Any]:
    """The request as the JSON that reproduces the run (``python -m tools.train --config``): uploads copied into
    ``inputs`` beside it (``images`` names them there), with their hashes, and the base model's hash."""
    data = request_to_dict(request, inputs)
    data["image_hashes"] = [_image_hash(image) for image in request.images]
    data["base_model_hash"] = getattr(info, "sha256", None)
    return data


def _image_hash(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return hashlib.sha256(buffer.getvalue()).hexdigest()


# -- the record codec -----------------------------------------------------------------------------------------------
_FIELDS = tuple(field.name for field in dataclasses.fields(TrainRequest))


def request_to_dict(request: TrainRequest, folder: Path) -> dict[str, Any]:
    data = {name: getattr(request, name) for name in _FIELDS if name != "images"}
    for name in ("captions", "lora_targets", "text_encoder_targets", "sample_prompts"):
        data[name] = list(data[name])
    folder.mkdir(parents=True, exist_ok=True)
    data["images"] = [write_saved_image(image, folder, f"train-{index:03d}.png")
                      for index, image in enumerate(request.images)]
    return data


def request_from_dict(data: dict[str, Any], folder: Path, strict: bool) -> TrainRequest:
    values = {key: value for key, value in data.items() if key in _FIELDS and key != "images"}
    for name in ("captions", "lora_targets", "text_encoder_targets", "sample_prompts"):
        if name in values:
            values[name] = tuple(values[name])
    images = [read_saved_image(name, folder, "images", strict) for name in data.get("images") or []]
    values["images"] = tuple(image for image in images if image is not None)
    return TrainRequest(**values)


def train_kind(runner: TrainRunner) -> Kind:
    def describe(request: TrainRequest) -> str:
        source = request.data_dir or f"{len(request.images)} images"
        return f"{request.method} {request.output_name!r} on {request.base_model} from {source}, {request.steps} steps"

    return Kind(
        name=TRAIN,
        request_type=TrainRequest,
        validate=runner.validate,
        run=runner.run,
        encode_request=request_to_dict,
        decode_request=request_from_dict,
        encode_result=result_to_dict,
        decode_result=result_from_dict,
        resolve=runner.resolve,
        initial_progress=lambda request: Progress(steps=request.steps),
        label=lambda request: f"train {request.method}",
        describe=describe,
    )
