"""The interrogate kind of work: image -> prompt through the job queue, like every other kind.

Queued with the others (the models share the worker and its accelerator), with progress (the caption, then each
term list), interrupt, history and persistence: the image is kept in the job's folder, the caption in its record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.errors import RequestError
from modules.image.codec import read_saved_image, write_saved_image
from modules.interrogate.engine import InterrogateModels
from modules.interrogate.folders import InterrogatorFolders
from modules.interrogate.request import InterrogateRequest, validate_fields
from modules.interrogate.terms import BUILTIN_DIR, Category, load_categories
from modules.jobs.artifacts import Artifact
from modules.jobs.control import JobControl, Progress
from modules.jobs.kinds import Kind

INTERROGATE = "interrogate"


@dataclass(frozen=True)
class InterrogateResult:
    """``caption`` is what A1111's API answers: the sentence, then the ranked terms, joined by ", "."""

    caption: str
    sentence: str = ""
    terms: tuple[tuple[str, str], ...] = ()  # (list name, term), in the order they were appended
    captioner: str = ""
    clip_model: str | None = None
    interrupted: bool = False

    @property
    def artifacts(self) -> list[Artifact]:
        return []  # words, not files: front ends read ``caption``

    @property
    def counted_images(self) -> int:
        return 0


def join_caption(sentence: str, terms: list[str] | tuple[str, ...]) -> str:
    """A1111's clip interrogator's shape: ``sentence, term, term``."""
    return ", ".join(part for part in (sentence, *terms) if part)


class InterrogateRunner:
    """Runs interrogate requests on the worker thread, which owns ``models``."""

    def __init__(self, folders: InterrogatorFolders, models: InterrogateModels,
                 builtin_terms: Path = BUILTIN_DIR) -> None:
        self.folders = folders
        self.models = models
        self.builtin_terms = builtin_terms

    def categories(self) -> list[Category]:
        return load_categories(self.builtin_terms, self.folders.terms_dir)

    def resolve(self, request: InterrogateRequest) -> InterrogateRequest:
        """The first installed models when the request names none, decided at submission so the stored job says
        which answered; a normalised interrogator name ("CLIP" -> "clip")."""
        request = request.replace(model=request.model.strip().lower())
        if request.captioner is None:
            found = self.folders.of_role("captioner")
            request = request.replace(captioner=found[0].name) if found else request
        if request.ranks_terms and request.clip_model is None:
            found = self.folders.of_role("ranker")
            request = request.replace(clip_model=found[0].name) if found else request
        return request

    def validate(self, request: InterrogateRequest) -> None:
        """Fields, then the model folders: a missing model is refused before queueing, naming the folder."""
        validate_fields(request)
        self.folders.find("captioner", request.captioner, "captioner" if request.captioner else "model")
        if request.ranks_terms:
            self.folders.find("ranker", request.clip_model, "clip_model" if request.clip_model else "model")
            if not self.categories():
                raise RequestError("model", f"no term lists to rank: the built-in ones are missing from "
                                            f"{self.builtin_terms} and models/interrogate/ has no .txt lists")

    def run(self, request: InterrogateRequest, control: JobControl) -> InterrogateResult:
        assert request.image is not None  # validated
        captioner = self.folders.find("captioner", request.captioner, "captioner")
        ranker = self.folders.find("ranker", request.clip_model, "clip_model") if request.ranks_terms else None
        categories = self.categories() if ranker is not None else []
        image = request.image.convert("RGB")
        progress = Progress(job_count=1, steps=1 + len(categories), text=f"Captioning with {captioner.name}")
        control.report(progress)
        try:
            sentence = self.models.caption(captioner, image, request.max_tokens)
            progress.step = 1
            control.report(progress)
            chosen: list[tuple[str, str, float]] = []
            interrupted = control.interrupted.is_set()
            if ranker is not None and not interrupted:
                def on_category(index: int) -> bool:
                    progress.step, progress.text = 1 + index, f"Ranking {categories[index].name} with {ranker.name}"
                    control.report(progress)
                    return not control.interrupted.is_set()

                chosen = self.models.rank(ranker, image, categories, on_category)
                interrupted = control.interrupted.is_set()
                progress.step = progress.steps
                control.report(progress)
        finally:
            self.models.release()
        terms = tuple((name, term) for name, term, _score in chosen)
        return InterrogateResult(caption=join_caption(sentence, [term for _name, term in terms]), sentence=sentence,
                                 terms=terms, captioner=captioner.name,
                                 clip_model=ranker.name if ranker is not None else None, interrupted=interrupted)


# -- the record codec -----------------------------------------------------------------------------------------------
_FIELDS = tuple(field.name for field in dataclasses.fields(InterrogateRequest) if field.name != "image")


def request_to_dict(request: InterrogateRequest, folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = {name: getattr(request, name) for name in _FIELDS}
    data["image"] = write_saved_image(request.image, folder, "input.png") if request.image is not None else None
    return data


def request_from_dict(data: dict[str, Any], folder: Path, strict: bool) -> InterrogateRequest:
    values = {key: value for key, value in data.items() if key in _FIELDS}
    image = read_saved_image(data["image"], folder, "image", strict) if data.get("image") else None
    return InterrogateRequest(image=image, **values)


def result_to_dict(result: InterrogateResult, folder: Path) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data["terms"] = [list(pair) for pair in result.terms]
    return data


def result_from_dict(data: dict[str, Any], folder: Path) -> tuple[InterrogateResult, list[str]]:
    terms = tuple((str(pair[0]), str(pair[1])) for pair in data.get("terms") or [] if len(pair) == 2)
    return InterrogateResult(caption=str(data.get("caption", "")), sentence=str(data.get("sentence", "")),
                             terms=terms, captioner=str(data.get("captioner", "")),
                             clip_model=data.get("clip_model"), interrupted=bool(data.get("interrupted"))), []


def interrogate_kind(runner: InterrogateRunner) -> Kind:
    def describe(request: InterrogateRequest) -> str:
        models = request.captioner or "?"
        if request.ranks_terms:
            models += f" + {request.clip_model or '?'}"
        return f"{request.model} ({models})"

    return Kind(
        name=INTERROGATE,
        request_type=InterrogateRequest,
        validate=runner.validate,
        run=runner.run,
        encode_request=request_to_dict,
        decode_request=request_from_dict,
        encode_result=result_to_dict,
        decode_result=result_from_dict,
        resolve=runner.resolve,
        initial_progress=lambda request: Progress(job_count=1, steps=1 + (len(runner.categories())
                                                                          if request.ranks_terms else 0)),
        label=lambda _request: INTERROGATE,
        describe=describe,
    )
