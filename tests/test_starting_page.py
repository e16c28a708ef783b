"""Issue 18, the UI answers at once: the web UI's server binds its port before Gradio is imported, answers the page's
address with a self-reloading "starting" page (503 + Retry-After) until the studio's Blocks are built, then serves
the studio mounted on the same app and port, while the API's routes (``--api``) answer throughout."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from server_process import START_TIMEOUT, ServerProcess

from app.starting import STARTING_MARK

HTML = {"Accept": "text/html,application/xhtml+xml"}


def reverse_blocks():
    """A small Blocks with one named event, standing in for the studio's page where the subject is the server."""
    import gradio as gr

    with gr.Blocks() as blocks:
        text = gr.Textbox()
        gr.Button().click(lambda value: value[::-1], text, text, api_name="reverse")
    return blocks


@dataclasses.dataclass
class RunningUi:
    url: str
    app: object
    release: threading.Event
    failures: list[BaseException]
    failed: threading.Event
    ready: list[object]


@pytest.fixture
def running_ui(tmp_path) -> Iterator[Callable[..., RunningUi]]:
    """``running_ui(build=..., **config)``: the web UI's real server (``app.server.ui_app`` under uvicorn, on a free
    local port) whose page is built only once the test sets ``release``."""
    from app.server import ui_app, ui_context, ui_policy
    from tests.api_server import serve_app
    from tests.helpers import studio_services

    numbers = itertools.count()
    with contextlib.ExitStack() as running:

        def start(build: Callable[[], object] = reverse_blocks, **settings) -> RunningUi:
            services = studio_services(tmp_path / f"studio{next(numbers)}", **settings)
            config = services.config
            context = ui_context(services)
            release, failed, failures, ready = threading.Event(), threading.Event(), [], []

            def held_build():
                release.wait()
                return build()

            def on_failure(error: BaseException) -> None:
                failures.append(error)
                failed.set()

            app = ui_app(services, config, context, ui_policy(context), build=held_build, on_ready=ready.append,
                         on_failure=on_failure)
            server = running.enter_context(serve_app(app, lifespan="on"))
            return RunningUi(server.url, app, release, failures, failed, ready)

        yield start


def test_the_port_answers_starting_then_serves_the_studio_on_the_same_app(running_ui):
    ui = running_ui(api=True)

    page = httpx.get(ui.url + "/", headers=HTML)
    assert page.status_code == 503 and page.headers["Retry-After"] == "1"
    assert STARTING_MARK in page.text and "Sfumato is starting" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    gradio_route = httpx.get(ui.url + "/config")  # a script, not a browser: JSON
    assert gradio_route.status_code == 503 and gradio_route.json()["starting"] is True
    # the API answers while the page is being built, and keeps its own answers for what it does not have
    assert httpx.get(ui.url + "/sdapi/v1/samplers").status_code == 200
    unknown = httpx.get(ui.url + "/sdapi/v1/no-such-route")
    assert unknown.status_code == 404 and STARTING_MARK not in unknown.text
    wrong_method = httpx.delete(ui.url + "/sdapi/v1/samplers")
    assert wrong_method.status_code == 405 and "GET" in wrong_method.headers["Allow"]
    assert ui.app.state.sfumato_ui.wait_served(0) is False and ui.ready == []

    ui.release.set()
    assert ui.app.state.sfumato_ui.wait_served(120)
    assert len(ui.ready) == 1 and ui.failures == []
    page = httpx.get(ui.url + "/", headers=HTML)
    assert page.status_code == 200 and STARTING_MARK not in page.text and "gradio" in page.text.lower()
    config = httpx.get(ui.url + "/config")
    assert config.status_code == 200 and any(
        dependency.get("api_name") == "reverse" for dependency in config.json()["dependencies"])
    assert call_event(ui.url, "reverse", ["abc"]) == ["cba"]  # Gradio's queue runs on the mounted app
    # the API's paths still never reach Gradio; its description lists the API only
    assert httpx.get(ui.url + "/sdapi/v1/samplers").status_code == 200
    assert httpx.get(ui.url + "/sdapi/v1/no-such-route").json() != httpx.get(ui.url + "/no-such-page").json()
    assert httpx.delete(ui.url + "/sdapi/v1/samplers").status_code == 405
    paths = httpx.get(ui.url + "/openapi.json").json()["paths"]
    assert paths and all(path.startswith(("/sdapi/", "/api/v1/", "/v1/", "/v2beta/", "/controlnet/"))
                         for path in paths)


def test_without_the_api_flag_no_api_route_is_served_before_or_after(running_ui):
    ui = running_ui()
    assert httpx.get(ui.url + "/sdapi/v1/samplers").status_code == 503  # nothing but the page, still starting
    ui.release.set()
    assert ui.app.state.sfumato_ui.wait_served(120)
    assert httpx.get(ui.url + "/sdapi/v1/samplers").status_code == 404
    assert httpx.get(ui.url + "/", headers=HTML).status_code == 200


