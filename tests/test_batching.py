"""Compatible image jobs waiting in the queue run as one batch, each keeping its own prompt, seed and result.

Jobs are submitted before the worker starts, so they wait together as concurrent API requests would; with one
worker, two jobs whose running times overlap ran in the same batch."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from modules.image.request import GenerationRequest

PROMPTS = [("a red circle", 11, 1), ("a blue square on a green background", 12, 2), ("a small star", 13, 1)]


def studio(app_config, name: str, **fields):
    from modules.runtime.services import build_services

    config = dataclasses.replace(app_config, outdir=app_config.outdir / name, data_dir=app_config.data_dir / name,
                                 **fields)
    return build_services(config)


def requests(steps: int = 4, **fields) -> list[GenerationRequest]:
    return [GenerationRequest(prompt=prompt, seed=seed, batch_size=size, steps=steps, width=64, height=64, **fields)
            for prompt, seed, size in PROMPTS]


def overlapped(first, second) -> bool:
    return first.started < second.finished and second.started < first.finished


def pixels(result) -> list[np.ndarray]:
    return [np.asarray(item.image, dtype=np.int16) for item in result.images]


@pytest.fixture
def batched(app_config, one_thread):
    built = studio(app_config, "batched", batch_images=8)
    yield built
    built.stop()


def test_waiting_compatible_jobs_run_together_with_the_pixels_each_gets_alone(app_config, batched, one_thread):
    jobs = [batched.queue.submit(request) for request in requests()]
    batched.start()
    together = [batched.queue.wait(job, timeout=120) for job in jobs]
    assert all(job.state == "done" for job in jobs)
    assert overlapped(jobs[0], jobs[1]) and overlapped(jobs[1], jobs[2]), "they did not run as one batch"

    alone = studio(app_config, "alone", batch_images=1)
    alone.start()
    try:
        singles = [alone.run(request, timeout=120) for request in requests()]
    finally:
        alone.stop()
    for batch_result, single, (prompt, seed, size) in zip(together, singles, PROMPTS, strict=True):
        assert len(batch_result.images) == size
        assert [item.seed for item in batch_result.images] == [seed + i for i in range(size)]
        assert [item.infotext for item in batch_result.images] == [item.infotext for item in single.images]
        for mine, theirs in zip(pixels(batch_result), pixels(single), strict=True):
            assert np.abs(mine - theirs).max() <= 2, "a batched image differs from the same job run alone"
        assert all(item.path is not None and item.path.is_file() for item in batch_result.images)
        assert batch_result.images[0].prompt == prompt
    # each job keeps its own images: different prompts and seeds give different pictures
    assert np.abs(pixels(together[0])[0] - pixels(together[1])[0]).max() > 10


def test_incompatible_jobs_are_kept_apart(batched):
    different = [GenerationRequest(prompt="a red circle", seed=1, steps=4, width=64, height=64),
                 GenerationRequest(prompt="a red circle", seed=1, steps=5, width=64, height=64),
                 GenerationRequest(prompt="a red circle", seed=1, steps=4, width=64, height=96),
                 GenerationRequest(prompt="a [red:blue:2] circle", seed=1, steps=4, width=64, height=64)]
    jobs = [batched.queue.submit(request) for request in different]
    batched.start()
    for job in jobs:
        batched.queue.wait(job, timeout=120)
    for index, job in enumerate(jobs):
        for other in jobs[index + 1:]:
            assert not overlapped(job, other), f"{job.request} ran together with {other.request}"


def test_cancelling_one_job_of_a_batch_leaves_the_others_untouched(app_config, batched):
    jobs = [batched.queue.submit(request) for request in requests(steps=150)]
    batched.start()
    deadline = time.monotonic() + 60
    while jobs[1].progress.step < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(job.state == "running" for job in jobs), "the three jobs should be running as one batch"
    assert batched.queue.cancel(jobs[1].id)
    kept = [batched.queue.wait(jobs[0], timeout=300), batched.queue.wait(jobs[2], timeout=300)]
    jobs[1].done_event.wait(300)
    assert jobs[1].state == "cancelled" and (jobs[1].result is None or not jobs[1].result.images)
    assert [job.state for job in (jobs[0], jobs[2])] == ["done", "done"]
    assert [len(result.images) for result in kept] == [1, 1]
    assert jobs[0].progress.step == jobs[2].progress.step == 150


def test_interrupt_stops_every_job_of_the_running_batch(batched):
    jobs = [batched.queue.submit(request) for request in requests(steps=150)]
    batched.start()
    deadline = time.monotonic() + 60
    while jobs[0].progress.step < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batched.queue.interrupt_current()
    for job in jobs:
        job.done_event.wait(300)
    assert all(job.progress.step < 150 for job in jobs)
