"""The Queue tab's handlers, driven with values by name over a real persistent queue (a painting runner stands in
for the model: the subject is what the tab shows and does, not the images)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import gradio as gr
import pytest
from PIL import Image

from app.ui.form import INFO, WARNING
from app.ui.queue_tab import (
    HISTORY_HEADERS,
    PAGE_SIZE,
    OpenPages,
    build_queue,
    cancel_job,
    change_page,
    history_view,
    jobs_changed,
    queue_pushes,
    queue_view,
    show_job,
)
from modules.errors import RequestError
from modules.image.request import GenerationRequest
from modules.image.results import GeneratedImage, GenerationResult
from modules.jobs.control import Progress
from modules.jobs.store import JobStore
from tests.helpers import image_queue, studio_services


@pytest.fixture
def gate():
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def services(tmp_path, gate):
    def runner(request, control):
        if request.prompt.startswith("bad"):
            raise RequestError("steps", "must be between 1 and 150, got 0")
        if request.prompt.startswith("slow"):
            control.report(Progress(step=3, steps=request.steps))
            while not gate.is_set() and not control.interrupted.is_set():
                time.sleep(0.005)
        images = [GeneratedImage(Image.new("RGB", (8, 8), (index * 60, 0, 0)), 40 + index, -1, request.prompt, "",
                                 f"{request.prompt}\nSeed: {40 + index}") for index in range(request.batch_size)]
        grid = images[0] if request.batch_size > 1 else None
        return GenerationResult(images=images, grid=grid, interrupted=control.interrupted.is_set())

    queue = image_queue(runner, store=JobStore(tmp_path / "jobs.sqlite3"))
    queue.start()
    yield dataclasses.replace(studio_services(tmp_path), queue=queue)
    queue.stop()


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_the_queue_shows_the_running_job_first_and_cancels_the_chosen_one(services):
    running = services.queue.submit(GenerationRequest(prompt="slow  painting\nof a lighthouse", steps=10))
    wait_for(lambda: running.state == "running")
    waiting = [services.queue.submit(GenerationRequest(task="txt2img", prompt=f"next {i}")) for i in range(2)]
    view = queue_view(services, {})
    assert [row[0] for row in view["pending"]] == [running.number, *(job.number for job in waiting)]
    assert view["pending"][0][2] == "slow painting of a lighthouse" and view["pending"][0][3] == "running"
    assert "step 3/10" in view["pending"][0][4] and "waiting in queue · 2 ahead" in view["pending"][2][4]
    choices = view["cancel_job"]["choices"]
    assert [value for _label, value in choices] == [running.id, *(job.id for job in waiting)]
    assert choices[1][0].startswith(f"#{waiting[0].number} txt2img · next 0")
    assert "**2** waiting" in view["stats"] and "**1** running" in view["stats"]

    kept = queue_view(services, {"cancel_job": waiting[1].id})
    assert kept["cancel_job"]["value"] == waiting[1].id

    cancelled = cancel_job(services, {"cancel_job": waiting[0].id})
    assert waiting[0].state == "cancelled" and f"Cancelled job #{waiting[0].number}" in cancelled["status"]
    assert INFO in cancelled and waiting[0].id not in [value for _l, value in cancelled["cancel_job"]["choices"]]
    states = {row[1]: row[3] for row in cancelled["history"]}
    assert states[waiting[0].number] == "cancelled" and states[waiting[1].number] == "queued"  # shown at once

    interrupted = cancel_job(services, {"cancel_job": running.id})
    assert "Interrupted" in interrupted["status"] and running.control.interrupted.is_set()
    services.queue.wait(running, timeout=30)
    again = cancel_job(services, {"cancel_job": running.id})
    assert "already ended (done)" in again["status"]
    nothing = cancel_job(services, {"cancel_job": None})
    assert WARNING in nothing and "cancel_job" in nothing["status"]


def test_history_pages_filters_and_shows_a_jobs_images(services, tmp_path):
    jobs = [services.queue.submit(GenerationRequest(prompt=f"bad {i}" if i % 4 == 1 else f"good {i}",
                                                    batch_size=2)) for i in range(PAGE_SIZE + 5)]
    for job in jobs:
        job.done_event.wait(30)
    first = history_view(services, {"page": 1, "state_filter": "all"})
    assert len(first["history"]) == PAGE_SIZE and first["page_info"] == "page 1 of 2 · 25 jobs"
    newest = first["history"][0]
    assert len(newest) == len(HISTORY_HEADERS) and newest[1] == jobs[-1].number
    assert newest[3] == "done" and newest[6] == 2 and newest[5] is not None and newest[7] == ""
    second = change_page(services, {"page": 1, "state_filter": "all"}, +1)
    assert second["page"] == 2 and [row[1] for row in second["history"]] == [job.number for job in jobs[4::-1]]
    failed = history_view(services, {"page": 2, "state_filter": "failed"})  # past the end: its last page
    assert failed["page"] == 1 and len(failed["history"]) == 6
    assert {row[7] for row in failed["history"]} == {"must be between 1 and 150, got 0"}
    assert change_page(services, {"page": 1}, -1)["page"] == 1

    shown = show_job(services, {"history_ids": first["history_ids"]}, 0)
    assert len(shown["gallery"]) == 3 and "Seed: 40" in shown["job_info"] and shown["status"] == ""
    assert show_job(services, {"history_ids": []}, 0)["gallery"] == []

    restarted = dataclasses.replace(services, queue=image_queue(lambda request, control: None,
                                                                store=JobStore(tmp_path / "jobs.sqlite3")))
    page = history_view(restarted, {"page": 1, "state_filter": "done"})
    shown = show_job(restarted, page, 0)
    assert len(shown["gallery"]) == 3 and all(isinstance(item, str) for item in shown["gallery"])
    assert Image.open(shown["gallery"][1]).size == (8, 8)


async def next_push(pushes, timeout: float = 30.0):
    return await asyncio.wait_for(anext(pushes), timeout)


def run_alone(coroutine) -> None:
    """``asyncio.run`` in a thread of its own: the browser suite's Playwright keeps an event loop running in the
    main thread for the whole session, where ``asyncio.run`` refuses to start."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


