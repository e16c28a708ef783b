"""Kinds of work: each is a typed request, its record codec and its runner, registered by name.

The queue runs jobs of any registered kind without knowing what they do: it asks the kind to check a request,
to write it to (and read it back from) the job store, to say how much progress to expect, to run it, and to
write its result. Adding a kind (upscale, video, audio, training) is a module of its own plus one
``KindRegistry.register`` call in the composition root; nothing in the queue changes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.jobs.artifacts import JobResult
from modules.jobs.control import JobControl, Progress


@dataclass(frozen=True)
class Kind:
    """One kind of work. ``request_type`` is its frozen request class (one class belongs to one kind).

    - ``resolve(request)`` fills in what the caller left to the studio (the default model ...) at submission, the
      one place defaults are decided, so the stored job says what will run whichever front end asked.
    - ``validate(request)`` raises ``RequestError`` naming the field; the queue calls it before a job is stored.
    - ``run(request, control)`` does the work on the worker thread and returns the kind's result.
    - ``encode_request(request, folder)`` / ``decode_request(data, folder, strict)``: JSON plus files in the job's
      folder; ``strict`` is for a job about to run (a missing file is a ``RequestError``).
    - ``encode_result(result, folder)`` / ``decode_result(data, folder)``: the same for results; decoding returns
      the result and a line per file that is missing or damaged.
    - ``initial_progress(request)``: what the progress bar starts from before the job runs.
    - ``requested_images(request)``: images the request will make, for per-key quotas checked at submission.
    - ``label(request)`` / ``describe(request)``: a word for lists ("txt2img", "upscale") and one line of what
      the job does (its prompt, its upscaler), so the Queue tab and history show every kind.
    - ``batch_key(request)`` / ``run_batch(requests, controls)``: for kinds whose compatible jobs can share one
      run (image generation): jobs with equal, non-None keys waiting together may be run by one ``run_batch``
      call, which gives one result or exception per job, in order. Kinds without them run one job at a time.
    """

    name: str
    request_type: type
    validate: Callable[[Any], None]
    run: Callable[[Any, JobControl], JobResult]
    encode_request: Callable[[Any, Path], dict[str, Any]]
    decode_request: Callable[[dict[str, Any], Path, bool], Any]
    encode_result: Callable[[JobResult, Path], dict[str, Any]]
    decode_result: Callable[[dict[str, Any], Path], tuple[JobResult, list[str]]]
    resolve: Callable[[Any], Any] = lambda request: request
    initial_progress: Callable[[Any], Progress] = lambda _request: Progress()
    requested_images: Callable[[Any], int] = lambda _request: 0
    label: Callable[[Any], str] | None = None
    describe: Callable[[Any], str] = lambda _request: ""
    batch_key: Callable[[Any], Hashable | None] = lambda _request: None
    run_batch: Callable[[list[Any], list[JobControl]], list[Any]] | None = None

    def label_of(self, request: Any) -> str:
        return self.label(request) if self.label is not None and request is not None else self.name


class UnknownKind(LookupError):
    """A request of a type, or a stored job of a kind, that no registered kind handles."""


class KindRegistry:
    """The kinds this studio runs. Filled by the composition root before the queue starts."""

    def __init__(self, kinds: list[Kind] | None = None) -> None:
        self._by_name: dict[str, Kind] = {}
        for kind in kinds or []:
            self.register(kind)

    def register(self, kind: Kind) -> None:
        if kind.name in self._by_name:
            raise ValueError(f"a kind named {kind.name!r} is already registered")
        if any(other.request_type is kind.request_type for other in self._by_name.values()):
            raise ValueError(f"{kind.request_type.__name__} already belongs to another kind")
        self._by_name[kind.name] = kind

    def get(self, name: str) -> Kind:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownKind(f"no kind of work named {name!r}; this studio runs: {', '.join(self.names())}") from None

    def for_request(self, request: Any) -> Kind:
        for kind in self._by_name.values():
            if isinstance(request, kind.request_type):
                return kind
        raise UnknownKind(f"no kind of work takes a {type(request).__name__}")

    def names(self) -> list[str]:
        return list(self._by_name)
