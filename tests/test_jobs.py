"""The queue's own behaviour (ordering, cancel, failures), with a runner that records calls instead of a model."""

from __future__ import annotations

import threading
import time

import pytest

from modules.errors import RequestError
from modules.image.request import GenerationRequest
from modules.image.results import GenerationResult, GenerationSummary
from modules.jobs.queue import JobCancelled
from tests.helpers import image_queue


def make_queue(block: threading.Event | None = None):
    ran: list[str] = []

    def runner(request, control):
        if block is not None:
            block.wait(10)
        if request.prompt == "boom":
            raise RuntimeError("the model exploded")
        if request.prompt == "bad":
            raise RequestError("width", "must be a multiple of 8")
        ran.append(request.prompt)
        return GenerationResult(images=[], grid=None, summary=GenerationSummary(prompt=request.prompt))

    return image_queue(runner), ran


def test_jobs_run_in_submission_order():
    queue, ran = make_queue()
    jobs = [queue.submit(GenerationRequest(prompt=str(i))) for i in range(5)]
    queue.start()
    try:
        for job in jobs:
            queue.wait(job, timeout=10)
    finally:
        queue.stop()
    assert ran == ["0", "1", "2", "3", "4"]
    assert [job.number for job in jobs] == [1, 2, 3, 4, 5]


def test_failures_are_recorded_and_the_worker_survives():
    queue, ran = make_queue()
    queue.start()
    try:
        crash = queue.submit(GenerationRequest(prompt="boom"))
        bad = queue.submit(GenerationRequest(prompt="bad"))
        good = queue.submit(GenerationRequest(prompt="fine"))
        with pytest.raises(RuntimeError, match="the model exploded"):
            queue.wait(crash, timeout=10)
        with pytest.raises(RequestError) as caught:
            queue.wait(bad, timeout=10)
        assert caught.value.field == "width"
        assert queue.wait(good, timeout=10).summary.prompt == "fine"
    finally:
        queue.stop()
    assert crash.state == bad.state == "failed" and good.state == "done"
    assert ran == ["fine"]


def test_cancel_a_queued_job_and_interrupt_the_running_one():
    gate = threading.Event()
    queue, ran = make_queue(block=gate)
    queue.start()
    try:
        running = queue.submit(GenerationRequest(prompt="first"))
        waiting = queue.submit(GenerationRequest(prompt="second"))
        deadline = time.time() + 10
        while running.state != "running" and time.time() < deadline:
            time.sleep(0.01)
        assert queue.cancel(waiting.id)
        assert waiting.state == "cancelled"
        with pytest.raises(JobCancelled):
            queue.wait(waiting, timeout=1)
        assert queue.cancel(running.id)  # running: interrupt flag set
        assert running.control.interrupted.is_set()
        gate.set()
        queue.wait(running, timeout=10)
        assert not queue.cancel(running.id)  # already finished
    finally:
        queue.stop()
    assert ran == ["first"]


def test_a_job_cancelled_while_the_worker_picks_it_up_never_runs():
    queue, ran = make_queue()
    jobs = [queue.submit(GenerationRequest(prompt=str(i))) for i in range(50)]
    cancelled = [job for job in jobs[::2] if queue.cancel(job.id)]
    queue.start()
    try:
        for job in jobs:
            job.done_event.wait(10)
    finally:
        queue.stop()
    assert all(job.state == "cancelled" for job in cancelled)
    assert sorted(ran, key=int) == [job.request.prompt for job in jobs if job not in cancelled]


def test_stop_leaves_queued_jobs_for_the_next_start_and_memory_stays_bounded():
    gate = threading.Event()
    ran: list[str] = []

    def runner(request, control):
        ran.append(request.prompt)
        while request.prompt == "long" and not gate.is_set() and not control.interrupted.is_set():
            time.sleep(0.005)
        return GenerationResult(images=[], grid=None, interrupted=control.interrupted.is_set())

    queue = image_queue(runner, history_limit=2)
    queue.start()
    long = queue.submit(GenerationRequest(prompt="long"))
    rest = [queue.submit(GenerationRequest(prompt=str(i))) for i in range(4)]
    deadline = time.time() + 10
    while long.state != "running" and time.time() < deadline:
        time.sleep(0.01)
    queue.stop()
    assert long.state == "done" and long.result.interrupted
    assert [job.state for job in rest] == ["queued"] * 4 and ran == ["long"]
    queue.start()
    try:
        for job in rest:
            queue.wait(job, timeout=10)
    finally:
        queue.stop()
    assert ran == ["long", "0", "1", "2", "3"]
    assert len(queue.jobs()) == 2  # only the most recent finished jobs stay in memory
    stats = queue.stats()
    assert (stats["finished"], stats["queued"], stats["running"]) == (5, 0, None) and stats["average_seconds"] >= 0


def test_eta_is_measured_from_the_first_step_not_from_the_start(monkeypatch):
    """Minutes of model loading before step 1 must not make the first estimates wild."""
    from modules.jobs import queue as queue_module
    from modules.jobs.control import Progress
    from modules.jobs.queue import Job

    clock = [1000.0]
    monkeypatch.setattr(queue_module.time, "time", lambda: clock[0])
    job = Job(id="j", number=1, request=None, state="running", started=1000.0)
    clock[0] = 1060.0  # a minute of loading
    job.note_progress(Progress(step=0, steps=20, text="Loading model"))
    assert job.eta() is None
    job.note_progress(Progress(step=1, steps=20))
    assert job.eta() is None  # one step says nothing about the pace yet
    clock[0] = 1061.0
    job.note_progress(Progress(step=2, steps=20))
    assert job.eta() == pytest.approx(18.0)  # a second a step, 18 steps left; not ~1000 s
