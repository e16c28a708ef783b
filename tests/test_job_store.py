"""The persistent queue: jobs, their progress and their results survive a restart, even a kill -9 mid-job.

Most tests use a runner that paints images instead of a model: their subject is the queue and its database.
One test runs the real engine on the tiny model through two "server lifetimes"; one kills a real process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.errors import RequestError
from modules.image.request import GenerationRequest
from modules.image.results import GeneratedImage, GenerationResult
from modules.jobs.control import Progress
from modules.jobs.queue import JobQueue
from modules.jobs.store import SCHEMA_VERSION, JobStore
from tests.helpers import image_queue

ROOT = Path(__file__).resolve().parent.parent


def paint(request, control, saved_to: Path | None = None) -> GenerationResult:
    """Stands in for the model: one flat image per batch item, colour from the seed; saved when asked."""
    images = []
    for index in range(request.batch_size):
        seed = max(request.seed, 0) + index
        image = Image.new("RGB", (16, 8), (seed % 256, 40, 200))
        path = None
        if saved_to is not None:
            saved_to.mkdir(parents=True, exist_ok=True)
            path = saved_to / f"{seed}.png"
            image.save(path)
        images.append(GeneratedImage(image, seed, -1, request.prompt, "", f"{request.prompt}\nSeed: {seed}", path))
    return GenerationResult(images=images, grid=None,
                            interrupted=control.interrupted.is_set())


def make_queue(tmp_path: Path, *, gate: threading.Event | None = None, **options) -> tuple[JobQueue, list[str]]:
    ran: list[str] = []

    def runner(request, control):
        ran.append(request.prompt)
        if request.prompt == "bad":
            raise RequestError("steps", "must be between 1 and 150, got 0")
        if gate is not None:
            control.report(Progress(step=1, steps=request.steps))
            while not gate.is_set() and not control.interrupted.is_set():
                time.sleep(0.005)
        return paint(request, control)

    return image_queue(runner, store=JobStore(tmp_path / "jobs.sqlite3"), **options), ran


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def rows(path: Path) -> dict[str, sqlite3.Row]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return {row["id"]: row for row in db.execute("SELECT * FROM jobs")}


# -- crash recovery ------------------------------------------------------------------------------------------------
def test_a_crash_leaves_running_and_queued_jobs_that_a_new_queue_runs_in_order(tmp_path):
    first, ran_before = make_queue(tmp_path)  # never started: the process "dies" with everything unfinished
    jobs = [first.submit(GenerationRequest(prompt=f"p{i}", seed=10 * i, batch_size=2), source="a1111",
                         owner="key-1", webhook="http://hook") for i in range(4)]
    jobs[0].state, jobs[0].started = "running", time.time()  # the worker had claimed the first one
    first.store.save_state(jobs[0])
    assert first.cancel(jobs[3].id)  # a cancelled job stays cancelled
    del first

    second, ran = make_queue(tmp_path)
    ended: list[int] = []
    second.add_listener(lambda job: ended.append(job.number))
    second.start()
    try:
        later = second.submit(GenerationRequest(prompt="later"))
        for job in [*jobs[:3], later]:
            second.wait(second.get(job.id), timeout=30)
    finally:
        second.stop()
    assert ran_before == [] and ran == ["p0", "p1", "p2", "later"]
    assert ended == [1, 2, 3, 5] and later.number == 5  # numbers continue after the highest stored
    recovered = second.get(jobs[0].id)
    assert (recovered.state, recovered.attempts, recovered.source, recovered.owner) == ("done", 1, "a1111", "key-1")
    assert recovered.webhook == "http://hook" and recovered.request.batch_size == 2
    assert second.get(jobs[1].id).attempts == 0 and second.get(jobs[3].id).state == "cancelled"


def test_finished_results_survive_and_load_with_their_images(tmp_path):
    queue, _ = make_queue(tmp_path)
    queue.start()
    try:
        job = queue.submit(GenerationRequest(prompt="keep me", seed=7, batch_size=3))
        result = queue.wait(job, timeout=30)
    finally:
        queue.stop()
    folder = tmp_path / "jobs" / job.id
    assert sorted(path.name for path in folder.iterdir()) == ["000-7.png", "001-8.png", "002-9.png"]
    assert Image.open(folder / "001-8.png").info["parameters"] == "keep me\nSeed: 8"  # the infotext goes along

    again, _ = make_queue(tmp_path)  # a restart: nothing in memory
    loaded = again.get(job.id)
    assert loaded is not job and loaded.state == "done" and loaded.done_event.is_set()
    assert loaded.result.seeds == [7, 8, 9] and loaded.result.summary == result.summary
    for old, new in zip(result.images, loaded.result.images, strict=True):
        assert np.array_equal(np.asarray(old.image), np.asarray(new.image))
        assert new.path.parent == folder and new.infotext == old.infotext
    assert again.wait(loaded, timeout=1) is loaded.result
    assert again.get(job.id) is loaded  # read once, then kept
    assert again.get("no-such-job") is None


def test_images_saved_to_the_outputs_folder_are_referenced_not_copied(tmp_path):
    outputs = tmp_path / "outputs"
    queue = image_queue(lambda request, control: paint(request, control, saved_to=outputs),
                     store=JobStore(tmp_path / "data" / "jobs.sqlite3"))
    queue.start()
    try:
        job = queue.submit(GenerationRequest(prompt="saved", seed=3))
        queue.wait(job, timeout=30)
    finally:
        queue.stop()
    assert not (tmp_path / "data" / "jobs" / job.id).exists()
    stored = json.loads(rows(tmp_path / "data" / "jobs.sqlite3")[job.id]["result_json"])
    assert stored["images"][0]["file"] == str((outputs / "3.png").resolve())
    loaded = image_queue(paint, store=JobStore(tmp_path / "data" / "jobs.sqlite3")).get(job.id)
    assert loaded.result.images[0].path == (outputs / "3.png").resolve()


def test_a_missing_or_damaged_result_file_is_reported_not_fatal(tmp_path):
    queue, _ = make_queue(tmp_path)
    queue.start()
    try:
        job = queue.submit(GenerationRequest(prompt="fragile", seed=1, batch_size=3))
        queue.wait(job, timeout=30)
    finally:
        queue.stop()
    folder = tmp_path / "jobs" / job.id
    (folder / "000-1.png").unlink()
    (folder / "002-3.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")

    loaded, _ = make_queue(tmp_path)
    restored = loaded.get(job.id)
    assert restored.state == "done" and restored.result.seeds == [2]
    assert "000-1.png: missing" in restored.error and "002-3.png" in restored.error
    assert loaded.history()[0][0].id == job.id  # listing it does not fail either


def test_a_job_whose_input_image_is_gone_fails_naming_the_field_and_the_rest_run(tmp_path):
    first, _ = make_queue(tmp_path)
    init = Image.new("RGB", (16, 16), (1, 2, 3))
    broken = first.submit(GenerationRequest(task="img2img", prompt="lost", init_image=init))
    kept = first.submit(GenerationRequest(task="img2img", prompt="kept", init_image=init))
    (tmp_path / "jobs" / broken.id / "init.png").unlink()

    second, ran = make_queue(tmp_path)
    second.start()
    try:
        with pytest.raises(RequestError) as caught:
            second.wait(second.get(broken.id), timeout=30)
        second.wait(second.get(kept.id), timeout=30)
    finally:
        second.stop()
    assert caught.value.field == "init_image" and ran == ["kept"]
    assert np.array_equal(np.asarray(second.get(kept.id).request.init_image), np.asarray(init))
    assert rows(tmp_path / "jobs.sqlite3")[broken.id]["state"] == "failed"


def test_a_job_that_keeps_killing_the_server_is_given_up(tmp_path):
    first, _ = make_queue(tmp_path)
    job = first.submit(GenerationRequest(prompt="poison"))
    job.state, job.attempts = "running", 2  # cut short twice already
    first.store.save_state(job)

    second, ran = make_queue(tmp_path, max_attempts=3)
    second.start()
    try:
        restored = second.get(job.id)
        with pytest.raises(RuntimeError, match="stopped during this job 3 times"):
            second.wait(restored, timeout=5)
    finally:
        second.stop()
    assert ran == [] and restored.attempts == 3


def test_a_job_cut_short_by_stop_runs_again_but_a_cancelled_one_does_not(tmp_path):
    gate = threading.Event()
    queue, _ = make_queue(tmp_path, gate=gate)
    told: list[str] = []
    queue.add_listener(lambda job: told.append(job.id))  # webhooks and quotas listen here
    queue.start()
    running = queue.submit(GenerationRequest(prompt="long", steps=9))
    waiting = queue.submit(GenerationRequest(prompt="waiting"))
    wait_for(lambda: running.state == "running")
    queue.stop()
    assert waiting.state == "queued"  # stop leaves the queue for the next start
    assert told == []  # the cut-short job has not ended: it runs again, so no webhook fires and nothing is counted
    states = {key: row["state"] for key, row in rows(tmp_path / "jobs.sqlite3").items()}
    assert states == {running.id: "queued", waiting.id: "queued"}

    second, ran = make_queue(tmp_path, gate=gate)
    second.start()
    try:
        rerun = second.get(running.id)
        wait_for(lambda: rerun.state == "running")
        assert second.cancel(rerun.id)  # the user interrupts it: that is final
        second.wait(rerun, timeout=30)
    finally:
        second.stop()
    assert ran[0] == "long" and rows(tmp_path / "jobs.sqlite3")[running.id]["state"] == "done"
    assert rerun.result.interrupted


@pytest.mark.slow
def test_kill_9_mid_job_loses_nothing(tmp_path):
    """A real process is killed while its worker runs a job; a new queue on the same database finishes it all."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from modules.jobs.store import JobStore
        from modules.image.request import GenerationRequest
        from modules.jobs.control import Progress
        from tests.helpers import image_queue

        def runner(request, control):
            for step in range(1, 100000):
                control.report(Progress(step=step, steps=100000))
                time.sleep(0.01)

        queue = image_queue(runner, store=JobStore(Path({str(tmp_path)!r}) / "jobs.sqlite3"), progress_interval=0)
        queue.submit(GenerationRequest(prompt="interrupted", seed=1))
        queue.submit(GenerationRequest(prompt="queued", seed=2))
        queue.start()
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", script])
    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        wait_for(lambda: process.poll() is None and _step_of_running(store) >= 3, timeout=120)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    before = sorted(rows(tmp_path / "jobs.sqlite3").values(), key=lambda row: row["number"])
    assert [row["state"] for row in before] == ["running", "queued"]

    queue, ran = make_queue(tmp_path)
    queue.start()
    try:
        results = [queue.wait(queue.get(row["id"]), timeout=30) for row in before]
    finally:
        queue.stop()
    assert ran == ["interrupted", "queued"] and [result.seeds for result in results] == [[1], [2]]
    assert queue.get(before[0]["id"]).attempts == 1


