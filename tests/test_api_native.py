"""The native job API (``/api/v1``) over real HTTP on the tiny model: submit, poll, stream, fetch, cancel, page,
webhooks, system load, and bad input answered with the field's name while the worker keeps going."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest

from tests.api_studio import b64, load, picture, running_studio
from tests.helpers import pixels

TINY = {"width": 64, "height": 64, "steps": 3, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_store):
    with running_studio(tmp_path_factory.mktemp("native"), tiny_model_store) as running:
        yield running


@pytest.fixture
def api(studio):
    with httpx.Client(base_url=studio.url + "/api/v1", timeout=120) as client:
        yield client


def wait_ended(api: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = api.get(f"/jobs/{job_id}").json()
        if view["state"] in ("done", "failed", "cancelled") and view["finished"]:
            return view
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


def wait_preview(api: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    """Until the running job has decoded its first live preview."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = api.get(f"/jobs/{job_id}").json()
        if view["state"] == "running" and view["progress"]["has_preview"]:
            return view
        assert view["state"] in ("queued", "running"), view
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not start")


def submit(api: httpx.Client, **fields) -> dict:
    response = api.post("/jobs", json=fields)
    assert response.status_code == 202, response.text
    return response.json()


# -- the happy path ------------------------------------------------------------------------------------------------


def test_submit_answers_at_once_then_poll_fetch_images_and_history(api):
    submitted = submit(api, prompt="a red circle", seed=123, batch_size=2, **TINY)
    assert submitted["state"] in ("queued", "running") and set(submitted["urls"]) >= {"self", "events", "images"}

    view = wait_ended(api, submitted["id"])
    assert view["state"] == "done" and view["error"] is None and view["source"] == "native"
    assert view["progress"]["fraction"] == 1.0 and view["progress"]["steps"] == 3
    assert view["started"] >= view["created"] and view["finished"] >= view["started"]
    result = view["result"]
    assert result["seeds"] == [123, 124] and "Seed: 123" in result["infotexts"][0]
    assert len(result["images"]) == 2

    listing = api.get(f"/jobs/{submitted['id']}/images", params={"encoding": "base64"}).json()
    assert [item["seed"] for item in listing["images"]] == [123, 124]
    first = api.get(listing["images"][0]["url"])
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    image = load(first.content)
    assert image.size == (64, 64) and image.info["parameters"] == result["infotexts"][0]
    assert load(base64.b64decode(listing["images"][0]["image"])).size == (64, 64)
    assert api.get(f"/jobs/{submitted['id']}/images/2").status_code == 404

    again = wait_ended(api, submit(api, prompt="a red circle", seed=123, batch_size=2, **TINY)["id"])
    same_seed = load(api.get(again["result"]["images"][0]).content)
    next_seed = load(api.get(again["result"]["images"][1]).content)
    assert np.array_equal(pixels(image), pixels(same_seed))
    assert np.abs(pixels(image) - pixels(next_seed)).mean() > 1.0

    page = api.get("/jobs", params={"limit": 1, "offset": 0, "state": "done"}).json()
    assert page["total"] >= 2 and len(page["jobs"]) == 1 and page["jobs"][0]["id"] == again["id"]
    second = api.get("/jobs", params={"limit": 1, "offset": 1, "state": "done"}).json()
    assert second["jobs"][0]["id"] == submitted["id"]
    assert api.get("/jobs", params={"state": "sleeping"}).status_code == 422


def test_image_in_another_format_and_img2img_task_implied(api):
    job = wait_ended(api, submit(api, prompt="rework", init_image=b64(picture()), denoising_strength=0.5,
                                 output_format="jpeg", **TINY)["id"])
    assert job["state"] == "done" and job["result"]["parameters"]["denoising_strength"] == 0.5
    response = api.get(job["result"]["images"][0])
    assert response.headers["content-type"] == "image/jpeg" and load(response.content).format == "JPEG"
    as_png = api.get(job["result"]["images"][0], params={"format": "png"})
    assert load(as_png.content).format == "PNG"


