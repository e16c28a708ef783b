"""What a generation gives back, and the live state a running job reports."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass(frozen=True, eq=False)
class GeneratedImage:
    image: Image.Image
    seed: int
    subseed: int
    prompt: str
    negative_prompt: str
    infotext: str
    path: Path | None = None


@dataclass(frozen=True, eq=False)
class GenerationResult:
    """Images in order, the optional grid, and the A1111-style ``info`` fields for API responses."""

    images: list[GeneratedImage]
    grid: GeneratedImage | None
    info: dict[str, Any]
    interrupted: bool = False

    @property
    def seeds(self) -> list[int]:
        return [item.seed for item in self.images]

    @property
    def infotexts(self) -> list[str]:
        return [item.infotext for item in self.images]


@dataclass
class Progress:
    """A snapshot of a running job, pushed to the UI and the API's progress endpoints."""

    job_no: int = 0  # which batch (n_iter) is running, from 0
    job_count: int = 1
    step: int = 0
    steps: int = 0
    preview: Image.Image | None = None
    text: str = ""
    cell: int = 0  # which request of a sweep (an extension's expansion) is running, from 0
    cells: int = 1

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
    preview_interval: int = 5  # decode a live preview every N steps; 0 = never

    def interrupt(self) -> None:
        self.interrupted.set()

    def skip(self) -> None:
        self.skipped.set()

    def report(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)
