"""Finding, loading and running extensions, each isolated so that a broken one never stops the studio.

Extensions live in folders (the built-in ``extensions/`` and the user's extensions folder), each with an
``extension.toml`` manifest and a Python entry point whose ``setup(ext)`` registers hooks through
``modules.extensions.api``. The manager loads them on ``load()`` (start-up) and ``reload()`` (the Extensions tab),
remembers which are disabled in the data folder, and wraps every hook call: an extension whose import or hook
raises is logged, marked failed with its error, and skipped while the job goes on.

``run_job`` is the job queue's runner with extensions in it: expand (sweeps) -> adjust -> generate (steps observed)
-> post-process, for each cell, then the job-end hooks, which may combine the cells into one result (a grid).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

try:  # Python 3.11+; 3.10 reads TOML with the tomli backport (a dependency there)
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from modules.errors import RequestError
from modules.extensions.api import Catalog, Cell, Extension, JobOutcome, StepEvent, Sweep
from modules.formats import AUTOMATIC_VAE, OWN_VAE_NAMES
from modules.image.request import GenerationRequest
from modules.image.results import GeneratedImage, GenerationResult
from modules.jobs.control import JobControl, Progress
from modules.runtime.files import atomic_write

log = logging.getLogger(__name__)

MANIFEST = "extension.toml"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Generate = Callable[[GenerationRequest, JobControl], GenerationResult]
# Several requests in one call: one result (or the exception that stopped it) per request, in order.
GenerateMany = Callable[[list[GenerationRequest], list[JobControl]], list["GenerationResult | BaseException"]]


class ExtensionError(ValueError):
    """An extension could not be installed, updated, removed or found; the message says why."""


@dataclass(frozen=True)
class Manifest:
    """What ``extension.toml`` declares."""

    name: str
    version: str = "0"
    description: str = ""
    entry: str = "extension.py"
    requires: tuple[str, ...] = ()  # Python requirements, installed with pip at install time
    sfumato: str = ""  # the Sfumato versions it was written for (informational)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ExtensionError(f"{folder.name}: no {MANIFEST}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ExtensionError(f"{folder.name}: {MANIFEST} is not valid TOML ({error})") from None
        table = data.get("extension", data)
        name = str(table.get("name") or folder.name)
        if not NAME_PATTERN.match(name):
            raise ExtensionError(f"{folder.name}: extension name {name!r} must be letters, digits, '-', '_' or '.'")
        requires = table.get("requires", [])
        if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
            raise ExtensionError(f"{name}: 'requires' must be a list of requirement strings")
        entry = str(table.get("entry", "extension.py"))
        if Path(entry).is_absolute() or ".." in Path(entry).parts:
            raise ExtensionError(f"{name}: entry must be a file inside the extension's folder")
        return cls(name=name, version=str(table.get("version", "0")), description=str(table.get("description", "")),
                   entry=entry, requires=tuple(requires), sfumato=str(table.get("sfumato", "")))


@dataclass
class LoadedExtension:
    """One discovered extension and its state: loaded, disabled, or failed with an error."""

    folder: Path
    source: str  # "built-in" or "user"
    manifest: Manifest | None = None
    api: Extension | None = None
    enabled: bool = True
    error: str | None = None
    remote: str | None = None  # the git URL it was installed from, if any

    @property
    def name(self) -> str:
        return self.manifest.name if self.manifest else self.folder.name

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        if not self.enabled:
            return "disabled"
        return "active" if self.api is not None else "not loaded"

    @property
    def active(self) -> bool:
        return self.enabled and self.api is not None and self.error is None

    def describe(self) -> dict[str, Any]:
        """The row the Extensions tab and ``/sdapi/v1/extensions`` show."""
        return {"name": self.name, "version": self.manifest.version if self.manifest else "",
                "description": self.manifest.description if self.manifest else "", "source": self.source,
                "enabled": self.enabled, "status": self.status, "error": self.error, "path": str(self.folder),
                "remote": self.remote}


@dataclass
class ExtensionManager:
    """All extensions of one studio. ``load()`` does the work; constructing it touches nothing."""

    builtin_dir: Path
    user_dir: Path
    state_file: Path
    data_dir: Path
    extensions: dict[str, LoadedExtension] = field(default_factory=dict)
    catalog: Catalog = field(default_factory=Catalog)  # what the studio has; see engine_catalog
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # -- discovery and loading ------------------------------------------------------------------------------
    def load(self) -> list[LoadedExtension]:
        """Discover every extension folder and import the enabled ones (again, on reload)."""
        disabled = self._read_disabled()
        found: dict[str, LoadedExtension] = {}
        for root, source in ((self.builtin_dir, "built-in"), (self.user_dir, "user")):
            for folder in sorted(_folders(root)):
                item = LoadedExtension(folder=folder, source=source, remote=_git_remote(folder))
                try:
                    item.manifest = Manifest.read(folder)
                except ExtensionError as error:
                    item.error = str(error)
                if item.name in found:
                    item.error = f"another extension is already called {item.name!r} ({found[item.name].folder})"
                    item.enabled = False
                    found[f"{item.name}@{folder}"] = item
                    continue
                item.enabled = item.name not in disabled
                if item.enabled and item.error is None:
                    self._import(item)
                found[item.name] = item
        with self._lock:
            self.extensions = found
        return list(found.values())

    reload = load

    def _import(self, item: LoadedExtension) -> None:
        assert item.manifest is not None
        path = (item.folder / item.manifest.entry).resolve()
        if not path.is_file() or item.folder.resolve() not in path.parents:
            item.error = f"entry point {item.manifest.entry} not found in {item.folder}"
            return
        module_name = f"sfumato_extension_{re.sub(r'[^0-9A-Za-z_]', '_', item.name)}"
        try:
            spec = importlib.util.spec_from_file_location(module_name, path,
                                                          submodule_search_locations=[str(item.folder)])
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            for stale in [name for name in sys.modules if name.startswith(f"{module_name}.")]:
                del sys.modules[stale]  # its own modules are read again on reload, like its entry point
            sys.modules[module_name] = module  # so the extension's own relative imports work
            spec.loader.exec_module(module)
            setup = getattr(module, "setup", None)
            if not callable(setup):
                raise AttributeError(f"{item.manifest.entry} defines no setup(ext) function")
            data_dir = self.data_dir / "extensions" / item.name
            api = Extension(item.name, item.folder, data_dir, self.catalog)
            setup(api)
            item.api, item.error = api, None
        except Exception as error:  # an extension's import may raise anything; the studio goes on
            sys.modules.pop(module_name, None)
            item.api, item.error = None, f"{type(error).__name__}: {error}"
            log.error("extension %s failed to load:\n%s", item.name, traceback.format_exc())

    # -- listing and state ----------------------------------------------------------------------------------
    def list(self) -> list[LoadedExtension]:
        with self._lock:
            return list(self.extensions.values())

    def get(self, name: str) -> LoadedExtension:
        with self._lock:
            item = self.extensions.get(name)
        if item is None:
            raise ExtensionError(f"no extension called {name!r}")
        return item

    def active(self) -> list[LoadedExtension]:
        return [item for item in self.list() if item.active]

    def mark_failed(self, name: str, error: str) -> None:
        """Record that an extension failed outside a hook (e.g. building its controls); it is skipped from now on."""
        with self._lock:
            item = self.extensions.get(name)
        if item is not None:
            item.error = error
            log.error("extension %s: %s", name, error)

    def set_enabled(self, name: str, enabled: bool) -> LoadedExtension:
        """Enable or disable by name (remembered across restarts); enabling imports it."""
        item = self.get(name)
        disabled = self._read_disabled()
        disabled.discard(name) if enabled else disabled.add(name)
        self._write_disabled(disabled)
        item.enabled = enabled
        if enabled and item.api is None and item.manifest is not None:
            item.error = None
            self._import(item)
        return item

    def _read_disabled(self) -> set[str]:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            return {str(name) for name in data.get("disabled", [])}
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, AttributeError) as error:
            log.warning("could not read %s (%s); every extension is enabled", self.state_file, error)
            return set()

    def _write_disabled(self, disabled: set[str]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.state_file, permissions=0o644) as file:
            file.write(json.dumps({"disabled": sorted(disabled)}, indent=2))

    # -- what extensions contribute -------------------------------------------------------------------------
    def scripts(self) -> dict[str, tuple[str, list[str]]]:
        """A1111 script title (lower case) -> (extension name, argument names)."""
        found = {}
        for item in self.active():
            for hook in item.api.hooks.scripts:
                found[hook.title.lower()] = (item.name, list(hook.arg_names))
        return found

    def script_args(self, title: str, tab: str) -> list[dict[str, Any]]:
        """A script's arguments as A1111's script-info lists them for ``tab``; an argument its extension does not
        describe is listed by its setting name alone. An extension's describe that raises is logged and skipped."""
        for item in self.active():
            for hook in item.api.hooks.scripts:
                if hook.title.lower() != title.lower():
                    continue
                described: list[Any] = []
                if hook.describe is not None:
                    try:
                        described = list(hook.describe(tab))
                    except Exception:  # an extension's description must not break the listing
                        log.exception("extension %s: describing script %r failed", item.name, hook.title)
                plain = [{"label": name, "value": None, "minimum": None, "maximum": None, "step": None,
                          "choices": None} for name in hook.arg_names]
                return [arg.as_a1111() for arg in described] + plain[len(described):]
        return []

    def controls(self, tab: str) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
        return [(item.name, build) for item in self.active() for where, build in item.api.hooks.controls
                if where == tab]

    def routers(self) -> list[tuple[str, Any]]:
        return [(item.name, router) for item in self.active() for router in item.api.hooks.routers]

    def css(self) -> str:
        return "\n".join(text for item in self.active() for text in item.api.hooks.css)

    def js(self) -> str:
        return "\n".join(text for item in self.active() for text in item.api.hooks.js)

    def script_settings(self, script_name: str | None, script_args: Iterable[Any]) -> tuple[str, dict[str, Any]]:
        """A1111's ``script_name`` + positional ``script_args`` -> (extension name, settings by name)."""
        title = (script_name or "").strip().lower()
        scripts = self.scripts()
        if title not in scripts:
            known = ", ".join(sorted(scripts)) or "none"
            raise RequestError("script_name", f"no script called {script_name!r}; available: {known}")
        name, arg_names = scripts[title]
        return name, dict(zip(arg_names, list(script_args), strict=False))

    def check_request(self, request: GenerationRequest) -> None:
        """Before queueing: settings for an extension that is not active, or that its expand hook rejects, are a
        ``RequestError`` naming ``extensions.<name>`` (or the hook's own field) now, not a failed job later."""
        active = {item.name for item in self.active()}
        for name in request.extensions:
            if name not in active:
                state = self.extensions.get(name)
                why = f"is {state.status}" if state is not None else "is not installed"
                raise RequestError(f"extensions.{name}", f"extension {name!r} {why}; active: "
                                   f"{', '.join(sorted(active)) or 'none'}")
        self._expand(self.active(), request)

    # -- running a job with its hooks -----------------------------------------------------------------------
    def run_job(self, request: GenerationRequest, control: JobControl, generate: Generate) -> GenerationResult:
        """One job: expand, then adjust -> generate -> post-process each cell, then the job-end hooks."""
        active = self.active()
        sweep = self._expand(active, request)
        cells: list[Cell] = []
        total = len(sweep.requests)
        for index, (cell_request, label) in enumerate(zip(sweep.requests, sweep.labels, strict=True)):
            if control.interrupted.is_set():
                break
            cell_request = self._adjust(active, cell_request)
            observed = _observing(control, lambda progress, r=cell_request, i=index: self._step(
                active, r, progress, i, total), index, total)
            try:
                result = generate(cell_request, observed)
            except RequestError:
                if total == 1:
                    raise
                cells.append(Cell(cell_request, label, error=_error_text()))
                continue
            except Exception:
                if total == 1:
                    raise
                log.exception("cell %d of %d failed", index + 1, total)
                cells.append(Cell(cell_request, label, error=_error_text()))
                continue
            cells.append(Cell(cell_request, label, result=self._postprocess(active, result, cell_request)))
        outcome = JobOutcome(request=request, cells=cells, interrupted=control.interrupted.is_set())
        result = self._finish(active, outcome)
        generated = sum(len(cell.result.images) for cell in cells if cell.result is not None)
        return replace(result, generated_images=generated)

    def run_jobs(self, requests: list[GenerationRequest], controls: list[JobControl], generate: Generate,
                 generate_many: GenerateMany,
                 job_scope: Callable[[JobControl], AbstractContextManager[Any]] = lambda _control: nullcontext(),
                 ) -> list[GenerationResult | BaseException]:
        """Several jobs that may share one generation call (the queue's batching): each goes through its own
        hooks as in ``run_job`` (adjust, steps, post-process, job end), and the adjusted requests are generated
        together by ``generate_many``. A job an extension turns into a sweep runs alone, through ``run_job``,
        inside ``job_scope(its control)``."""
        active = self.active()
        outcomes: list[GenerationResult | BaseException | None] = [None] * len(requests)
        together: list[int] = []
        cells: list[GenerationRequest] = []
        observed: list[JobControl] = []
        for index, (request, control) in enumerate(zip(requests, controls, strict=True)):
            try:
                sweep = self._expand(active, request)
                if len(sweep.requests) != 1 or sweep.requests[0] is not request:
                    with job_scope(control):
                        outcomes[index] = self.run_job(request, control, generate)
                    continue
                cell = self._adjust(active, request)
            except BaseException as error:  # noqa: BLE001 - one job's failure is that job's outcome
                outcomes[index] = error
                continue
            together.append(index)
            cells.append(cell)
            observed.append(_observing(control, lambda progress, r=cell: self._step(active, r, progress, 0, 1), 0, 1))
        for index, cell, made in zip(together, cells, generate_many(cells, observed) if cells else [], strict=True):
            if isinstance(made, BaseException):
                outcomes[index] = made
                continue
            try:
                outcome = JobOutcome(request=requests[index], cells=[Cell(cell, {}, result=self._postprocess(
                    active, made, cell))], interrupted=controls[index].interrupted.is_set())
                result = self._finish(active, outcome)
                outcomes[index] = replace(result, generated_images=len(made.images))
            except BaseException as error:  # noqa: BLE001
                outcomes[index] = error
        return outcomes  # type: ignore[return-value]  # every index was filled above

    def _call(self, item: LoadedExtension, hook: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call one hook; on an exception mark the extension failed (it stays listed, with its error)."""
        try:
            return fn(*args)
        except RequestError:
            raise  # an extension may reject a request with a clear message, like validation does
        except Exception as error:
            item.error = f"{hook} hook raised {type(error).__name__}: {error}"
            log.error("extension %s: %s\n%s", item.name, item.error, traceback.format_exc())
            return None

    def _expand(self, active: list[LoadedExtension], request: GenerationRequest) -> Sweep:
        for item in active:
            for fn in item.api.hooks.expand:
                if not item.active:
                    break
                sweep = self._call(item, "expand_request", fn, request, item.api.settings(request))
                if isinstance(sweep, Sweep) and sweep.requests:
                    labels = sweep.labels or [{} for _ in sweep.requests]
                    return Sweep(list(sweep.requests), list(labels))
        return Sweep([request], [{}])

    def _adjust(self, active: list[LoadedExtension], request: GenerationRequest) -> GenerationRequest:
        for item in active:
            for fn in item.api.hooks.adjust:
                if not item.active:
                    break
                changed = self._call(item, "adjust_request", fn, request, item.api.settings(request))
                if isinstance(changed, GenerationRequest):
                    request = changed
        return request

    def _step(self, active: list[LoadedExtension], request: GenerationRequest, progress: Progress, cell: int,
              cells: int) -> None:
        event = StepEvent(request=request, step=progress.step, steps=progress.steps, job_no=progress.job_no,
                          job_count=progress.job_count, cell=cell, cells=cells)
        for item in active:
            for fn in item.api.hooks.step:
                if item.active:
                    self._call(item, "on_step", fn, event, item.api.settings(request))

    def _postprocess(self, active: list[LoadedExtension], result: GenerationResult,
                     request: GenerationRequest) -> GenerationResult:
        for item in active:
            for fn in item.api.hooks.postprocess:
                if not item.active:
                    break
                changed = self._call(item, "postprocess", fn, result, request, item.api.settings(request))
                if isinstance(changed, GenerationResult):
                    result = changed
        return result

    def _finish(self, active: list[LoadedExtension], outcome: JobOutcome) -> GenerationResult:
        combined: GenerationResult | None = None
        for item in active:
            for fn in item.api.hooks.job_end:
                if not item.active:
                    break
                changed = self._call(item, "on_job_end", fn, outcome, item.api.settings(outcome.request))
                if isinstance(changed, GenerationResult) and combined is None:
                    combined = changed
        return combined or merge_cells(outcome)


def merge_cells(outcome: JobOutcome) -> GenerationResult:
    """Every cell's images in order, as one result (what a sweep gives when no extension combines it)."""
    results = [cell.result for cell in outcome.cells if cell.result is not None]
    if len(results) == 1 and len(outcome.cells) == 1:
        return results[0]
    if not results:
        errors = "; ".join(cell.error or "" for cell in outcome.cells) or "the job was interrupted"
        raise RuntimeError(f"no cell of the job produced an image: {errors}")
    images: list[GeneratedImage] = [image for result in results for image in result.images]
    return GenerationResult(images=images, grid=None, summary=results[0].summary,
                            interrupted=outcome.interrupted or any(r.interrupted for r in results))


def _observing(control: JobControl, on_step: Callable[[Progress], None], cell: int, cells: int) -> JobControl:
    """The job's control for one cell: same interrupt/skip flags, progress passed on and shown to step hooks."""
    def report(progress: Progress) -> None:
        if cells > 1:
            progress = replace(progress, cell=cell, cells=cells,
                               text=f"Cell {cell + 1} of {cells}. {progress.text}".strip())
        control.report(progress)
        on_step(progress)

    return replace(control, on_progress=report)


def _error_text() -> str:
    error = sys.exc_info()[1]
    if isinstance(error, RequestError):
        return f"{error.field}: {error.message}"
    return f"{type(error).__name__}: {error}"


def _folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith((".", "_"))]


