"""The Generate button: form -> request -> job queue, then live progress until the job ends, then the gallery.

The handler is a plain generator over dicts (names -> values) so tests drive it without a browser. It wakes each
time the queue publishes a change of the job (pushed by the worker, not polled), so the page shows the step, the
batch, an ETA and a live preview while the single worker runs; a job that fails or a form that cannot become a
request ends with a visible message naming the field, never with an exception escaping into Gradio, so the next
Generate always works.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from app.ui.following import ALWAYS, Following
from app.ui.form import WARNING, Values
from app.ui.request_form import request_from_form
from app.ui.results import result_state
from modules.errors import RequestError
from modules.upscaling.results import UpscaleResult

if TYPE_CHECKING:
    from modules.jobs.queue import Job
    from modules.runtime.services import Services

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # the most often the page is updated: steps faster than this are shown together
QUEUED_CHECK_SECONDS = 1.0  # a waiting job's place in the line moves when others end: look again this often
# Form values that come from the persisted settings rather than from a tab's controls.
SETTINGS_FIELDS = ("output_format", "save_images", "make_grid")


def generation_events(services: Services, values: Values, poll: float = POLL_SECONDS,
                      following: Following = ALWAYS) -> Iterator[Values]:
    """Yield UI updates for one Generate click: progress (and previews) while the job runs, then the results.
    With ``following``, the updates stop once a newer job of the same tab takes the page (see following.py).

    Updates use the names ``job``, ``progress``, ``preview``, ``gallery``, ``infotext``, ``status`` and ``result``.
    """
    try:
        yield from _events(services, values, poll, following)
    except Exception as error:  # a bug here must still leave a usable page
        log.exception("generation handler failed")
        yield {**failure("", f"{type(error).__name__}: {error}"), "job": None}


def _events(services: Services, values: Values, poll: float, following: Following) -> Iterator[Values]:
    form = {name: services.settings.get(name) for name in SETTINGS_FIELDS}
    form.update(without_inactive_extensions(services, values))
    try:
        job = services.queue.submit(request_from_form(form))  # the queue checks it first, naming a bad field
    except RequestError as error:
        yield {**failure(error.field, error.message), "job": None}
        return
    if services.settings.has("preview_interval"):  # a saved choice overrides the launch flag
        interval = services.settings.get("preview_interval")
        if isinstance(interval, int) and interval >= 0:
            job.control.preview_interval = interval
    job.control.preview_method = preview_method(services.settings.get("live_preview_method"))
    following.claim(job.id)
    yield from follow_job(services, job, poll, following)


def preview_method(setting: Any) -> str:
    """The saved live-preview choice as the job's method: "full" only when asked; A1111's approximations
    ("Approx NN", "Approx cheap", "TAESD") all mean the cheap one here."""
    return "full" if str(setting or "").strip().lower() == "full" else "approximate"


def without_inactive_extensions(services: Services, values: Values) -> Values:
    """The form's values less the settings of extensions that are not active now: a page built before an extension
    was disabled still sends its controls' values, which the queue would refuse ("extension ... is disabled")."""
    active = {item.name for item in services.extensions.active()}
    return {key: value for key, value in values.items()
            if not (isinstance(key, str) and key.startswith("ext.") and key[4:].partition(".")[0] not in active)}


def follow_job(services: Services, job: Job, poll: float = POLL_SECONDS,
               following: Following = ALWAYS) -> Iterator[Values]:
    """UI updates for any kind of job: its progress (and live preview) each time the queue says it changed, at
    most every ``poll`` seconds, then ``finished``. Nothing more once ``following`` shows a newer job: the
    job goes on in the queue, and the page belongs to the newer one."""
    bar = progress_html(services, job)
    yield {"job": job.id, "progress": bar, "preview": None, "status": ""}
    shown = None
    with services.queue.events.subscribe(job.id) as changes:
        while not job.done_event.is_set():
            waiting = job.state == "queued"
            changed = changes.wait(timeout=QUEUED_CHECK_SECONDS if waiting else 5.0)
            if job.done_event.is_set():
                break
            if not following.shows(job.id):
                return
            update: Values = {}
            now = progress_html(services, job)
            if now != bar or waiting:
                # While it waits, its line is sent again each check: an older job's last step update may
                # reach the page after this job's first one (two events' messages are not ordered).
                update["progress"] = bar = now
            preview = job.progress.current_preview() if changed else None
            if changed and preview is not None and preview is not shown:
                update["preview"] = shown = preview
            if update:  # an unchanged running job's page gets nothing
                # The job again with each update: a page that missed the first one (a busy machine; messages of
                # a generator may be merged) still gets its Interrupt and Skip and knows which job they stop.
                yield {**update, "job": job.id}
                time.sleep(poll)  # at most one page update per ``poll`` seconds, however fast the steps come
    if following.shows(job.id):
        yield finished(job)


