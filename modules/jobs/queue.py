"""The job queue: every front end submits here, one worker thread runs jobs of every kind in order.

The worker is the only thread that touches pipelines (they are not thread-safe), so the UI and the APIs never
block one another: they submit, then watch a job's progress or wait for its result. A request that fails
validation is refused at submission, naming the field; one that fails while it runs fails its own job with the
message, and the worker carries on with the next. What a job is (an image, an upscale, ...) is its kind's business
(``modules.jobs.kinds``): the queue only asks the kind to check, store, run and record it.

Given a ``JobStore`` the queue is persistent: a job is recorded before ``submit`` returns, every state change,
its progress (at most every ``progress_interval`` seconds) and its result are written as they happen, and
``start`` first takes back what a killed server left: jobs that were running run again, queued ones run in their
order, finished ones keep their results. Memory holds the unfinished jobs and the most recent finished ones;
older ones are read back from the store on demand.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from modules.errors import RequestError
from modules.jobs.artifacts import JobResult
from modules.jobs.control import JobControl, Progress
from modules.jobs.events import JobEvents
from modules.jobs.kinds import Kind, KindRegistry, UnknownKind

if TYPE_CHECKING:
    from modules.jobs.store import JobStore, StoredJob

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED_STATES = ("done", "failed", "cancelled")
_PROGRESS_FIELDS = ("job_no", "job_count", "step", "steps", "text", "cell", "cells")


@dataclass
class Job:
    id: str
    number: int
    request: Any  # the kind's typed, frozen request
    kind: str = "image"
    state: JobState = "queued"
    progress: Progress = field(default_factory=Progress)
    control: JobControl = field(default_factory=JobControl)
    result: JobResult | None = None
    error: str | None = None
    error_field: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    source: str = "ui"  # which front end submitted it: ui, a1111, native, openai, stability
    owner: str | None = None  # the API key (or user) it counts against, for rate limits and listing
    webhook: str | None = None  # URL told when the job ends (native API)
    done_event: threading.Event = field(default_factory=threading.Event)
    attempts: int = 0  # runs cut short by the server stopping (a persistent queue runs the job again)
    requested_images: int = 0  # what the request will make, for per-key image quotas at submission
    _eta_origin: tuple[float, float] | None = field(default=None, repr=False)  # (time, fraction) of the first step

    @property
    def finished_ok(self) -> bool:
        return self.state == "done"

    def eta(self) -> float | None:
        """Seconds left, extrapolated from the pace since the first step: loading a model before it is not
        progress, and counting it made the first estimates wild. None until two steps have been seen."""
        fraction = self.progress.fraction
        if self.state != "running" or self._eta_origin is None or fraction <= self._eta_origin[1]:
            return None
        since, at = self._eta_origin
        return (time.time() - since) / (fraction - at) * (1.0 - fraction)

    def note_progress(self, progress: Progress) -> None:
        """Take a progress report; the first one past zero fixes where the ETA's pace is measured from."""
        self.progress = progress
        if self._eta_origin is None and progress.fraction > 0:
            self._eta_origin = (time.time(), progress.fraction)


