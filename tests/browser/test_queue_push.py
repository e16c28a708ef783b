"""The Queue tab is pushed changes instead of polling: an idle page makes no requests, and a job queued anywhere
shows up without a click.

Gradio keeps two event streams open for as long as a page lives (the session's ``/heartbeat/`` for any app with a
``gr.State``, and the queue's ``/queue/data`` while an event runs, here the tab's pusher), each sending a small
keep-alive every 15 s. So "the network settles" means: no new request and nothing but keep-alives arriving, which
is what ``Traffic`` measures. Playwright's ``networkidle`` (no open connection for 500 ms) can never be reached by a
Gradio page with a state, with or without this tab: use ``Traffic.wait_quiet`` instead.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest

from .conftest import missing, reload, wait_loaded

if missing():
    pytest.skip(missing(), allow_module_level=True)
expect = pytest.importorskip("playwright.sync_api").expect

from .test_studio import generate, open_tab, visible_panel  # noqa: E402  (after the skip: it needs playwright)

pytestmark = pytest.mark.slow

KEEP_ALIVE_BYTES = 100  # Gradio's keep-alive frames ("data: ALIVE", "event: heartbeat") are a few dozen bytes
GRADIO_STREAMS = re.compile(r"/gradio_api/(heartbeat/|queue/data)")


class Traffic:
    """What a page sends and receives, from Chromium's own network log: each new request, each websocket, and
    each chunk of data arriving on a response, with its URL. Attach it before the page opens its streams (then
    reload), so chunks on them are named."""

    def __init__(self, page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.websockets: list[str] = []
        self.chunks: list[tuple[str, int]] = []
        self._urls: dict[str, str] = {}
        self._last = time.monotonic()
        page.on("request", lambda request: self._note(self.requests, f"{request.method} {request.url}"))
        page.on("websocket", lambda socket: self._note(self.websockets, socket.url))
        cdp = page.context.new_cdp_session(page)
        cdp.on("Network.requestWillBeSent",
               lambda event: self._urls.__setitem__(event["requestId"], event["request"]["url"]))
        cdp.on("Network.dataReceived", self._data)
        cdp.send("Network.enable")

    def _note(self, into: list, item: object) -> None:
        into.append(item)
        self._last = time.monotonic()

    def _data(self, event: dict) -> None:
        chunk = (self._urls.get(event["requestId"], "?"), event["dataLength"])
        self.chunks.append(chunk)
        if not self.keep_alive(chunk):
            self._last = time.monotonic()

    @staticmethod
    def keep_alive(chunk: tuple[str, int]) -> bool:
        url, size = chunk
        return size < KEEP_ALIVE_BYTES and bool(GRADIO_STREAMS.search(url))

    def clear(self) -> None:
        self.requests.clear(), self.websockets.clear(), self.chunks.clear()

    def wait_quiet(self, quiet_ms: int = 500, timeout_ms: int = 60_000) -> None:
        """Until nothing but keep-alives has come or gone for ``quiet_ms`` (what ``networkidle`` would mean)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() - self._last < quiet_ms / 1000:
            assert time.monotonic() < deadline, f"the page never went quiet: {self.requests[-5:]}"
            self.page.wait_for_timeout(100)  # lets Playwright deliver the events meanwhile


def test_an_idle_queue_tab_is_silent_and_is_pushed_a_job_queued_elsewhere(page, browser, studio):
    traffic = Traffic(page)
    reload(page)  # so the event streams are opened under the log's eyes
    queue = open_tab(page, "Queue")
    expect(queue.get_by_text(re.compile(r"\d+ finished"))).to_be_visible()  # the first push has arrived
    traffic.wait_quiet()  # ... and the history it asked for
    traffic.clear()
    page.wait_for_timeout(5000)
    assert traffic.requests == [] and traffic.websockets == [], "an idle Queue tab made requests"
    assert all(traffic.keep_alive(chunk) for chunk in traffic.chunks), traffic.chunks
    per_stream = [url for url, _size in traffic.chunks]
    assert all(per_stream.count(url) == 1 for url in per_stream), per_stream  # one keep-alive a stream at most

    prompt = f"pushed to every queue tab {uuid.uuid4().hex[:8]}"
    other = browser.new_page()  # another artist, another session: this page still learns of their job
    try:
        other.goto(studio["url"])
        wait_loaded(other)
        generate(visible_panel(other), prompt)
        row = queue.get_by_role("row").filter(has_text=prompt)
        expect(row.filter(has_text="done")).to_be_visible()  # in the history, without a click here
    finally:
        other.close()
    joins = [request for request in traffic.requests if "/queue/join" in request]
    assert len(joins) <= 3, traffic.requests  # one per change of the job set (queued, running, done), none per step
    traffic.wait_quiet()
    traffic.clear()
    page.wait_for_timeout(2000)
    assert traffic.requests == [], "the tab kept asking after the job ended"
