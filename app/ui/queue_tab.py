"""The Queue tab: what is waiting or running (with a way to cancel it) and the history of past jobs.

Every front end shares one queue, so this is where a user sees why their job has not started, cancels one they
no longer want, and finds the images of an earlier job, including one that finished before a restart (the queue
reads it back from its store). Handlers are plain functions over values by name, so tests call them directly.

The tab is pushed, not polled: on page load one long-running event (``queue_pushes``) subscribes to every change
the queue publishes and sends the waiting jobs and the stats line only when they changed, so a page where nothing
happens makes no request and receives nothing but Gradio's own keep-alives (a 2 s timer kept the page busy forever,
costing battery and keeping tools that wait for the requests to stop waiting). When the set of jobs changes, a
small state (``queue_mark``) changes with it and its ``.change`` event redraws the Job list and the history with
the page's *current* selection, page and filter, which a generator started at load cannot see.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.ui.form import INFO, WARNING, Form, Values
from app.ui.generate import error_html, progress_text, status_html
from app.ui.results import result_state

if TYPE_CHECKING:
    from modules.jobs.events import Subscription
    from modules.jobs.queue import Job
    from modules.runtime.services import Services

PAGE_SIZE = 20
PUSH_SECONDS = 0.5  # the most often a page is sent the queue: steps faster than this are shown together
WAKE_SECONDS = 30.0  # how often a quiet page's pusher looks whether its page was closed (it sends nothing then)
PUSHED = ("pending", "stats", "queue_mark")  # what the pusher sends; the rest follows queue_mark's change
PENDING_HEADERS = ["#", "Task", "Prompt", "State", "Progress"]
HISTORY_HEADERS = ["Time", "#", "Task", "State", "Prompt", "Seconds", "Outputs", "Error"]
STATE_FILTERS = ("all", "done", "failed", "cancelled")
PROMPT_CHARS = 60
SHOWN = ("gallery", "clip", "sound", "job_info", "status", "selected_job", "reuse_video")  # what a selected row fills
PLAYABLE_VIDEO = ("video/mp4", "video/webm")  # what a browser's video element plays (a GIF or WebP is a picture)


def build_queue(services: Services) -> Form:
    """Lay out and wire the tab (call inside a ``gr.Tab``)."""
    form = Form()
    with gr.Row(equal_height=True):
        form["stats"] = gr.Markdown("")
        form["refresh"] = gr.Button("Refresh", size="sm", scale=0, min_width=100)
    form["pending"] = gr.Dataframe(headers=PENDING_HEADERS, interactive=False, label="Waiting and running",
                                   wrap=True)
    with gr.Row(equal_height=True):
        # A choice can end (and leave the list) between the pick and the click: the stale id must reach
        # cancel_job, which says the job had already ended, instead of failing in Gradio's check (an HTTP 500).
        form["cancel_job"] = gr.Dropdown(label="Job", choices=[], value=None, scale=4, allow_custom_value=True)
        form["cancel"] = gr.Button("Cancel job", variant="stop", size="sm", scale=1)
    form["status"] = gr.HTML("")
    gr.Markdown("### History")
    with gr.Row(equal_height=True):
        form["state_filter"] = gr.Dropdown(list(STATE_FILTERS), value="all", label="State", scale=2)
        form["previous"] = gr.Button("◀", size="sm", scale=0, min_width=40)
        form["page"] = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=1)
        form["next"] = gr.Button("▶", size="sm", scale=0, min_width=40)
        form["page_info"] = gr.Markdown("", scale=2)
    form["history"] = gr.Dataframe(headers=HISTORY_HEADERS, interactive=False, label="Past jobs (select one to "
                                   "see its images)", wrap=True)
    form["history_ids"] = gr.State([])
    form["queue_mark"] = gr.State(None)
    form["gallery"] = gr.Gallery(label="Images and clips of the selected job", columns=4, height=384, format="png",
                                 interactive=False, object_fit="contain", elem_id="queue-gallery")
    form["clip"] = gr.Video(label="Video of the selected job", interactive=False, loop=True, height=384,
                            elem_id="queue-video", visible=False)
    form["sound"] = gr.Audio(label="Sound of the selected job", type="filepath", interactive=False,
                             elem_id="queue-sound")
    form["job_info"] = gr.Textbox(label="Job", lines=4, interactive=False, buttons=["copy"])
    form["selected_job"] = gr.State(None)
    # Wired by build_layout (it fills another tab): only a video job's seed and parameters go there.
    form["reuse_video"] = gr.Button("Reuse in the Video tab", size="sm", visible=False, elem_id="queue-reuse-video")
    _wire(services, form)
    _wire_pushes(services, form)
    return form


def _wire(services: Services, form: Form) -> None:
    queue_outputs = ["pending", "cancel_job", "stats"]
    history_inputs = ["page", "state_filter"]
    history_outputs = ["history", "history_ids", "page", "page_info"]
    every = {"api_name": False, "show_progress": "hidden"}
    form.connect(form["queue_mark"].change, lambda values: jobs_changed(services, values),
                 ["cancel_job", *history_inputs], ["cancel_job", *history_outputs], **every)
    form.connect(form["refresh"].click, lambda values: refresh(services, values),
                 ["cancel_job", *history_inputs], [*queue_outputs, *history_outputs], **every)
    form.connect(form["cancel"].click, lambda values: cancel_job(services, values),
                 ["cancel_job", *history_inputs], ["status", *queue_outputs, *history_outputs], **every)
    for trigger in (form["state_filter"].change, form["page"].submit):
        form.connect(trigger, lambda values: history_view(services, values), history_inputs, history_outputs,
                     **every)
    for button, step in (("previous", -1), ("next", 1)):
        form.connect(form[button].click, lambda values, step=step: change_page(services, values, step),
                     history_inputs, history_outputs, **every)

    def on_select(data: dict, event: gr.SelectData) -> dict:
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return form.by_component(show_job(services, form.by_name(data), row))

    form["history"].select(on_select, inputs={form["history_ids"]},
                           outputs=[form[name] for name in SHOWN],
                           api_name=False)


def _wire_pushes(services: Services, form: Form) -> None:
    """Start the pusher when a page loads and end it when the page goes (Gradio's unload, on the page's heartbeat
    connection closing). Its event has no concurrency limit: one runs per open page for the page's lifetime, and
    it must never hold back another page's pusher or any other event."""
    blocks = gr.context.Context.root_block  # the Blocks being built: unload is a Blocks event, not a component's
    if blocks is None:
        raise RuntimeError("build_queue must be called inside a gr.Blocks")
    pages = OpenPages()
    outputs = [form[name] for name in PUSHED]

    async def push(request: gr.Request) -> AsyncIterator[dict]:
        async for update in queue_pushes(services, pages, request.session_hash or ""):
            yield form.by_component(update)

    def page_closed(request: gr.Request) -> None:
        pages.close(request.session_hash or "")

    gr.on(None, push, inputs=None, outputs=outputs, concurrency_limit=None, show_progress="hidden", api_name=False)
    blocks.unload(page_closed)