def test_the_api_login_guards_the_starting_page_as_it_guards_the_studio(running_ui):
    ui = running_ui(listen=True, api=True, api_auth=(("carol", "pw"),))
    login = {"Authorization": "Basic " + base64.b64encode(b"carol:pw").decode()}
    refused = httpx.get(ui.url + "/", headers=HTML)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    assert httpx.get(ui.url + "/", headers={**HTML, **login}).status_code == 503
    ui.release.set()
    assert ui.app.state.sfumato_ui.wait_served(120)
    assert httpx.get(ui.url + "/", headers=HTML).status_code == 401
    assert httpx.get(ui.url + "/", headers={**HTML, **login}).status_code == 200


def test_a_page_that_cannot_be_built_is_reported_and_the_api_keeps_answering(running_ui):
    def broken():
        raise RuntimeError("no such component")

    ui = running_ui(build=broken, api=True)
    ui.release.set()
    assert ui.failed.wait(120)
    assert [str(error) for error in ui.failures] == ["no such component"] and ui.ready == []
    assert httpx.get(ui.url + "/sdapi/v1/samplers").status_code == 200
    assert httpx.get(ui.url + "/", headers=HTML).status_code == 503


def test_the_page_and_its_config_travel_gzipped_and_the_event_stream_does_not(running_ui):
    """The studio's page and config are ~1 MB of text: a visitor through a share link gets them compressed."""
    ui = running_ui(api=True)
    ui.release.set()
    assert ui.app.state.sfumato_ui.wait_served(120)
    for path, headers in (("/", HTML), ("/config", {}), ("/openapi.json", {})):
        plain = httpx.get(ui.url + path, headers={**headers, "Accept-Encoding": "identity"})
        packed = httpx.get(ui.url + path, headers={**headers, "Accept-Encoding": "gzip"})
        assert plain.status_code == packed.status_code == 200, path
        assert "content-encoding" not in plain.headers, path
        assert packed.headers["content-encoding"] == "gzip", path
        assert int(packed.headers["content-length"]) < len(plain.content) / 2, path
        assert packed.content == plain.content, path  # httpx decodes: the same bytes arrive
    submitted = httpx.post(f"{ui.url}/gradio_api/call/reverse", json={"data": ["abc"]})
    stream = f"{ui.url}/gradio_api/call/reverse/{submitted.json()['event_id']}"
    with httpx.stream("GET", stream, headers={"Accept-Encoding": "gzip"}, timeout=120) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in events.headers  # compressed, its messages would wait in the buffer
        assert '["cba"]' in events.read().decode()


def call_event(url: str, api_name: str, data: list) -> list:
    """Gradio's two-step HTTP call: submit, then read the event stream to its ``complete`` message."""
    submitted = httpx.post(f"{url}/gradio_api/call/{api_name}", json={"data": data}, timeout=30)
    assert submitted.status_code == 200, submitted.text
    event_id = submitted.json()["event_id"]
    with httpx.stream("GET", f"{url}/gradio_api/call/{api_name}/{event_id}", timeout=120) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event in ("complete", "error"):
                assert event == "complete", line
                return json.loads(line.removeprefix("data: "))
    raise AssertionError("the event stream ended without a result")


# -- the real launch ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_launch_answers_starting_or_the_studio_then_generates_through_the_ui(tmp_path, tiny_model_store):
    server = ServerProcess(["--models-dir", str(tiny_model_store), "--data-dir", str(tmp_path / "data"),
                            "--outdir", str(tmp_path / "out"), "--ckpt", "tiny-sd1", "--threads", "1", "--api"],
                           tmp_path / "log.txt")
    try:
        server.start()
        first = first_answer(server)
        assert (first.status_code == 503 and STARTING_MARK in first.text) or (
            first.status_code == 200 and "gradio" in first.text.lower()), (first.status_code, first.text[:300])
        server.wait_ready("/", printed="* Web UI ready")
        assert httpx.get(server.url + "/sdapi/v1/samplers").status_code == 200
        config = httpx.get(server.url + "/config").json()
        data = page_inputs(config, "txt2img_generate", {"Prompt": "a red circle", "Sampling steps": 2,
                                                         "Width": 64, "Height": 64, "Seed": 5})
        outputs = call_event(server.url, "txt2img_generate", data)
        assert any("Seed: 5," in str(item) for item in outputs), outputs
        assert list((tmp_path / "out").rglob("*.png"))  # the studio saved what it generated
    finally:
        server.stop()


def page_inputs(config: dict, api_name: str, by_label: dict[str, object]) -> list:
    """The inputs a browser sends for the event ``api_name``: each component's value from the page's config, with
    those whose label is in ``by_label`` set as a user would set them."""
    components = {component["id"]: component.get("props", {}) for component in config["components"]}
    dependency = next(dependency for dependency in config["dependencies"] if dependency.get("api_name") == api_name)
    labels = [components[index].get("label") for index in dependency["inputs"]]
    assert set(by_label) <= set(labels), sorted(str(label) for label in labels)
    return [by_label.get(components[index].get("label"), components[index].get("value"))
            for index in dependency["inputs"]]


def first_answer(server: ServerProcess) -> httpx.Response:
    """The first HTTP answer the page's address gives, whatever its status (the process must not exit first)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.output()}")
        try:
            return httpx.get(server.url + "/", headers=HTML, timeout=30)
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"no answer within {START_TIMEOUT} s:\n{server.output()}")
