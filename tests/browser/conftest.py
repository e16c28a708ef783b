"""The browser suite: a real studio (``launch.py`` in its own process, on the tiny models) driven by Debian's
Chromium through Playwright, as an artist meets it.

One studio and one browser serve the whole suite (starting them is most of its cost); each test gets a fresh page
whose console errors and uncaught page errors are collected and must be empty when the test ends. Playwright's own
browser download is never used: CI installs Debian's ``chromium`` (see ``.ci/run``); without it the suite is
skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_process import ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000  # a generation on a busy 2-core machine, plus the page's own round trips

# Console errors a healthy page still prints, matched by substring, each with why it is harmless. None so far:
# the studio's pages print no error; PixiJS (the inpaint editor) prints deprecation *warnings*, which are not
# collected. Reloading is the one known source of errors, handled by ``reload`` below.
HARMLESS_CONSOLE: tuple[str, ...] = ()


def missing() -> str | None:
    """Why the browser suite cannot run here, or None. Each test module skips itself with this reason (a
    conftest cannot skip a whole folder)."""
    if not CHROMIUM.exists():
        return f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests need playwright (pip install -e .[test])"
    return None


@pytest.fixture(scope="session")
def studio(tmp_path_factory, tiny_model_store) -> Iterator[dict]:
    """The studio at its URL, with its folders: models copied from the tiny store, outputs and data empty."""
    if os.environ.get("SFUMATO_BROWSER_STUDIO"):  # development: "URL ROOT" of a studio already running
        url, root = os.environ["SFUMATO_BROWSER_STUDIO"].split()
        yield {"url": url, "outputs": Path(root) / "out", "data": Path(root) / "data", "root": Path(root)}
        return
    root = tmp_path_factory.mktemp("studio")
    models = root / "models"
    shutil.copytree(tiny_model_store, models)
    server = ServerProcess(["--models-dir", str(models), "--data-dir", str(root / "data"), "--outdir",
                            str(root / "outputs"), "--ckpt", "tiny-sd1", "--threads", "1", "--api"],
                               root / "studio.log")
    try:
        server.start().wait_ready("/")
        yield {"url": server.url, "outputs": root / "outputs", "data": root / "data", "root": root,
               "server": server}
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser(tmp_path_factory) -> Iterator[object]:
    from playwright import sync_api as playwright_api

    playwright_api.expect.set_options(timeout=TIMEOUT_MS)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000}, accept_downloads=False)
        try:
            yield context
        finally:
            context.close()


class ConsoleLog:
    """Errors the page printed to its console or threw, minus the known harmless ones. After a reload, what the
    old page's cut event streams print (``RELOAD_NOISE``) is dropped too, whenever it arrives."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.reloaded = False

    def console(self, message) -> None:
        if message.type == "error":
            text = f"console: {message.text} ({message.location.get('url', '')})"
            if not any(noise in text for noise in HARMLESS_CONSOLE) and not self.reload_noise(text):
                self.errors.append(text)

    def page_error(self, error) -> None:
        self.errors.append(f"pageerror: {error}")

    def reload_noise(self, text: str) -> bool:
        return self.reloaded and any(noise in text for noise in RELOAD_NOISE)


# What a page's old document prints when a reload cuts its open event streams (the heartbeat and the queue's
# data stream): Gradio logs the abort, "Connection errored out", "network error" or "Unexpected error 404" (the
# stream asking for a session the server has closed), and Chromium an incomplete chunked response. They may
# arrive seconds after the new page loaded, so a page that was reloaded ignores them for the rest of its test;
# a page that never reloads still reports every one (a stream cut for any other reason is a real failure).
RELOAD_NOISE = ("AbortError", "Connection errored out", "Unexpected error 404", "TypeError: network error",
                "net::ERR_INCOMPLETE_CHUNKED_ENCODING")


def reload(tab) -> None:
    """Reload the page as a user does, without counting the cut connections of the old page as errors."""
    log = tab.console_log
    before = len(log.errors)  # what the page printed before the reload counts in full
    log.reloaded = True
    tab.reload()
    wait_loaded(tab)
    log.errors[before:] = [error for error in log.errors[before:] if not log.reload_noise(error)]


def wait_loaded(tab) -> None:
    """Until the page has its tabs and has run its load events (the saved defaults arrive after the first paint;
    typing before that would be overwritten)."""
    from playwright.sync_api import expect

    tab.get_by_role("tab", name="txt2img").wait_for()
    width = tab.get_by_role("tabpanel").filter(visible=True).first.get_by_role(
        "spinbutton", name="number input for Width")
    expect(width).not_to_have_value("0")
    # Every saved default arrives in the page's one load answer, after which the page marks <body> (see
    # app/ui/page_load.py); typing before that would be overwritten.
    tab.locator("body[data-sf-loaded='1']").wait_for(state="attached")


@pytest.fixture
def page(browser, studio):
    """A fresh tab on the studio, loaded; after the test, no console errors may have been printed."""
    tab = browser.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    log = ConsoleLog()
    tab.on("console", log.console)
    tab.on("pageerror", log.page_error)
    tab.console_log = log
    tab.goto(studio["url"])
    wait_loaded(tab)
    yield tab
    tab.close()
    leave_idle(studio["url"])
    assert not log.errors, "the page logged errors:\n" + "\n".join(log.errors)


def leave_idle(url: str) -> None:
    """Cancel what a test left queued or running (through the native API), so a failed test cannot hold the
    shared studio's worker busy under the next tests."""
    import time

    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = [job for state in ("queued", "running")
                for job in httpx.get(f"{url}/api/v1/jobs", params={"state": state, "limit": 100}).json()["jobs"]]
        if not jobs:
            return
        for job in jobs:
            httpx.post(f"{url}/api/v1/jobs/{job['id']}/cancel")
        time.sleep(0.5)
    raise AssertionError("the studio still runs jobs a minute after they were cancelled")