# -- the queue ---------------------------------------------------------------------------------------------------
def waiting_jobs(services: Services) -> list[Any]:
    """The running job first, then the queued ones in the order they will run."""
    queue = services.queue
    running = [queue.current] if queue.current is not None else []
    queued = sorted(queue.pending(), key=lambda job: job.number)
    return running + [job for job in queued if job not in running]


def pending_rows(services: Services, jobs: list[Any] | None = None) -> list[list[Any]]:
    jobs = waiting_jobs(services) if jobs is None else jobs
    return [[job.number, _label(services, job), _prompt(services, job), job.state, progress_text(services, job)]
            for job in jobs]


def job_label(services: Services, job: Job) -> str:
    return f"#{job.number} {_label(services, job)} · {_prompt(services, job)}"


def stats_markdown(services: Services, stats: dict[str, Any] | None = None) -> str:
    stats = stats if stats is not None else services.queue.stats()
    average = stats["average_seconds"]
    parts = [f"**{stats['queued']}** waiting", "**1** running" if stats["running"] else "nothing running",
             f"**{stats['finished']}** finished"]
    if average is not None:
        parts.append(f"about **{average:.1f} s** per job")
    return " · ".join(parts)


def queue_view(services: Services, values: Values) -> Values:
    """The waiting jobs, the cancel choices (keeping the selection while that job still waits), the stats line."""
    jobs = waiting_jobs(services)
    return {"pending": pending_rows(services, jobs), "cancel_job": job_choices(services, values, jobs),
            "stats": stats_markdown(services)}