def test_events_stream_progress_and_end_with_the_final_state(api, studio):
    job = submit(api, prompt="stream me", seed=5, **{**TINY, "steps": 60})  # long enough to be seen mid-way
    events = []
    with httpx.stream("GET", f"{studio.url}/api/v1/jobs/{job['id']}/events", timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
    # Snapshots are sampled (about ten a second), so a fast job may skip steps, but never goes backwards.
    steps = [event["progress"]["step"] for event in events if event["state"] == "running"]
    assert steps == sorted(steps) and any(0 < step < 60 for step in steps)
    assert len({json.dumps(event, sort_keys=True) for event in events}) == len(events)  # only changes are sent
    assert events[-1]["state"] == "done" and events[-1]["result"]["seeds"] == [5]
    assert events[-1]["progress"]["fraction"] == 1.0


def test_cancel_queued_and_running_jobs(api):
    running = submit(api, prompt="long", n_iter=4, **{**TINY, "steps": 150})  # far too long to end by itself
    queued = submit(api, prompt="never", **TINY)
    assert queued["position"] is not None
    wait_preview(api, running["id"])
    preview = api.get(f"/jobs/{running['id']}/preview")
    assert preview.status_code == 200 and load(preview.content).size == (64, 64)

    cancelled = api.delete(f"/jobs/{queued['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert api.post(f"/jobs/{running['id']}/cancel").status_code == 200

    ended = wait_ended(api, running["id"], timeout=60)
    assert ended["state"] == "cancelled" or ended["result"]["interrupted"]
    assert ended["progress"]["job_no"] < 3 and ended["progress"]["fraction"] < 1.0
    assert wait_ended(api, queued["id"])["started"] is None
    again = api.delete(f"/jobs/{queued['id']}")
    assert again.status_code == 409 and "already ended" in again.json()["detail"]
    assert api.get(f"/jobs/{queued['id']}/images").status_code == 409
    assert wait_ended(api, submit(api, prompt="after cancel", **TINY)["id"])["state"] == "done"


def test_unknown_job_is_404_with_a_message(api):
    for path in ("/jobs/nope", "/jobs/nope/images", "/jobs/nope/images/0", "/jobs/nope/events",
                 "/jobs/nope/preview"):
        response = api.get(path)
        assert response.status_code == 404 and "nope" in response.json()["detail"], path
    assert api.delete("/jobs/nope").status_code == 404


def test_system_load_reports_queue_running_average_and_device(api):
    wait_ended(api, submit(api, prompt="warm", **TINY)["id"])
    load_report = api.get("/system").json()
    assert load_report["queue_length"] == 0 and load_report["running"] is None
    assert load_report["average_seconds_per_job"] > 0 and load_report["device"] == "cpu"


# -- webhooks ------------------------------------------------------------------------------------------------------


class Receiver:
    """A local HTTP endpoint that records what is posted to it and fails the first ``failures`` times."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[dict] = []
        self.failures = failures
        self.got = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.calls.append(json.loads(body))
                failing = len(receiver.calls) <= receiver.failures
                self.send_response(500 if failing else 200)
                self.end_headers()
                if not failing:
                    receiver.got.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_is_called_when_the_job_ends_and_retried_after_a_failure(api):
    with Receiver(failures=1) as receiver:
        job = submit(api, prompt="call me", seed=77, webhook_url=receiver.url, **TINY)
        assert receiver.got.wait(60), receiver.calls
    assert len(receiver.calls) == 2 and receiver.calls[0] == receiver.calls[1]
    payload = receiver.calls[-1]
    assert payload["id"] == job["id"] and payload["state"] == "done" and payload["error"] is None
    assert payload["seeds"] == [77] and "Seed: 77" in payload["infotexts"][0]
    image = httpx.get(payload["images"][0], timeout=30)
    assert image.status_code == 200 and load(image.content).size == (64, 64)


def test_webhook_gives_up_after_its_tries():
    from app.api.webhooks import WebhookSender

    with Receiver(failures=10) as receiver:
        assert WebhookSender(tries=3, backoff=0.01).deliver(receiver.url, {"id": "x"}) is False
    assert len(receiver.calls) == 3


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "javascript:alert(1)", "/relative",
                                 "http://"])
def test_webhook_url_must_be_http(api, url):
    before = api.get("/jobs").json()["total"]
    response = api.post("/jobs", json={"prompt": "x", "webhook_url": url, **TINY})
    assert response.status_code == 422 and response.json()["field"] == "webhook_url"
    assert api.get("/jobs").json()["total"] == before


# -- bad input -----------------------------------------------------------------------------------------------------

CORRUPT_PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nthis is not really a png").decode()
BAD_BODIES = [
    ({"steps": "many"}, "steps"),
    ({"width": 65, "height": 64}, "width"),
    ({"width": 8192, "height": 8192}, "width"),
    ({"steps": 100000}, "steps"),
    ({"sampler_name": "Nonexistent Sampler"}, "sampler_name"),
    ({"model": "no-such-model"}, "model"),
    ({"styles": ["no-such-style"]}, "styles"),
    ({"task": "img2img", "init_image": CORRUPT_PNG}, "init_image"),
    ({"task": "img2img", "init_image": "%%% not base64 %%%"}, "init_image"),
    ({"task": "img2img"}, "init_image"),
    ({"task": "inpaint", "init_image": b64(picture()), "mask": b64(picture((32, 32)))}, "mask"),
    ({"task": "paint"}, "task"),
    ({"hires": {"upscaler": "Magic"}}, "hires.upscaler"),
    ({"outpaint": {"left": -5}, "task": "outpaint", "init_image": b64(picture())}, "outpaint.left"),
    ({"stpes": 3}, "stpes"),
    ({"seed": 2**40}, "seed"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_input_is_a_4xx_naming_the_field_and_queues_nothing(api, body, field):
    before = api.get("/jobs").json()["total"]
    response = api.post("/jobs", json={"prompt": "x", **TINY, **body})
    assert response.status_code in (413, 422), response.text
    assert response.json()["field"] == field, response.json()
    assert api.get("/jobs").json()["total"] == before


def test_malformed_json_then_a_good_request_still_runs(api):
    response = api.post("/jobs", content='{"prompt": "x", ', headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["detail"]
    assert api.post("/jobs", content="[1, 2]", headers={"content-type": "application/json"}).status_code == 422
    assert wait_ended(api, submit(api, prompt="still alive", **TINY)["id"])["state"] == "done"


def test_an_exposed_studio_refuses_webhooks_into_its_own_network():
    # SSRF: when other machines can reach the studio, a caller must not make it post to internal addresses
    from app.api.webhooks import check_webhook_url
    from modules.errors import RequestError

    for url in ("http://127.0.0.1:9000/hook", "http://169.254.169.254/latest/meta-data", "http://10.1.2.3/x",
                "http://localhost/x", "http://[::1]/x"):
        with pytest.raises(RequestError, match="internal address"):
            check_webhook_url(url, allow_private=False)
        assert check_webhook_url(url, allow_private=True) == url  # a local studio may call local automation
    assert check_webhook_url("http://8.8.8.8/hook", allow_private=False) == "http://8.8.8.8/hook"


def test_outpaint_margins_without_an_image_are_not_silently_ignored(studio):
    answer = httpx.post(f"{studio.url}/api/v1/jobs", json={"prompt": "x", "outpaint": {"left": 32}})
    assert answer.status_code == 422 and "init_image" in answer.json()["detail"]