def _step_of_running(store: JobStore) -> int:
    records, _ = store.page(limit=10, state="running")
    return max((record.progress.get("step", 0) for record in records), default=0)


# -- cancel, progress, history, stats --------------------------------------------------------------------------------
def test_cancel_queued_and_interrupt_running_are_recorded(tmp_path):
    gate = threading.Event()
    queue, ran = make_queue(tmp_path, gate=gate)
    queue.start()
    try:
        running = queue.submit(GenerationRequest(prompt="running", steps=4))
        waiting = queue.submit(GenerationRequest(prompt="waiting"))
        wait_for(lambda: running.state == "running")
        assert queue.cancel(waiting.id) and queue.cancel(running.id)
        queue.wait(running, timeout=30)
        assert not queue.cancel(waiting.id)
    finally:
        queue.stop()
    stored = rows(tmp_path / "jobs.sqlite3")
    assert stored[waiting.id]["state"] == "cancelled" and stored[waiting.id]["finished"] is not None
    assert stored[running.id]["state"] == "done" and json.loads(stored[running.id]["result_json"])["interrupted"]
    assert ran == ["running"]


def test_progress_is_written_while_running_but_throttled(tmp_path):
    gate = threading.Event()
    queue, _ = make_queue(tmp_path, gate=gate, progress_interval=3600)
    writes: list[int] = []
    save = queue.store.save_progress
    queue.store.save_progress = lambda job: (writes.append(job.progress.step), save(job))
    queue.start()
    try:
        job = queue.submit(GenerationRequest(prompt="slow", steps=20))
        wait_for(lambda: job.progress.step == 1)
        for step in range(2, 20):
            job.control.report(Progress(step=step, steps=20))
        stored = json.loads(rows(tmp_path / "jobs.sqlite3")[job.id]["progress_json"])
        assert stored["step"] == 1 and stored["steps"] == 20  # the first report, not every step
        assert job.progress.step == 19 and writes == [1]
        gate.set()
        queue.wait(job, timeout=30)
    finally:
        queue.stop()
    assert json.loads(rows(tmp_path / "jobs.sqlite3")[job.id]["progress_json"])["step"] == 19  # the last, at the end


