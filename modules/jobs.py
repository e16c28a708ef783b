"""The job queue: every front end submits here, one worker thread runs jobs in order.

The worker is the only thread that touches pipelines (they are not thread-safe), so the UI and the APIs never
block one another: they submit, then watch a job's progress or wait for its result. A request that fails
validation fails its own job with the message; the worker carries on with the next.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from modules.request import GenerationRequest, RequestError
from modules.results import GenerationResult, JobControl, Progress

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
Runner = Callable[[GenerationRequest, JobControl], GenerationResult]


@dataclass
class Job:
    id: str
    number: int
    request: GenerationRequest
    state: JobState = "queued"
    progress: Progress = field(default_factory=Progress)
    control: JobControl = field(default_factory=JobControl)
    result: GenerationResult | None = None
    error: str | None = None
    error_field: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    source: str = "ui"  # which front end submitted it: ui, a1111, native, openai, stability
    owner: str | None = None  # the API key (or user) it counts against, for rate limits and listing
    webhook: str | None = None  # URL told when the job ends (native API)
    done_event: threading.Event = field(default_factory=threading.Event)

    @property
    def finished_ok(self) -> bool:
        return self.state == "done"

    def eta(self) -> float | None:
        """Seconds left, extrapolated from the time per step so far."""
        if self.state != "running" or not self.started or self.progress.fraction <= 0:
            return None
        elapsed = time.time() - self.started
        return elapsed / self.progress.fraction - elapsed


class JobCancelled(Exception):
    """Raised by ``wait`` when the job was cancelled before it produced a result."""


class JobQueue:
    """FIFO queue with one worker. ``start()`` launches the worker; nothing runs at construction."""

    def __init__(self, runner: Runner, history_limit: int = 200, preview_interval: int = 5) -> None:
        self._runner = runner
        self._pending: queue.Queue[str | None] = queue.Queue()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._history_limit = history_limit
        self._preview_interval = preview_interval
        self._worker: threading.Thread | None = None
        self._listeners: list[Callable[[Job], None]] = []
        self.current: Job | None = None

    # -- life cycle --------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="sfumato-worker", daemon=True)
            self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Let the running job be interrupted and the worker exit (used by tests and shutdown)."""
        if self.current is not None:
            self.current.control.interrupt()
        self._pending.put(None)
        if self._worker is not None:
            self._worker.join(timeout)

    # -- submitting and watching -------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, *, source: str = "ui", owner: str | None = None,
               webhook: str | None = None) -> Job:
        job = Job(id=uuid.uuid4().hex, number=next(self._numbers), request=request,
                  control=JobControl(preview_interval=self._preview_interval), source=source, owner=owner,
                  webhook=webhook)
        job.progress = Progress(job_count=request.n_iter, steps=request.steps)
        job.control.on_progress = lambda progress, job=job: setattr(job, "progress", progress)
        with self._lock:
            self._jobs[job.id] = job
            self._trim_history()
        self._pending.put(job.id)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def pending(self) -> list[Job]:
        return [job for job in self.jobs() if job.state == "queued"]

    def history(self, limit: int = 20, offset: int = 0, state: str | None = None,
                owner: str | None = None) -> tuple[list[Job], int]:
        """A page of jobs, newest first, optionally only one state or one owner's; and how many match in all."""
        matching = [job for job in reversed(self.jobs())
                    if (state is None or job.state == state) and (owner is None or job.owner == owner)]
        return matching[offset: offset + limit], len(matching)

    def add_listener(self, callback: Callable[[Job], None]) -> None:
        """Call ``callback(job)`` on the worker thread after each job ends (done, failed or cancelled)."""
        self._listeners.append(callback)

    def wait(self, job: Job, timeout: float | None = None) -> GenerationResult:
        """Block until the job ends; re-raise its error so a caller sees the same message as the queue."""
        if not job.done_event.wait(timeout):
            raise TimeoutError(f"job {job.id} still {job.state} after {timeout} s")
        if job.state == "failed":
            if job.error_field:
                raise RequestError(job.error_field, job.error or "")
            raise RuntimeError(job.error)
        if job.result is None:
            raise JobCancelled(f"job {job.id} was cancelled")
        return job.result

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job, or interrupt it if it is running. False if it had already ended."""
        job = self.get(job_id)
        if job is None:
            return False
        with self._lock:
            if job.state in ("done", "failed", "cancelled"):
                return False
            if job.state == "queued":
                job.state = "cancelled"
                job.finished = time.time()
                job.done_event.set()
                cancelled = True
            else:
                cancelled = False
        if cancelled:
            self._notify(job)
            return True
        job.control.interrupt()
        return True

    def interrupt_current(self) -> bool:
        job = self.current
        if job is None:
            return False
        job.control.interrupt()
        return True

    def skip_current(self) -> bool:
        job = self.current
        if job is None:
            return False
        job.control.skip()
        return True

    # -- the worker ----------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job_id = self._pending.get()
            if job_id is None:
                return
            job = self.get(job_id)
            if job is not None and self._claim(job):
                self._run(job)

    def _claim(self, job: Job) -> bool:
        """Queued -> running under the lock, so a cancel racing the worker either wins or finds it running."""
        with self._lock:
            if job.state != "queued":
                return False
            job.state, job.started = "running", time.time()
            self.current = job
            return True

    def _run(self, job: Job) -> None:
        try:
            job.result = self._runner(job.request, job.control)
            job.state = "done"
        except RequestError as error:
            job.state, job.error, job.error_field = "failed", error.message, error.field
        except Exception as error:  # the worker must survive anything a job does
            log.exception("job %s failed", job.id)
            job.state, job.error = "failed", f"{type(error).__name__}: {error}"
        finally:
            job.finished = time.time()
            self.current = None
            job.done_event.set()
            self._notify(job)

    def _notify(self, job: Job) -> None:
        for callback in list(self._listeners):
            try:
                callback(job)
            except Exception:  # a listener (webhook, extension) must never take the worker down
                log.exception("job listener failed for %s", job.id)

    def _trim_history(self) -> None:
        finished = [key for key, job in self._jobs.items() if job.done_event.is_set()]
        for key in finished[: max(0, len(self._jobs) - self._history_limit)]:
            del self._jobs[key]
