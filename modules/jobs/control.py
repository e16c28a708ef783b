"""The live side of a running job, whatever its kind: the progress it reports and the flags that stop it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image


@dataclass
class Progress:
    """A snapshot of a running job, pushed to the UI and the API's progress endpoints.

    ``step``/``steps`` count the unit of work of the job's kind: sampling steps for an image, tiles for an
    upscale. ``job_no``/``job_count`` count batches (or images of a batch upscale), ``cell``/``cells`` the requests
    of an extension's sweep.
    """

    job_no: int = 0
    job_count: int = 1
    step: int = 0
    steps: int = 0
    preview: Image.Image | None = None  # a picture ready to show (else see ``offer_preview``)
    text: str = ""
    cell: int = 0
    cells: int = 1
    # A preview not made yet: making one costs a decode, so a job offers how to make it and the first reader
    # pays (a job nobody watches makes none). Guarded by ``_lock``, since readers are other threads.
    _preview_source: Callable[[], Image.Image | None] | None = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def offer_preview(self, source: Callable[[], Image.Image | None]) -> None:
        """The job's newest state can be shown by calling ``source`` (made only if someone asks)."""
        with self._lock:
            self._preview_source = source

    def current_preview(self) -> Image.Image | None:
        """The newest preview, made now from the newest offer if it is not made yet (once per offer)."""
        with self._lock:
            source, self._preview_source = self._preview_source, None
            if source is not None:
                try:
                    made = source()
                except Exception:  # a preview must never break a reader
                    made = None
                if made is not None:
                    self.preview = made
            return self.preview

    @property
    def has_preview(self) -> bool:
        return self.preview is not None or self._preview_source is not None

    @property
    def fraction(self) -> float:
        """Of the whole job: every cell of a sweep, every batch of a cell."""
        if not self.steps:
            return 0.0
        batches = max(1, self.job_count)
        done = (self.cell * batches + self.job_no) * self.steps + self.step
        return min(1.0, done / (self.steps * batches * max(1, self.cells)))


@dataclass
class JobControl:
    """Flags a front end sets while a job runs: interrupt ends the job, skip ends the current batch only."""

    interrupted: threading.Event = field(default_factory=threading.Event)
    skipped: threading.Event = field(default_factory=threading.Event)
    on_progress: Callable[[Progress], None] | None = None
    preview_interval: int = 5  # a live preview every N steps; 0 = never
    preview_method: str = "approximate"  # "approximate" (latents mapped to RGB, cheap) or "full" (VAE decode)

    def interrupt(self) -> None:
        self.interrupted.set()

    def skip(self) -> None:
        self.skipped.set()

    def report(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)