def test_history_pages_and_filters_from_the_database(tmp_path):
    queue, _ = make_queue(tmp_path, history_limit=3)  # memory keeps 3 finished jobs; the rest only on disk
    queue.start()
    try:
        jobs = [queue.submit(GenerationRequest(prompt="bad" if i % 5 == 0 else f"p{i}", steps=i or 1),
                             owner="ann" if i % 2 else "bob") for i in range(12)]
        for job in jobs:
            job.done_event.wait(30)
    finally:
        queue.stop()
    assert len(queue.jobs()) == 3
    page, total = queue.history(limit=5, offset=0)
    assert total == 12 and [job.number for job in page] == [12, 11, 10, 9, 8]
    page, _ = queue.history(limit=5, offset=10)
    assert [job.number for job in page] == [2, 1]
    failed, total = queue.history(state="failed")
    assert total == 3 and {job.error_field for job in failed} == {"steps"}
    mine, total = queue.history(limit=2, owner="ann", state="done")
    assert total == 5 and [job.number for job in mine] == [12, 10] and mine[0].result.images

    restarted, _ = make_queue(tmp_path)
    page, total = restarted.history(limit=3, offset=1, state="done")
    assert total == 9 and [job.number for job in page] == [10, 9, 8]
    assert page[0].result.images[0].image.size == (16, 8)