def finished(job: Job) -> Values:
    """The final update for an ended job of any kind: its images, or the reason it has none."""
    if job.state == "failed":
        update = failure(job.error_field or "", job.error or "the job failed")
        update["job"] = None
        return update
    if job.state == "cancelled" or job.result is None:
        return {"job": None, "progress": "", "preview": None, "status": status_html("Cancelled before it started.")}
    result = job.result
    state = result_state(result)
    seconds = (job.finished or time.time()) - (job.started or job.created)
    images = [item for item in state["items"] if not item["grid"]]
    count = len(images)
    note = f"{count} image{'s' if count != 1 else ''} in {seconds:.1f} s"
    seeds = [item["seed"] for item in images if item.get("seed", -1) != -1]
    if seeds:
        note += f" · seed {seeds[0]}" if len(seeds) == 1 else f" · seeds {seeds[0]}–{seeds[-1]}"
    if result.interrupted:
        note += " · interrupted"
    if isinstance(result, UpscaleResult):  # inputs of a batch that could not be read
        for problem in result.skipped:
            note += f" · skipped {problem}"
    first = state["items"][state["selected"]]["infotext"] if state["items"] else ""
    return {
        "job": None,
        "progress": "",
        "preview": None,
        "gallery": [item["image"] for item in state["items"]],
        "infotext": first,
        "status": status_html(note),
        "result": state,
    }


def failure(field_name: str, message: str) -> Values:
    """A visible error: an HTML block in the status area and a toast, both naming the field."""
    text = f"{field_name}: {message}" if field_name else message
    return {"progress": "", "preview": None, "status": error_html(field_name, message), WARNING: text}


def error_html(field_name: str, message: str) -> str:
    label = f"<b>{html.escape(field_name)}</b>: " if field_name else ""
    return f'<div class="sf-error" role="alert">{label}{html.escape(message)}</div>'


def status_html(text: str) -> str:
    return f'<div class="sf-status">{html.escape(text)}</div>'


def progress_text(services: Services, job: Any) -> str:
    """"step 5/20 · batch 1/2 · ETA 3s" while running; the queue position while waiting."""
    if job.state == "queued":
        ahead = sum(1 for other in services.queue.pending() if other.number < job.number)
        running = 1 if services.queue.current is not None else 0
        return f"waiting in queue · {ahead + running} ahead" if ahead + running else "starting…"
    progress = job.progress
    if progress.text.startswith("Loading model"):
        return f"{progress.text} …"
    parts = [f"cell {progress.cell + 1}/{progress.cells}"] if progress.cells > 1 else []
    parts.append(f"step {progress.step}/{progress.steps}")
    if progress.job_count > 1:
        parts.append(f"batch {progress.job_no + 1}/{progress.job_count}")
    eta = job.eta()
    if eta is not None:
        parts.append(f"ETA {eta:.0f}s")
    return " · ".join(parts)


def progress_html(services: Services, job: Any) -> str:
    percent = round(100 * job.progress.fraction) if job.state == "running" else 0
    return (
        f'<div class="sf-progress"><div class="sf-progress-bar" style="width:{percent}%"></div>'
        f'<span class="sf-progress-text">{html.escape(progress_text(services, job))}</span></div>'
    )


def interrupt(services: Services, values: Values) -> Values:
    """End this tab's job (or cancel it while queued). Without a job of this tab, nothing: on a shared studio
    the running job may be someone else's."""
    job_id = values.get("job")
    if job_id:
        services.queue.cancel(job_id)
    return {}


def skip(services: Services, values: Values) -> Values:
    """End the current batch of this tab's job and go on with the next one."""
    job_id = values.get("job")
    job = services.queue.get(job_id) if job_id else None
    if job is not None and job.state == "running":
        job.control.skip()
    return {}