def _git_remote(folder: Path) -> str | None:
    """The URL a git-installed extension came from (read from .git/config; no git process at discovery)."""
    config = folder / ".git" / "config"
    if not config.is_file():
        return None
    match = re.search(r'\[remote "origin"\][^\[]*?url\s*=\s*(\S+)', config.read_text(encoding="utf-8",
                                                                                    errors="replace"))
    return match.group(1) if match else None


def engine_catalog(engine: Any) -> Catalog:
    """The studio's samplers, schedule types, checkpoints and VAEs for extensions, read live from the engine (a
    checkpoint dropped in later is known) and checked the way a request's own fields are."""
    from modules.image import samplers
    from modules.upscaling.names import LATENT_UPSCALERS, hires_upscaler_names

    def names(kind: str) -> list[str]:
        if kind == "sampler":
            return [spec.name for spec in samplers.SAMPLERS]
        if kind == "schedule":
            return [spec.label for spec in samplers.SCHEDULES]
        if kind == "checkpoint":
            return [info.title for info in engine.registry.list()]
        if kind == "vae":
            return [*OWN_VAE_NAMES, *(info.name for info in engine.registry.list_vaes())]
        if kind == "upscaler":
            return hires_upscaler_names(engine.upscalers)
        raise ValueError(f"no catalog of {kind!r}")

    def check(kind: str, value: str) -> str:
        if kind == "sampler":
            return samplers.resolve_sampler(value).sampler
        if kind == "schedule":
            return samplers.schedule_spec(value).label
        if kind == "checkpoint":
            return engine.registry.find(value).title
        if kind == "vae":
            found = engine.registry.find_vae(value)
            return found.name if found is not None else AUTOMATIC_VAE
        if kind == "upscaler":
            latent = {name.casefold(): name for name in LATENT_UPSCALERS}
            if value.strip().casefold() in latent:
                return latent[value.strip().casefold()]
            try:
                return engine.upscalers.find(value).name
            except RequestError as error:
                raise ValueError(f"{error.message}; or a latent mode: {', '.join(LATENT_UPSCALERS)}") from None
        raise ValueError(f"no catalog of {kind!r}")

    return Catalog(names=names, check=check)


def request_with_settings(request: GenerationRequest, name: str, settings: dict[str, Any]) -> GenerationRequest:
    """A copy of ``request`` carrying ``settings`` for extension ``name`` (by name, never by position)."""
    merged = {**request.extensions, name: dict(settings)}
    return replace(request, extensions=merged)