async def sends_nothing(pushes, seconds: float) -> asyncio.Future:
    """Assert the pusher sends nothing for ``seconds``; the still-waiting next update, to await later."""
    waiting = asyncio.ensure_future(anext(pushes))
    done, _ = await asyncio.wait({waiting}, timeout=seconds)
    assert not done, f"pushed with nothing changed: {waiting.result() if done else None}"
    return waiting


def test_the_pusher_sends_the_queue_at_once_then_only_what_changed_when_it_changed(services, gate):
    async def scenario():
        pages = OpenPages()
        pushes = queue_pushes(services, pages, "page-1", interval=0.02, wake=0.05)
        first = await next_push(pushes)
        assert first == {"pending": [], "stats": "**0** waiting · nothing running · **0** finished",
                         "queue_mark": [0, []]} and len(pages) == 1
        services.queue.events.publish("not-a-job")  # a wake with nothing new, and several idle wakes: silence
        waiting = await sends_nothing(pushes, 0.4)

        job = services.queue.submit(GenerationRequest(prompt="slow lighthouse", steps=10))
        updates = [await asyncio.wait_for(waiting, 30)]
        while not (updates[-1].get("pending") and "step 3/10" in updates[-1]["pending"][0][4]):
            updates.append(await next_push(pushes))
        page = {}  # what the page shows after these updates: each sends only what changed
        for update in updates:
            page.update(update)
        assert updates[0]["queue_mark"][1][0][0] == job.id  # the new job is sent with its mark...
        assert page["queue_mark"] == [0, [[job.id, "running"]]]  # ...and again once it runs
        assert "**1** running" in page["stats"]

        job.control.report(Progress(step=5, steps=10))  # progress alone: the table, not the Job list
        step = await next_push(pushes)
        assert set(step) == {"pending"} and "step 5/10" in step["pending"][0][4]
        await asyncio.sleep(0.1)
        waiting = await sends_nothing(pushes, 0.3)

        gate.set()
        ended = await asyncio.wait_for(waiting, 30)
        while ended.get("queue_mark") != [1, []]:  # the end may come in one update or, ETA first, in two
            ended.update(await next_push(pushes))
        assert ended["pending"] == [] and "**1** finished" in ended["stats"]

        waiting = await sends_nothing(pushes, 0.2)
        pages.close("page-1")  # the page's unload: the waiting pusher ends at once
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 5)
        assert len(pages) == 0

    run_alone(scenario())


