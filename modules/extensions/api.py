"""The public API for extension authors: the only Sfumato module an extension needs to import.

An extension is a folder with ``extension.toml`` (name, version, description, requirements) and a Python entry
point defining ``setup(ext: Extension)``. ``setup`` registers typed hooks by name; nothing is passed by position:

- ``ext.expand_request(fn)``: ``fn(request, settings) -> Sweep | None`` turns one request into several (a sweep);
- ``ext.adjust_request(fn)``: ``fn(request, settings) -> GenerationRequest | None`` changes a request before it runs;
- ``ext.on_step(fn)``: ``fn(event: StepEvent, settings)`` observes each sampling step;
- ``ext.postprocess(fn)``: ``fn(result, request, settings) -> GenerationResult | None`` edits each result;
- ``ext.on_job_end(fn)``: ``fn(outcome: JobOutcome, settings) -> GenerationResult | None`` acts once the whole job
  (every cell of a sweep) has run, e.g. to build a grid;
- ``ext.add_controls(tab, build)``: ``build() -> dict[str, component]`` adds Gradio controls to a tab; their values
  reach the extension by name as ``settings`` (``request.extensions[<extension name>]``);
- ``ext.add_routes(router)``: a FastAPI ``APIRouter`` mounted under ``/extensions/<name>``;
- ``ext.add_css(text)`` / ``ext.add_js(text)``;
- ``ext.add_script(title, arg_names)``: accept A1111's ``script_name`` + positional ``script_args`` for this
  extension, mapped onto ``arg_names`` (positional only for compatibility; natively settings go by name).

``ext.catalog`` (a ``Catalog``) says which samplers, schedule types, checkpoints and VAEs the studio has, so an
extension can offer those names and reject a wrong one before a job runs.

``settings`` is always the dict the request carries for this extension (empty when it carries none). A hook that
raises is logged, the extension is marked failed, and the generation goes on without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.errors import RequestError
from modules.image.request import GenerationRequest
from modules.image.results import GeneratedImage, GenerationResult
from modules.jobs.control import Progress

__all__ = [
    "Catalog", "Cell", "Extension", "GeneratedImage", "GenerationRequest", "GenerationResult", "JobOutcome",
    "Progress", "RequestError", "ScriptArg", "StepEvent", "Sweep",
]

Settings = dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    """Several requests to run in this order in place of one, each with a label (e.g. its axis values)."""

    requests: list[GenerationRequest]
    labels: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.labels and len(self.labels) != len(self.requests):
            raise ValueError("a sweep needs one label per request")


@dataclass(frozen=True)
class StepEvent:
    """One sampling step of the running request (``cell`` counts the requests of a sweep from 0)."""

    request: GenerationRequest
    step: int
    steps: int
    job_no: int
    job_count: int
    cell: int = 0
    cells: int = 1


@dataclass(frozen=True)
class Cell:
    """One request of a job and what became of it: a result, or the error that stopped it."""

    request: GenerationRequest
    label: dict[str, Any]
    result: GenerationResult | None = None
    error: str | None = None


@dataclass(frozen=True)
class JobOutcome:
    """Everything a job produced: the request as submitted and each cell it ran (one, unless swept)."""

    request: GenerationRequest
    cells: list[Cell]
    interrupted: bool = False


def _no_names(kind: str) -> list[str]:
    return []


def _accept(kind: str, value: str) -> str:
    return value


@dataclass(frozen=True)
class Catalog:
    """The names this studio knows, by kind: "sampler", "schedule", "checkpoint", "vae", "upscaler" (what hires
    fix can use: latent modes, built-ins and upscaler models).

    ``names(kind)`` lists them (for a dropdown); ``check(kind, value)`` returns the canonical name or raises
    ``ValueError`` saying what is available. The default knows nothing and accepts every value, leaving the
    engine to reject a wrong one when the request runs.
    """

    names: Callable[[str], list[str]] = _no_names
    check: Callable[[str, str], str] = _accept


@dataclass
class Hooks:
    """What one extension registered (read by the extension manager, not by authors)."""

    expand: list[Callable[..., Any]] = field(default_factory=list)
    adjust: list[Callable[..., Any]] = field(default_factory=list)
    step: list[Callable[..., Any]] = field(default_factory=list)
    postprocess: list[Callable[..., Any]] = field(default_factory=list)
    job_end: list[Callable[..., Any]] = field(default_factory=list)
    controls: list[tuple[str, Callable[[], dict[str, Any]]]] = field(default_factory=list)
    routers: list[Any] = field(default_factory=list)
    css: list[str] = field(default_factory=list)
    js: list[str] = field(default_factory=list)
    scripts: list[ScriptHook] = field(default_factory=list)


@dataclass(frozen=True)
class ScriptArg:
    """How A1111's ``/sdapi/v1/script-info`` describes one positional argument: the control's label, its default,
    its range, and for a list the choices in index order (clients turn a label into the index they send)."""

    label: str
    value: Any = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None

    def as_a1111(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "minimum": self.minimum, "maximum": self.maximum,
                "step": self.step, "choices": list(self.choices) if self.choices is not None else None}


@dataclass(frozen=True)
class ScriptHook:
    """An A1111 script an extension answers to: its title, its arguments' setting names in ``script_args`` order,
    and (optionally) how each argument is described per tab ("txt2img" or "img2img")."""

    title: str
    arg_names: tuple[str, ...]
    describe: Callable[[str], list[ScriptArg]] | None = None


class Extension:
    """Handed to an extension's ``setup``: where it registers its hooks, plus its name, folder and logger."""

    def __init__(self, name: str, folder: Path, data_dir: Path, catalog: Catalog | None = None) -> None:
        self.name = name
        self.folder = folder
        self.data_dir = data_dir  # a folder of its own for anything it writes
        self.catalog = catalog or Catalog()
        self.log = logging.getLogger(f"sfumato.extensions.{name}")
        self.hooks = Hooks()

    def expand_request(self, fn: Callable[[GenerationRequest, Settings], Sweep | None]) -> Callable:
        self.hooks.expand.append(fn)
        return fn

    def adjust_request(self, fn: Callable[[GenerationRequest, Settings], GenerationRequest | None]) -> Callable:
        self.hooks.adjust.append(fn)
        return fn

    def on_step(self, fn: Callable[[StepEvent, Settings], None]) -> Callable:
        self.hooks.step.append(fn)
        return fn

    def postprocess(self, fn: Callable[[GenerationResult, GenerationRequest, Settings],
                                       GenerationResult | None]) -> Callable:
        self.hooks.postprocess.append(fn)
        return fn

    def on_job_end(self, fn: Callable[[JobOutcome, Settings], GenerationResult | None]) -> Callable:
        self.hooks.job_end.append(fn)
        return fn

    def add_controls(self, tab: str, build: Callable[[], dict[str, Any]]) -> None:
        """``build`` runs inside the tab's layout and returns its components by setting name."""
        self.hooks.controls.append((tab, build))

    def add_routes(self, router: Any) -> None:
        self.hooks.routers.append(router)

    def add_css(self, text: str) -> None:
        self.hooks.css.append(text)

    def add_js(self, text: str) -> None:
        self.hooks.js.append(text)

    def add_script(self, title: str, arg_names: list[str],
                   describe: Callable[[str], list[ScriptArg]] | None = None) -> None:
        """Answer to A1111's ``script_name: title``; ``script_args[i]`` becomes setting ``arg_names[i]``.
        ``describe(tab)`` gives each argument's label, default and choices for ``/sdapi/v1/script-info``."""
        self.hooks.scripts.append(ScriptHook(title, tuple(arg_names), describe))

    def settings(self, request: GenerationRequest) -> Settings:
        """This extension's settings inside a request (a copy, empty when absent)."""
        return dict(request.extensions.get(self.name) or {})