def test_stats_count_the_queue_and_time_the_finished(tmp_path):
    gate = threading.Event()
    queue, _ = make_queue(tmp_path, gate=gate)
    empty = queue.stats()
    assert empty == {"queued": 0, "running": None, "finished": 0, "average_seconds": None}
    queue.start()
    try:
        first = queue.submit(GenerationRequest(prompt="one"))
        queue.submit(GenerationRequest(prompt="two"))
        queue.submit(GenerationRequest(prompt="three"))
        wait_for(lambda: first.state == "running")
        busy = queue.stats()
        assert (busy["queued"], busy["running"], busy["finished"]) == (2, first.id, 0)
        gate.set()
        wait_for(lambda: queue.stats()["finished"] == 3)
    finally:
        queue.stop()
    done = queue.stats()
    assert done["queued"] == 0 and done["running"] is None and done["average_seconds"] >= 0


def test_memory_only_queue_has_the_same_stats(tmp_path):
    queue = image_queue(paint)
    queue.start()
    try:
        job = queue.submit(GenerationRequest(prompt="x"))
        queue.wait(job, timeout=30)
    finally:
        queue.stop()
    stats = queue.stats()
    assert (stats["queued"], stats["running"], stats["finished"]) == (0, None, 1)
    assert stats["average_seconds"] == pytest.approx(job.finished - job.started)
    assert not list(tmp_path.iterdir())  # nothing written without a store