def test_closing_one_page_ends_only_its_pusher(services, gate):
    async def scenario():
        pages = OpenPages()
        mine = queue_pushes(services, pages, "mine", wake=30)
        other = queue_pushes(services, pages, "other", wake=30)
        await next_push(mine), await next_push(other)
        waiting_mine, waiting_other = asyncio.ensure_future(anext(mine)), asyncio.ensure_future(anext(other))
        pages.close("mine")
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting_mine, 5)
        assert not waiting_other.done() and len(pages) == 1
        services.queue.submit(GenerationRequest(prompt="slow and still shown"))
        assert (await asyncio.wait_for(waiting_other, 30))["pending"][0][2] == "slow and still shown"
        await other.aclose()  # Gradio dropping the event: the subscription goes with it
        assert len(pages) == 0

    run_alone(scenario())


def test_a_change_of_jobs_redraws_the_list_keeping_the_choice_and_the_history_page(services, gate):
    running = services.queue.submit(GenerationRequest(prompt="slow one", steps=10))
    wait_for(lambda: running.state == "running")
    waiting = services.queue.submit(GenerationRequest(prompt="next"))
    update = jobs_changed(services, {"cancel_job": waiting.id, "page": 1, "state_filter": "all"})
    assert update["cancel_job"]["value"] == waiting.id
    assert [value for _label, value in update["cancel_job"]["choices"]] == [running.id, waiting.id]
    assert [row[1] for row in update["history"]] == [waiting.number, running.number]
    services.queue.cancel(waiting.id)
    update = jobs_changed(services, {"cancel_job": waiting.id, "page": 1, "state_filter": "cancelled"})
    assert update["cancel_job"]["value"] is None and [row[1] for row in update["history"]] == [waiting.number]


def test_the_tab_builds_and_its_registered_handlers_answer_gradio(services):
    with gr.Blocks() as blocks:
        form = build_queue(services)
    job = services.queue.submit(GenerationRequest(prompt="shown"))
    services.queue.wait(job, timeout=30)
    click = next(fn for fn in blocks.fns.values()
                 if any(target[0] == form["refresh"]._id for target in fn.targets))
    data = {form[name]: value for name, value in {"cancel_job": None, "page": 1, "state_filter": "all"}.items()}
    updates = click.fn(data)
    rows = updates[form["history"]]
    assert rows[0][1] == job.number
    assert form["history"].postprocess(rows).headers == HISTORY_HEADERS
    assert form["pending"].postprocess(updates[form["pending"]]).data == []


def test_the_tab_pushes_from_page_load_without_a_concurrency_limit_and_stops_on_unload(services):
    with gr.Blocks() as blocks:
        form = build_queue(services)
    registered = list(blocks.fns.values())
    assert not any(isinstance(block, gr.Timer) for block in blocks.blocks.values())  # nothing polls
    push = next(fn for fn in registered if any(target[1] == "load" for target in fn.targets))
    unload = next(fn for fn in registered if any(target[1] == "unload" for target in fn.targets))
    assert push.concurrency_limit is None and push.queue  # one per open page, never holding back other events
    assert {block._id for block in push.outputs} == {form[name]._id for name in ("pending", "stats", "queue_mark")}
    change = next(fn for fn in registered if any(target == (form["queue_mark"]._id, "change")
                                                 for target in fn.targets))
    assert form["cancel_job"] in change.outputs and form["history"] in change.outputs

    async def scenario():
        request = gr.Request(session_hash="a-page")
        pushes = push.fn(request)
        first = await next_push(pushes)
        assert first[form["pending"]] == [] and first[form["queue_mark"]] == [0, []]
        waiting = asyncio.ensure_future(anext(pushes))
        await asyncio.sleep(0.1)
        unload.fn(request)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 5)

    run_alone(scenario())