def job_choices(services: Services, values: Values, jobs: list[Any] | None = None) -> Any:
    """The Job list's choices, keeping the selection while that job still waits or runs."""
    jobs = waiting_jobs(services) if jobs is None else jobs
    selected = values.get("cancel_job")
    value = selected if selected in {job.id for job in jobs} else None
    return gr.update(choices=[(job_label(services, job), job.id) for job in jobs], value=value)


def cancel_job(services: Services, values: Values) -> Values:
    """Cancel the chosen job if it waits, interrupt it if it runs; say which happened."""
    job_id = values.get("cancel_job")
    job = services.queue.get(job_id) if job_id else None
    if job is None:
        update = {"status": error_html("cancel_job", "choose a waiting or running job first"),
                  WARNING: "Choose a job to cancel."}
    else:
        was = job.state
        if services.queue.cancel(job.id):
            verb = "Interrupted" if was == "running" else "Cancelled"
            update = {"status": status_html(f"{verb} job #{job.number}."), INFO: f"{verb} job #{job.number}."}
        else:
            update = {"status": status_html(f"Job #{job.number} had already ended ({job.state}).")}
    return {**update, **refresh(services, {**values, "cancel_job": None})}


# -- the history -------------------------------------------------------------------------------------------------
def history_view(services: Services, values: Values) -> Values:
    """One page of past jobs, newest first; the ids go to a state so a selected row finds its job."""
    state = values.get("state_filter") or "all"
    page = max(1, int(_number(values.get("page"), 1)))
    jobs, total = services.queue.history(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE,
                                         state=None if state == "all" else state)
    pages = max(1, -(-total // PAGE_SIZE))
    if page > pages:  # the filter shrank the history under the page shown: go to its last page
        return history_view(services, {**values, "page": pages})
    return {"history": [history_row(services, job) for job in jobs], "history_ids": [job.id for job in jobs],
            "page": page, "page_info": f"page {page} of {pages} · {total} job{'s' if total != 1 else ''}"}


def history_row(services: Services, job: Job) -> list[Any]:
    when = _dt.datetime.fromtimestamp(job.created).strftime("%Y-%m-%d %H:%M:%S")
    seconds = round(job.finished - job.started, 1) if job.started and job.finished else None
    outputs = sum(not item.grid for item in job.result.artifacts) if job.result is not None else 0
    return [when, job.number, _label(services, job), job.state, _prompt(services, job), seconds, outputs,
            job.error or ""]


def change_page(services: Services, values: Values, step: int) -> Values:
    page = max(1, int(_number(values.get("page"), 1)) + step)
    return history_view(services, {**values, "page": page})


def show_job(services: Services, values: Values, row: Any) -> Values:
    """A history row's images and clips (grid first, like the generation tabs), its clip or sound in a player,
    and what the job was; the row's job is remembered so "Reuse in the Video tab" knows which one."""
    ids = values.get("history_ids") or []
    index = int(_number(row, -1))
    job = services.queue.get(ids[index]) if 0 <= index < len(ids) else None
    if job is None:
        return {"gallery": [], "clip": gr.update(value=None, visible=False), "sound": None, "job_info": "",
                "status": error_html("history", "that job is no longer listed"), "selected_job": None,
                "reuse_video": gr.update(visible=False)}
    items = result_state(job.result)["items"] if job.result is not None else []
    artifacts = job.result.artifacts if job.result is not None else []
    videos = [item for item in artifacts if item.type == "video" and item.path is not None and item.path.is_file()]
    lines = [f"#{job.number} · {_label(services, job)} · {job.state} · from {job.source}", f"id {job.id}"]
    if items:
        lines.append(items[1 if len(items) > 1 and items[0]["grid"] else 0]["infotext"])
    elif videos and videos[0].infotext:
        lines.append(videos[0].infotext)
    else:
        lines.append(_describe(services, job))
    lines += [str(item.path) for item in videos]  # a clip's files, as the Video tab lists them
    sounds = [item for item in artifacts if item.type == "audio"]
    lines += [f"{item.path} · seed {item.parameters.get('seed')}" for item in sounds]  # files of an audio job
    text = getattr(job.result, "caption", None)  # a result in words (an interrogation) shows them
    if text:
        lines.append(text)
    status = error_html(job.error_field or "", job.error) if job.error else ""
    sound = next((str(item.path) for item in sounds if item.path is not None and item.path.is_file()), None)
    clip = next((str(item.path) for item in videos if item.media_type in PLAYABLE_VIDEO), None)
    return {"gallery": [str(item.path) for item in videos] + [item["image"] for item in items],
            "clip": gr.update(value=clip, visible=clip is not None), "sound": sound,
            "job_info": "\n".join(lines), "status": status, "selected_job": job.id,
            "reuse_video": gr.update(visible=job.kind == "video" and job.request is not None)}


# -- refreshing --------------------------------------------------------------------------------------------------
def refresh(services: Services, values: Values) -> Values:
    return {**queue_view(services, values), **history_view(services, values)}


def jobs_changed(services: Services, values: Values) -> Values:
    """A job was submitted, started or ended (``queue_mark`` changed): the Job list and the history, read with the
    page's current selection, page and filter. Not on progress, so an open list is not redrawn under the pointer."""
    return {"cancel_job": job_choices(services, values), **history_view(services, values)}


def pushed_view(services: Services) -> Values:
    """Everything the pusher may send. ``queue_mark`` names each waiting job with its state, plus the count of
    ended ones: it changes exactly when the Job list or the history has something new to show."""
    jobs = waiting_jobs(services)
    stats = services.queue.stats()
    return {"pending": pending_rows(services, jobs), "stats": stats_markdown(services, stats),
            "queue_mark": [stats["finished"], [[job.id, job.state] for job in jobs]]}


def changed_view(services: Services, shown: Values) -> Values:
    """What differs from what the page was last sent (``shown``, updated in place); empty when nothing does."""
    update = {name: value for name, value in pushed_view(services).items()
              if name not in shown or shown[name] != value}
    shown.update(update)
    return update


class OpenPages:
    """The pushers of the pages that are open, by Gradio session, so a page's unload wakes its pusher to end it at
    once instead of when the queue next changes. One per built tab, shared by its pages; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pages: dict[str, set[Subscription]] = {}

    @contextlib.contextmanager
    def open(self, session: str, changes: Subscription) -> Iterator[Callable[[], bool]]:
        """Register a page's pusher for the ``with`` block; yields "is this page still open?"."""
        with self._lock:
            self._pages.setdefault(session, set()).add(changes)

        def is_open() -> bool:
            with self._lock:
                return changes in self._pages.get(session, ())

        try:
            yield is_open
        finally:
            self.close(session, changes)

    def close(self, session: str, changes: Subscription | None = None) -> None:
        """The page has gone (or one pusher of it ended): wake its pushers so they notice."""
        with self._lock:
            listeners = self._pages.get(session, set())
            ended = {changes} & listeners if changes is not None else set(listeners)
            listeners -= ended
            if not listeners:
                self._pages.pop(session, None)
        for subscription in ended:
            subscription.notify()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(listeners) for listeners in self._pages.values())


async def queue_pushes(services: Services, pages: OpenPages, session: str, *, interval: float = PUSH_SECONDS,
                       wake: float = WAKE_SECONDS) -> AsyncIterator[Values]:
    """The Queue tab's updates for one page, for as long as it is open: everything at once, then only what changed,
    each time the queue publishes a change, at most every ``interval`` seconds. Between changes it waits without
    sending anything, waking every ``wake`` seconds only to see whether the page was closed.

    A coroutine, not a thread: a page may stay open for days, and a blocked thread per open page would drain the
    thread pool that Gradio's other (synchronous) handlers run in.
    """
    shown: Values = {}
    with services.queue.events.subscribe(asynchronous=True) as changes, pages.open(session, changes) as is_open:
        while is_open():
            update = changed_view(services, shown)
            if update:
                yield update
                await asyncio.sleep(interval)  # changes meanwhile keep the subscription set: shown together next
            # Only a published change is looked at: a timed-out wait only checks the page, so an ETA that moved
            # with the clock alone is not sent either.
            while is_open() and not await changes.wait_async(timeout=wake):
                pass


def _label(services: Services, job: Job) -> str:
    try:
        return services.queue.kinds.get(job.kind).label_of(job.request)
    except LookupError:
        return job.kind


def _describe(services: Services, job: Job) -> str:
    """One line of what the job does (its prompt, its upscaler ...), as its kind says it."""
    try:
        return services.queue.kinds.get(job.kind).describe(job.request) if job.request is not None else ""
    except LookupError:
        return ""


def _prompt(services: Services, job: Job) -> str:
    text = " ".join(_describe(services, job).split())
    return text if len(text) <= PROMPT_CHARS else text[: PROMPT_CHARS - 1] + "…"


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default