class SubmissionRefused(Exception):
    """A submission turned away by an admission check (e.g. a key over its limits); nothing was queued."""

    def __init__(self, message: str, status: int = 429, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class JobCancelled(Exception):
    """Raised by ``wait`` when the job was cancelled before it produced a result."""


class JobQueue:
    """FIFO queue with one worker. ``start()`` launches the worker; nothing runs at construction.

    ``kinds`` are the kinds of work it runs; ``store`` (optional) makes the queue survive restarts; without one it
    lives in memory only. ``events`` is where every change of a job is published (progress, state).
    """

    def __init__(self, kinds: KindRegistry, history_limit: int = 200, preview_interval: int = 5, *,
                 store: JobStore | None = None, progress_interval: float = 0.5, max_attempts: int = 3,
                 loaded_limit: int = 64, events: JobEvents | None = None, max_batch: int = 1,
                 gather_window: float = 0.0) -> None:
        self.kinds = kinds
        # Batching (kinds with ``run_batch``): compatible waiting jobs run together, up to ``max_batch`` images;
        # the worker waits ``gather_window`` seconds for more to arrive before it starts a batchable job.
        self.max_batch = max_batch
        self.gather_window = gather_window
        self._batch: list[Job] = []  # the jobs running together with ``current`` (it included), or empty
        self.events = events if events is not None else JobEvents()
        self._store = store
        self._pending: queue.Queue[str | None] = queue.Queue()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._loaded: OrderedDict[str, Job] = OrderedDict()  # finished jobs read back from the store (LRU)
        self._lock = threading.Lock()
        self._submit_lock = threading.Lock()  # number, row and queue position are given in one order
        self._recover_lock = threading.Lock()
        self._recovered = store is None
        self._numbers = itertools.count(1)
        self._history_limit = history_limit
        self._loaded_limit = loaded_limit
        self._preview_interval = preview_interval
        self._progress_interval = progress_interval
        self._max_attempts = max_attempts
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._user_interrupts: set[str] = set()
        self._listeners: list[Callable[[Job], None]] = []
        self._admission: list[Callable[[Job], None]] = []
        self._rules: list[Callable[[Any, str | None], Any]] = []
        self.extras: dict[str, Any] = {}  # per-queue services front ends attach (e.g. the webhook sender)
        self.extras_lock = threading.Lock()
        self._ended = 0  # without a store: jobs ended in this process, and the latest run times, for ``stats``
        self._run_times: deque[float] = deque(maxlen=100)
        self.current: Job | None = None

    @property
    def store(self) -> JobStore | None:
        return self._store

    # -- life cycle --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover what the store holds (once), then launch the worker on every queued job, oldest first."""
        self._recover()
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return
            self._stopping.clear()
            self._pending = queue.Queue()  # rebuilt: a stop may have left a stale sentinel or taken a job out
            for job in sorted((job for job in self._jobs.values() if job.state == "queued"),
                              key=lambda job: job.number):
                self._pending.put(job.id)
            self._worker = threading.Thread(target=self._work, name="sfumato-worker", daemon=True)
            self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Interrupt the running job and let the worker exit; queued jobs stay queued (in the store, for the
        next start). A job cut short here runs again after a restart rather than counting as finished."""
        self._stopping.set()
        for job in self._running_jobs():
            job.control.interrupt()
        self._pending.put(None)
        if self._worker is not None:
            self._worker.join(timeout)
        if self._store is not None and (self._worker is None or not self._worker.is_alive()):
            self._store.close()

    # -- submitting and watching -------------------------------------------------------------------------------
    def submit(self, request: Any, *, source: str = "ui", owner: str | None = None,
               webhook: str | None = None) -> Job:
        """Queue a request of any registered kind, its defaults resolved and checked first (a ``RequestError``
        names the field and nothing is queued); with a store the job is on disk before this returns."""
        self._recover()
        kind = self.kinds.for_request(request)
        for rule in list(self._rules):  # the caller's rules (an API key's NSFW filter) come before the defaults
            request = rule(request, owner)
        request = kind.resolve(request)
        kind.validate(request)
        with self._submit_lock:
            job = Job(id=uuid.uuid4().hex, number=next(self._numbers), request=request, kind=kind.name,
                      source=source, owner=owner, webhook=webhook, requested_images=kind.requested_images(request))
            for check in list(self._admission):  # under the submit lock: a check and the insert are one step
                check(job)
            job.progress = kind.initial_progress(request)
            self._prepare(job)
            if self._store is not None:
                self._store.insert(job, kind.encode_request(request, self._store.job_dir(job.id)))
            with self._lock:
                self._jobs[job.id] = job
                self._trim_history()
                self._pending.put(job.id)
        self.events.publish(job.id)
        return job

    def get(self, job_id: str) -> Job | None:
        """A job by id: from memory, else (with a store) read back, results and all, from the store."""
        with self._lock:
            job = self._jobs.get(job_id) or self._loaded.get(job_id)
        if job is not None or self._store is None:
            return job
        record = self._store.get(job_id)
        return self._remember(self._job_from_record(record, strict=False)) if record is not None else None

    def jobs(self) -> list[Job]:
        """The jobs held in memory: every unfinished one and the most recent finished ones."""
        with self._lock:
            return list(self._jobs.values())

    def pending(self) -> list[Job]:
        return [job for job in self.jobs() if job.state == "queued"]

    def history(self, limit: int = 20, offset: int = 0, state: str | None = None,
                owner: str | None = None) -> tuple[list[Job], int]:
        """A page of jobs, newest first, optionally only one state or one owner's; and how many match in all."""
        if self._store is not None:
            records, total = self._store.page(limit, offset, state, owner)
            return [self._live_or_loaded(record) for record in records], total
        matching = [job for job in reversed(self.jobs())
                    if (state is None or job.state == state) and (owner is None or job.owner == owner)]
        return matching[offset: offset + limit], len(matching)

    def stats(self, window: int = 20) -> dict[str, Any]:
        """What a status line needs: ``queued`` (count), ``running`` (job id or None), ``average_seconds`` (of the
        last ``window`` jobs that finished well, None before the first) and ``finished`` (ended jobs in all)."""
        current = self.current
        if self._store is not None:
            stored = self._store.stats(window)
        else:
            with self._lock:
                times = list(self._run_times)[-window:]
                stored = {"finished": self._ended, "average_seconds": sum(times) / len(times) if times else None}
        return {"queued": len(self.pending()), "running": current.id if current is not None else None, **stored}

    def add_admission_check(self, check: Callable[[Job], None]) -> None:
        """Run ``check(job)`` on each new job before it is queued, atomically with the submission; it raises
        ``SubmissionRefused`` to turn the job away (per-key job and image limits live there, race-free)."""
        self._admission.append(check)

    def add_submission_rule(self, rule: Callable[[Any, str | None], Any]) -> None:
        """``rule(request, owner)`` returns the request as its owner may run it (e.g. with the NSFW filter an API
        key imposes), or raises ``RequestError``; applied at submission before the kind's defaults and checks, so
        the stored job says what runs."""
        self._rules.append(rule)

    def add_listener(self, callback: Callable[[Job], None]) -> None:
        """Call ``callback(job)`` on the worker thread when a job ends (done, failed or cancelled), before
        anyone waiting on the job is woken: what a listener records (usage, history) is there when they look."""
        self._listeners.append(callback)

    def wait(self, job: Job, timeout: float | None = None) -> JobResult:
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
            if job.state in FINISHED_STATES:
                return False
            if job.state == "queued":
                job.state = "cancelled"
                job.finished = time.time()
                self._ended += 1
                cancelled = True
            else:
                self._user_interrupts.add(job.id)
                cancelled = False
        if cancelled:
            self._save("save_state", job)
            self._notify(job)
            job.done_event.set()
            self.events.publish(job.id)
            return True
        job.control.interrupt()
        return True

    def interrupt_current(self) -> bool:
        """Interrupt what runs now: the running job, or every job of the running batch."""
        jobs = self._running_jobs()
        for job in jobs:
            self._user_interrupts.add(job.id)
            job.control.interrupt()
        return bool(jobs)

    def skip_current(self) -> bool:
        jobs = self._running_jobs()
        for job in jobs:
            job.control.skip()
        return bool(jobs)

    def _running_jobs(self) -> list[Job]:
        """The running job, or every job of the running batch."""
        batch, current = list(self._batch), self.current
        return batch or ([current] if current is not None else [])

    # -- the worker ----------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job_id = self._pending.get()
            if job_id is None or self._stopping.is_set():
                return
            with self._lock:
                job = self._jobs.get(job_id)
            if job is not None and self._claim(job):
                batch = self._gather(job)
                if len(batch) > 1:
                    self._run_batch(batch)
                else:
                    self._run(job)

    def _batch_key(self, kind: Kind, job: Job) -> Any:
        if job.request is None:
            return None
        try:
            return kind.batch_key(job.request)
        except Exception:  # a key that cannot be computed means "run it alone", never a stopped worker
            log.exception("batch key of job %s", job.id)
            return None

    def _gather(self, job: Job) -> list[Job]:
        """``job`` and the compatible jobs waiting behind it (same kind, equal batch key), claimed together, up
        to ``max_batch`` images; just ``job`` when its kind does not batch or nothing fits."""
        kind = self.kinds.get(job.kind)
        if self.max_batch <= 1 or kind.run_batch is None or job.requested_images >= self.max_batch:
            return [job]
        key = self._batch_key(kind, job)
        if key is None:
            return [job]
        if self.gather_window > 0:
            self._stopping.wait(self.gather_window)
        with self._lock:
            waiting = sorted((other for other in self._jobs.values()
                              if other.state == "queued" and other.kind == job.kind), key=lambda other: other.number)
        batch, images = [job], max(1, job.requested_images)
        for other in waiting:
            size = max(1, other.requested_images)
            if images + size > self.max_batch or self._batch_key(kind, other) != key:
                continue
            with self._lock:
                if other.state != "queued":  # cancelled meanwhile
                    continue
                other.state, other.started = "running", time.time()
            batch.append(other)
            images += size
            if images >= self.max_batch:
                break
        for other in batch[1:]:
            self._save("save_state", other)
            self.events.publish(other.id)
        self._batch = batch if len(batch) > 1 else []
        return batch

    def _run_batch(self, jobs: list[Job]) -> None:
        """One ``run_batch`` call for ``jobs``; each then ends on its own, as ``_run`` ends one job."""
        kind = self.kinds.get(jobs[0].kind)
        try:
            outcomes = kind.run_batch([job.request for job in jobs], [job.control for job in jobs])
        except Exception as error:  # the worker must survive anything a batch does
            log.exception("batch of %d jobs failed", len(jobs))
            outcomes = [error] * len(jobs)
        for job, outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, RequestError):
                job.state, job.error, job.error_field = "failed", outcome.message, outcome.field
            elif isinstance(outcome, BaseException):
                job.state, job.error = "failed", f"{type(outcome).__name__}: {outcome}"
            else:
                job.result = outcome
                cancelled = job.id in self._user_interrupts and not outcome.artifacts and not self._stopping.is_set()
                job.state = "cancelled" if cancelled else "done"
        self._batch = []
        for job in jobs:
            self._end(job)

    def _claim(self, job: Job) -> bool:
        """Queued -> running under the lock, so a cancel racing the worker either wins or finds it running."""
        with self._lock:
            if job.state != "queued":
                return False
            job.state, job.started = "running", time.time()
            self.current = job
        self._save("save_state", job)
        self.events.publish(job.id)
        return True

    def _run(self, job: Job) -> None:
        try:
            job.result = self.kinds.get(job.kind).run(job.request, job.control)
            job.state = "done"
        except RequestError as error:
            job.state, job.error, job.error_field = "failed", error.message, error.field
        except Exception as error:  # the worker must survive anything a job does
            log.exception("job %s failed", job.id)
            job.state, job.error = "failed", f"{type(error).__name__}: {error}"
        finally:
            self._end(job)

    def _end(self, job: Job) -> None:
        """A job's run is over (whatever its state): record it, tell listeners, wake waiters."""
        job.finished = time.time()
        if self.current is job:
            self.current = None
        requeued = self._record_end(job)
        if not requeued:  # a job cut short by shutdown runs again after the restart: nobody is told it ended
            self._notify(job)
        job.done_event.set()
        with self._lock:
            self._ended += 1
            if job.state == "done" and not requeued:
                self._run_times.append(job.finished - job.started)
            self._trim_history()
        self.events.publish(job.id)

    def _record_end(self, job: Job) -> bool:
        """Written before anyone is told the job ended, so whoever looks next finds the row final. True when the
        job was cut short by ``stop()`` and put back in the queue for the next start."""
        cut_by_stop = self._stopping.is_set() and job.control.interrupted.is_set()
        requeued = cut_by_stop and job.id not in self._user_interrupts and self._store is not None
        if requeued:
            self._save("requeue", job)
        else:
            self._save_finish(job)
        self._user_interrupts.discard(job.id)
        return requeued

    def _notify(self, job: Job) -> None:
        for callback in list(self._listeners):
            try:
                callback(job)
            except Exception:  # a listener (webhook, extension) must never take the worker down
                log.exception("job listener failed for %s", job.id)

    # -- progress and persistence ------------------------------------------------------------------------------
    def _prepare(self, job: Job) -> None:
        """A fresh control whose progress reports update the job (and the store, throttled)."""
        job.control = JobControl(preview_interval=self._preview_interval)
        last_saved = [-math.inf]

        def on_progress(progress: Progress) -> None:
            job.note_progress(progress)
            now = time.monotonic()
            if self._store is not None and now - last_saved[0] >= self._progress_interval:
                last_saved[0] = now
                self._save("save_progress", job)
            self.events.publish(job.id)

        job.control.on_progress = on_progress

    def _save_finish(self, job: Job) -> None:
        """The end of a run in the store: the kind writes the result's files, then one row update."""
        if self._store is None:
            return
        try:
            data = None
            if job.result is not None:
                data = self.kinds.get(job.kind).encode_result(job.result, self._store.job_dir(job.id))
            self._store.finish(job, data)
        except Exception:
            log.exception("could not record the end of job %s in %s", job.id, self._store.path)

    def _save(self, method: str, job: Job) -> None:
        """One write to the store; a failing disk is logged, never allowed to stop the worker or a cancel."""
        if self._store is None:
            return
        try:
            getattr(self._store, method)(job)
        except Exception:
            log.exception("could not record job %s (%s) in %s", job.id, method, self._store.path)

    def _recover(self) -> None:
        """Once, before the first job is queued or run: take back the store's unfinished jobs, in order."""
        if self._recovered:
            return
        with self._recover_lock:
            if self._recovered or self._store is None:
                return
            records = self._store.recover(self._max_attempts)
            self._numbers = itertools.count(self._store.max_number() + 1)
            for record in records:
                job = self._job_from_record(record, strict=True)
                if job.state == "failed":  # its request could not be read back
                    self._save("save_state", job)
                with self._lock:
                    self._jobs[job.id] = job
            if records:
                log.info("recovered %d queued job(s) from %s", len(records), self._store.path)
            self._recovered = True

    def _job_from_record(self, record: StoredJob, *, strict: bool) -> Job:
        """A stored row as a ``Job``. ``strict`` (a job about to run): a request that cannot be read back fails
        the job. Result images that are missing or damaged are left out and named in ``error``."""
        job = Job(id=record.id, number=record.number, request=None, kind=record.kind, state=record.state,
                  error=record.error, error_field=record.error_field, created=record.created,
                  started=record.started, finished=record.finished, source=record.source, owner=record.owner,
                  webhook=record.webhook, attempts=record.attempts)
        job.progress = Progress(**{key: value for key, value in record.progress.items() if key in _PROGRESS_FIELDS})
        self._prepare(job)
        problem = self._restore_request(job, record, strict)
        if problem is not None and strict:
            job.state, job.finished = "failed", time.time()
            job.error_field, job.error = problem
        missing: list[str] = []
        if record.result and (problem is None or not strict):
            try:
                job.result, missing = self._kind(record).decode_result(record.result, self._store.job_dir(record.id))
            except (UnknownKind, TypeError, ValueError, KeyError) as error:
                missing = [f"the stored result cannot be read: {error}"]
        if missing:
            log.warning("job %s: result files missing or damaged: %s", job.id, "; ".join(missing))
            note = "result files missing or damaged: " + "; ".join(missing)
            job.error = f"{job.error}; {note}" if job.error else note
        if job.state in FINISHED_STATES:
            job.done_event.set()
        return job

    def _kind(self, record: StoredJob) -> Kind:
        return self.kinds.get(record.kind)

    def _restore_request(self, job: Job, record: StoredJob, strict: bool) -> tuple[str, str] | None:
        if record.request is None:
            return "request", "the stored request is damaged and cannot be read"
        try:
            kind = self._kind(record)
        except UnknownKind as error:
            return "kind", str(error)
        try:
            job.request = kind.decode_request(record.request, self._store.job_dir(record.id), strict)
        except RequestError as error:
            return error.field, error.message
        except (TypeError, ValueError) as error:
            return "request", f"the stored request cannot be read: {error}"
        return None

    def _live_or_loaded(self, record: StoredJob) -> Job:
        with self._lock:
            job = self._jobs.get(record.id) or self._loaded.get(record.id)
        return job if job is not None else self._remember(self._job_from_record(record, strict=False))

    def _remember(self, job: Job) -> Job:
        """Keep a finished job read back from the store, so paging back and forth does not reread its images."""
        if job.state in FINISHED_STATES:
            with self._lock:
                self._loaded[job.id] = job
                self._loaded.move_to_end(job.id)
                while len(self._loaded) > self._loaded_limit:
                    self._loaded.popitem(last=False)
        return job

    def _trim_history(self) -> None:
        finished = [key for key, job in self._jobs.items() if job.done_event.is_set()]
        for key in finished[: max(0, len(self._jobs) - self._history_limit)]:
            del self._jobs[key]

