"""Who may call the API: Basic auth, API keys with tiers, rate limits, job and image quotas, Origin/Host checks.

The subject is the access layer, not the model: the routes here are tiny test routes on a real ``JobQueue``
whose runner returns blank images, so a quota test does not wait for diffusion.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from app.api import create_api
from app.api.access import AccessConfigError, install_access
from app.api.context import ApiContext, get_owner
from app.api.errors import install_error_handlers
from app.api.keys import DEFAULT_REQUESTS_PER_MINUTE
from app.api.ratelimit import RateLimiter, month_key
from modules.image.request import GenerationRequest
from modules.image.results import GeneratedImage, GenerationResult
from modules.runtime.config import AppConfig
from tests.helpers import studio_services

ALICE_KEY = "sk-alice-0123456789abcdef"
BOB_KEY = "sk-bob-fedcba9876543210"
LOCAL = "http://localhost:7860"


def blank_images(request: GenerationRequest, control) -> GenerationResult:
    image = GeneratedImage(Image.new("RGB", (8, 8)), seed=1, subseed=1, prompt=request.prompt,
                           negative_prompt="", infotext="")
    return GenerationResult(images=[image] * request.batch_size, grid=None)


def access_test_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/sdapi/v1/whoami")
    def whoami(request: Request) -> dict:
        return {"owner": get_owner(request)}

    @router.post("/sdapi/v1/txt2img")
    def submit(request: Request, body: dict) -> dict:
        generation = GenerationRequest(prompt=body.get("prompt", ""), batch_size=body.get("batch_size", 1))
        job = request.app.state.queue.submit(generation, source="a1111", owner=get_owner(request))
        return {"id": job.id}

    @router.websocket("/api/v1/ws")
    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"hello": True})
        await websocket.close()

    return router



def write_keys(tmp_path, tiers: dict, keys: list[dict] | None = None):
    keys = keys if keys is not None else [{"name": "alice", "tier": "small", "key": ALICE_KEY},
                                          {"name": "bob", "tier": "small", "key": BOB_KEY}]
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"tiers": tiers, "keys": keys}))
    return path


def make_app(tmp_path, *, start: bool = False, **settings) -> FastAPI:
    """An app with only the access layer and the test routes, over a real (possibly unstarted) queue."""
    services = studio_services(tmp_path, blank_images, data_dir=tmp_path)
    queue = services.queue
    if start:
        queue.start()
    context = ApiContext(services=services, usage_file=tmp_path / "api-usage.json", **settings)
    app = FastAPI()
    app.state.sfumato = context
    app.state.queue = queue
    install_error_handlers(app)
    install_access(app, context)
    app.include_router(access_test_routes())
    return app


@pytest.fixture
def stop_queues():
    apps: list[FastAPI] = []
    yield apps
    for app in apps:
        app.state.queue.stop()


def client(app: FastAPI, base_url: str = LOCAL) -> TestClient:
    return TestClient(app, base_url=base_url)


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# -- authentication ------------------------------------------------------------------------------------------------
def test_basic_auth_refuses_without_or_with_wrong_credentials_and_admits_the_right_ones(tmp_path):
    api = client(make_app(tmp_path, api_auth=(("alice", "s3cret:with-colon"),)))

    missing = api.get("/sdapi/v1/whoami")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Basic")
    assert missing.json()["error"] == "Unauthorized" and "credentials" in missing.json()["detail"]
    assert api.get("/sdapi/v1/whoami", headers=basic("alice", "wrong")).status_code == 401
    assert api.get("/sdapi/v1/whoami", headers={"Authorization": "Basic !!!"}).status_code == 401

    ok = api.get("/sdapi/v1/whoami", headers=basic("alice", "s3cret:with-colon"))
    assert ok.status_code == 200
    assert ok.json() == {"owner": "user:alice"}
    assert ok.headers["X-RateLimit-Limit"] == str(DEFAULT_REQUESTS_PER_MINUTE)  # Basic users get the default tier
    # every API path is guarded, even one no route answers; the docs stay open
    assert api.get("/v1/models").status_code == 401
    assert api.get("/v2beta/anything").status_code == 401


def test_bearer_and_x_api_key_admit_a_known_key_and_an_unknown_key_is_refused(tmp_path):
    tiers = {"small": {"requests_per_minute": 50}}
    bob_hashed = {"name": "bob", "tier": "small", "sha256": hashlib.sha256(BOB_KEY.encode()).hexdigest()}
    keys = write_keys(tmp_path, tiers, [{"name": "alice", "tier": "small", "key": ALICE_KEY}, bob_hashed])
    api = client(make_app(tmp_path, keys_file=keys))

    assert api.get("/sdapi/v1/whoami", headers=bearer(ALICE_KEY)).json() == {"owner": "key:alice"}
    assert api.get("/sdapi/v1/whoami", headers={"x-api-key": BOB_KEY}).json() == {"owner": "key:bob"}
    unknown = api.get("/sdapi/v1/whoami", headers=bearer("sk-nobody-0000000000000"))
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == "unknown API key"
    assert unknown.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.get("/sdapi/v1/whoami").status_code == 401
    assert api.get("/sdapi/v1/whoami", headers=basic("alice", ALICE_KEY)).status_code == 401  # Basic not enabled


def test_both_kinds_of_credentials_may_be_offered_at_once(tmp_path):
    keys = write_keys(tmp_path, {"small": {}})
    api = client(make_app(tmp_path, keys_file=keys, api_auth=(("carol", "pw"),)))

    refused = api.get("/sdapi/v1/whoami")
    assert sorted(refused.headers.get_list("WWW-Authenticate")) == ['Basic realm="Sfumato API"',
                                                                      'Bearer realm="Sfumato API"']
    assert api.get("/sdapi/v1/whoami", headers=basic("carol", "pw")).json() == {"owner": "user:carol"}
    assert api.get("/sdapi/v1/whoami", headers=bearer(ALICE_KEY)).json() == {"owner": "key:alice"}


def test_without_credentials_localhost_is_open_and_a_clients_dummy_key_is_ignored(tmp_path):
    api = client(make_app(tmp_path))
    answer = api.get("/sdapi/v1/whoami", headers=bearer("sk-whatever-the-openai-client-sends"))
    assert answer.status_code == 200
    assert answer.json() == {"owner": None}
    assert answer.headers["X-RateLimit-Limit"] == str(DEFAULT_REQUESTS_PER_MINUTE)


def test_exposed_without_credentials_is_refused_before_serving(tmp_path):
    from app.server import check_api

    services = studio_services(tmp_path, blank_images, listen=True)
    with pytest.raises(AccessConfigError, match="--api-auth"):
        create_api(services)
    with pytest.raises(SystemExit, match="without credentials"):
        check_api(AppConfig(api=True, share=True, gradio_auth=(("u", "p"),)))
    check_api(AppConfig(api=True, listen=True, api_auth=(("u", "p"),)))  # credentials: fine

    exposed = TestClient(create_api(studio_services(tmp_path, blank_images, listen=True, api_auth=(("u", "p"),))),
                         base_url="http://studio.lan:7860")
    assert exposed.get("/sdapi/v1/samplers").status_code == 401  # any Host, but credentials needed
    assert exposed.get("/docs").status_code == 200
    assert exposed.get("/openapi.json").status_code == 200


def test_a_broken_keys_file_stops_the_start_with_the_entry_named(tmp_path):
    unknown_tier = write_keys(tmp_path, {"small": {}}, [{"name": "dave", "tier": "gold", "key": ALICE_KEY}])
    with pytest.raises(AccessConfigError, match="key 'dave': unknown tier 'gold'"):
        make_app(tmp_path, keys_file=unknown_tier)
    short = write_keys(tmp_path, {"small": {}}, [{"name": "eve", "tier": "small", "key": "short"}])
    with pytest.raises(AccessConfigError, match="at least 16"):
        make_app(tmp_path, keys_file=short)
    bad_limit = write_keys(tmp_path, {"small": {"concurrent_jobs": "two"}})
    with pytest.raises(AccessConfigError, match="concurrent_jobs"):
        make_app(tmp_path, keys_file=bad_limit)
    with pytest.raises(AccessConfigError, match="cannot read"):
        make_app(tmp_path, keys_file=tmp_path / "missing.json")


# -- rate limits and quotas ----------------------------------------------------------------------------------------
def test_rate_limit_headers_count_down_then_429_with_retry_after_and_the_window_starts_over(tmp_path):
    keys = write_keys(tmp_path, {"small": {"requests_per_minute": 3}})
    app = make_app(tmp_path, keys_file=keys)
    now = [1000.0]
    app.state.sfumato_access.limiter = RateLimiter(clock=lambda: now[0])
    api = client(app)

    answers = [api.get("/sdapi/v1/whoami", headers=bearer(ALICE_KEY)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0"]
    assert {a.headers["X-RateLimit-Limit"] for a in answers} == {"3"}
    assert answers[0].headers["X-RateLimit-Reset"] == "60"

    now[0] += 20
    over = api.get("/sdapi/v1/whoami", headers=bearer(ALICE_KEY))
    assert over.status_code == 429
    assert over.headers["Retry-After"] == "40" == over.headers["X-RateLimit-Reset"]
    assert over.headers["X-RateLimit-Remaining"] == "0"
    assert over.json()["error"] == "TooManyRequests" and "3 requests" in over.json()["detail"]
    # another key has its own window; an error answer from a route still carries the headers
    missing = api.get("/sdapi/v1/no-such-route", headers=bearer(BOB_KEY))
    assert missing.status_code == 404 and missing.headers["X-RateLimit-Remaining"] == "2"

    now[0] += 40
    again = api.get("/sdapi/v1/whoami", headers=bearer(ALICE_KEY))
    assert again.status_code == 200 and again.headers["X-RateLimit-Remaining"] == "2"


def test_concurrent_job_limit_counts_the_keys_queued_and_running_jobs(tmp_path):
    keys = write_keys(tmp_path, {"small": {"concurrent_jobs": 2}})
    app = make_app(tmp_path, keys_file=keys)  # the worker is not started: submitted jobs stay queued
    api = client(app)

    first = api.post("/sdapi/v1/txt2img", json={"prompt": "a"}, headers=bearer(ALICE_KEY))
    assert first.status_code == 200
    assert api.post("/sdapi/v1/txt2img", json={"prompt": "b"}, headers=bearer(ALICE_KEY)).status_code == 200
    refused = api.post("/sdapi/v1/txt2img", json={"prompt": "c"}, headers=bearer(ALICE_KEY))
    assert refused.status_code == 429
    assert "2 job(s) queued or running" in refused.json()["detail"]
    assert refused.headers["X-RateLimit-Remaining"] == str(DEFAULT_REQUESTS_PER_MINUTE - 3)
    assert [job.owner for job in app.state.queue.jobs()] == ["key:alice", "key:alice"]

    assert api.get("/sdapi/v1/whoami", headers=bearer(ALICE_KEY)).status_code == 200  # reading is not limited
    assert api.post("/sdapi/v1/txt2img", json={}, headers=bearer(BOB_KEY)).status_code == 200  # bob's own count
    app.state.queue.cancel(first.json()["id"])
    assert api.post("/sdapi/v1/txt2img", json={"prompt": "c"}, headers=bearer(ALICE_KEY)).status_code == 200


def test_monthly_image_quota_counts_generated_images_and_survives_a_restart(tmp_path, stop_queues):
    keys = write_keys(tmp_path, {"small": {"monthly_images": 3}})
    app = make_app(tmp_path, keys_file=keys, start=True)
    stop_queues.append(app)
    api = client(app)

    def generate(key: str, batch_size: int):
        answer = api.post("/sdapi/v1/txt2img", json={"batch_size": batch_size}, headers=bearer(key))
        if answer.status_code == 200:
            assert app.state.queue.get(answer.json()["id"]).done_event.wait(10)
        return answer

    assert generate(ALICE_KEY, 2).status_code == 200
    assert generate(ALICE_KEY, 1).status_code == 200
    over = generate(ALICE_KEY, 1)
    assert over.status_code == 429
    assert "3 images" in over.json()["detail"] and int(over.headers["Retry-After"]) > 0
    assert generate(BOB_KEY, 1).status_code == 200
    saved = json.loads((tmp_path / "api-usage.json").read_text())
    assert saved == {month_key(): {"key:alice": 3, "key:bob": 1}}

    restarted = make_app(tmp_path, keys_file=keys, start=True)
    stop_queues.append(restarted)
    assert client(restarted).post("/sdapi/v1/txt2img", json={}, headers=bearer(ALICE_KEY)).status_code == 429
    assert client(restarted).post("/sdapi/v1/txt2img", json={}, headers=bearer(BOB_KEY)).status_code == 200


def test_queued_images_count_against_the_quota_before_they_are_made(tmp_path):
    keys = write_keys(tmp_path, {"small": {"monthly_images": 4}})
    api = client(make_app(tmp_path, keys_file=keys))  # unstarted: nothing finishes
    assert api.post("/sdapi/v1/txt2img", json={"batch_size": 4}, headers=bearer(ALICE_KEY)).status_code == 200
    refused = api.post("/sdapi/v1/txt2img", json={"batch_size": 1}, headers=bearer(ALICE_KEY))
    assert refused.status_code == 429 and "4 of them still being made" in refused.json()["detail"]


# -- where a request comes from -------------------------------------------------------------------------------------
def test_a_page_on_another_origin_cannot_post_but_same_origin_and_scripts_can(tmp_path):
    api = client(make_app(tmp_path))

    evil = api.post("/sdapi/v1/txt2img", json={}, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    assert evil.json()["error"] == "Forbidden" and "--cors-allow-origins" in evil.json()["detail"]
    assert api.post("/sdapi/v1/txt2img", json={}, headers={"Origin": "null"}).status_code == 403
    assert api.post("/sdapi/v1/txt2img", json={}, headers={"Origin": "http://localhost:9999"}).status_code == 403
    assert api.post("/sdapi/v1/txt2img", json={}, headers={"Origin": LOCAL}).status_code == 200
    assert api.post("/sdapi/v1/txt2img", json={}).status_code == 200  # curl, webuiapi: no Origin
    assert api.get("/sdapi/v1/whoami", headers={"Origin": "http://evil.example"}).status_code == 200
    assert "Access-Control-Allow-Origin" not in api.get("/sdapi/v1/whoami",
                                                        headers={"Origin": "http://evil.example"}).headers


def test_an_allowed_origin_may_post_and_read_the_answer(tmp_path):
    api = client(make_app(tmp_path, allowed_origins=("https://app.example",)))
    origin = {"Origin": "https://app.example"}

    posted = api.post("/sdapi/v1/txt2img", json={}, headers=origin)
    assert posted.status_code == 200
    assert posted.headers["Access-Control-Allow-Origin"] == "https://app.example"
    preflight = api.options("/sdapi/v1/txt2img", headers={**origin, "Access-Control-Request-Method": "POST",
                                                          "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Headers"] == "content-type"
    refused = api.options("/sdapi/v1/txt2img", headers={"Origin": "https://other.example",
                                                        "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 403
    assert api.post("/sdapi/v1/txt2img", json={}, headers={"Origin": "https://other.example"}).status_code == 403


def test_bound_to_localhost_a_foreign_host_header_is_refused(tmp_path):
    rebinding = client(make_app(tmp_path), base_url="http://attacker.example:7860")
    refused = rebinding.get("/sdapi/v1/whoami")
    assert refused.status_code == 403 and "localhost" in refused.json()["detail"]
    # a same-origin POST from the rebound page: the Origin matches the Host, the Host check still refuses
    assert rebinding.post("/sdapi/v1/txt2img", json={},
                          headers={"Origin": "http://attacker.example:7860"}).status_code == 403
    for base in ("http://127.0.0.1:7860", "http://[::1]:7860", "http://localhost"):
        assert client(make_app(tmp_path), base_url=base).get("/sdapi/v1/whoami").status_code == 200


def test_websockets_need_the_same_origin_and_credentials(tmp_path):
    api = client(make_app(tmp_path, api_auth=(("alice", "pw"),)))
    url = "ws://localhost:7860/api/v1/ws"
    with api.websocket_connect(url, headers=basic("alice", "pw")) as socket:
        assert socket.receive_json() == {"hello": True}
    with pytest.raises(WebSocketDisconnect) as anonymous, api.websocket_connect(url):
        pass
    assert anonymous.value.code == 1008 and "credentials" in anonymous.value.reason
    with pytest.raises(WebSocketDisconnect) as hijack, api.websocket_connect(
            url, headers={**basic("alice", "pw"), "Origin": "http://evil.example"}):
        pass
    assert "cross-origin" in hijack.value.reason


def test_refusals_come_in_the_error_shape_of_the_callers_dialect(tmp_path):
    # the OpenAI and Stability clients parse their own error JSON; a 401 must read as theirs, not A1111's
    api = client(make_app(tmp_path, api_auth=(("alice", "pw"),)))
    openai_style = api.get("/v1/models").json()
    assert openai_style["error"]["type"] == "authentication_error" and "credentials" in openai_style["error"]["message"]
    stability_style = api.get("/v2beta/anything").json()
    assert stability_style["name"] == "unauthorized" and "credentials" in stability_style["errors"][0]
    assert api.get("/sdapi/v1/whoami").json()["error"] == "Unauthorized"


def test_parallel_submissions_cannot_race_past_the_job_limit(tmp_path, monkeypatch):
    # Requests from one key at once can all pass the middleware's early check (here: it is switched off, as if
    # all six raced through it together); the queue's admission check, made atomically with the submission,
    # still lets only the allowed number in.
    from concurrent.futures import ThreadPoolExecutor

    from app.api import access

    keys = write_keys(tmp_path, {"small": {"concurrent_jobs": 1, "monthly_images": 100}})
    app = make_app(tmp_path, keys_file=keys)  # not started: every admitted job stays queued
    api = client(app)
    monkeypatch.setattr(access, "_submits_generation", lambda conn: False)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: api.post("/sdapi/v1/txt2img", json={"prompt": str(i)},
                                                   headers=bearer(ALICE_KEY)), range(6)))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200, 429, 429, 429, 429, 429]
    assert len(app.state.queue.jobs()) == 1


def test_admission_refuses_a_job_that_would_overrun_the_monthly_quota(tmp_path, monkeypatch):
    from app.api import access

    monkeypatch.setattr(access, "_submits_generation", lambda conn: False)  # only the admission check decides
    keys = write_keys(tmp_path, {"small": {"monthly_images": 3}})
    app = make_app(tmp_path, keys_file=keys)
    api = client(app)
    assert api.post("/sdapi/v1/txt2img", json={"batch_size": 2}, headers=bearer(ALICE_KEY)).status_code == 200
    too_many = api.post("/sdapi/v1/txt2img", json={"batch_size": 2}, headers=bearer(ALICE_KEY))
    assert too_many.status_code == 429 and "3 images" in too_many.json()["detail"]
    assert api.post("/sdapi/v1/txt2img", json={"batch_size": 1}, headers=bearer(ALICE_KEY)).status_code == 200


def test_extension_routes_pass_the_same_access_rules(tmp_path):
    app = make_app(tmp_path, api_auth=(("alice", "pw"),))
    router = APIRouter()

    @router.post("/extensions/demo/do")
    def do() -> dict:
        return {"done": True}

    app.include_router(router)
    api = client(app)
    assert api.post("/extensions/demo/do").status_code == 401
    foreign = api.post("/extensions/demo/do", headers={**basic("alice", "pw"), "Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert api.post("/extensions/demo/do", headers=basic("alice", "pw")).json() == {"done": True}


def test_a_refused_login_still_carries_the_rate_limit_headers(tmp_path):
    api = client(make_app(tmp_path, api_auth=(("alice", "pw"),)))
    first = api.get("/sdapi/v1/whoami", headers=basic("alice", "wrong"))
    second = api.get("/sdapi/v1/whoami", headers=basic("alice", "wrong"))
    assert first.status_code == second.status_code == 401
    assert int(second.headers["X-RateLimit-Remaining"]) == int(first.headers["X-RateLimit-Remaining"]) - 1
    assert "X-RateLimit-Limit" in first.headers and "X-RateLimit-Reset" in first.headers