# -- the database itself ---------------------------------------------------------------------------------------------
def test_the_schema_is_versioned_and_a_newer_database_is_refused(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    assert store.max_number() == 0
    store.close()
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert int(version) == SCHEMA_VERSION
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(RuntimeError, match="newer Sfumato"):
        JobStore(tmp_path / "jobs.sqlite3").max_number()


def test_nothing_is_opened_until_the_store_is_used(tmp_path):
    store = JobStore(tmp_path / "data" / "jobs.sqlite3")
    image_queue(paint, store=store)
    assert not (tmp_path / "data").exists()
    with pytest.raises(ValueError):
        store.job_dir("../elsewhere")


def test_a_damaged_request_row_fails_its_job_and_the_worker_goes_on(tmp_path):
    first, _ = make_queue(tmp_path)
    damaged = first.submit(GenerationRequest(prompt="damaged"))
    fine = first.submit(GenerationRequest(prompt="fine"))
    first.store.close()
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        db.execute("UPDATE jobs SET request_json = '{not json' WHERE id = ?", (damaged.id,))

    second, ran = make_queue(tmp_path)
    second.start()
    try:
        with pytest.raises(RequestError, match="damaged"):
            second.wait(second.get(damaged.id), timeout=30)
        second.wait(second.get(fine.id), timeout=30)
    finally:
        second.stop()
    assert ran == ["fine"]


# -- the real engine -------------------------------------------------------------------------------------------------
def test_real_generations_survive_a_crash_and_a_restart(app_config):
    from modules.runtime.services import build_services

    init = Image.new("RGB", (64, 64), (30, 60, 200))
    ImageDraw.Draw(init).ellipse((16, 16, 48, 48), fill=(220, 40, 40))
    base = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64}
    requests = [
        GenerationRequest(**base, seed=11, batch_size=2, save_images=False),
        GenerationRequest(**{**base, "width": 0, "height": 0}, task="img2img", init_image=init, seed=12,
                          denoising_strength=0.5, save_images=False),
        GenerationRequest(**{**base, "width": 0, "height": 0}, task="img2img", init_image=init, seed=14),
        GenerationRequest(**base, seed=13),  # saved to outputs/
    ]
    crashed = build_services(app_config)  # submitted, never run: the server died first
    with pytest.raises(RequestError, match="multiple of 8"):  # refused at submission: never stored
        crashed.queue.submit(GenerationRequest(**{**base, "width": 100}))
    jobs = [crashed.queue.submit(request, source="a1111") for request in requests]
    jobs[0].state = "running"
    crashed.queue.store.save_state(jobs[0])
    crashed.queue.store.close()
    (app_config.data_dir / "jobs" / jobs[2].id / "init.png").unlink()  # its input is gone when the job comes back

    restarted = build_services(app_config)
    restarted.start()
    try:
        results = [restarted.queue.wait(restarted.queue.get(job.id), timeout=300) for job in jobs[:2]]
        with pytest.raises(RequestError) as caught:
            restarted.queue.wait(restarted.queue.get(jobs[2].id), timeout=300)
        saved = restarted.queue.wait(restarted.queue.get(jobs[3].id), timeout=300)
    finally:
        restarted.stop()
    assert caught.value.field == "init_image" and "cannot be read" in caught.value.message
    assert results[0].seeds == [11, 12] and restarted.queue.get(jobs[0].id).attempts == 1
    assert results[1].images[0].image.size == (64, 64)

    later = build_services(app_config).queue  # a third lifetime: only reads
    first = later.get(jobs[0].id)
    data_dir = app_config.data_dir
    for old, new in zip(results[0].images, first.result.images, strict=True):
        assert np.array_equal(np.asarray(old.image), np.asarray(new.image))
        assert new.path.parent == data_dir / "jobs" / jobs[0].id and "Seed: " in new.infotext
    assert later.get(jobs[3].id).result.images[0].path == saved.images[0].path.resolve()
    assert str(saved.images[0].path.resolve()).startswith(str(app_config.outdir.resolve()))
    assert later.get(jobs[2].id).error_field == "init_image"
    assert later.stats()["finished"] == 4
