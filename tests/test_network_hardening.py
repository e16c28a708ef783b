"""What a fuzzer and a stranger on the network found: every route behind one access layer, admin-only routes,
other keys' jobs kept private, non-finite numbers and oversized bodies refused with a 4xx, webhooks only to public
addresses, abandoned synchronous requests cancelled, crash leftovers cleaned, and the CPU thread count.

The access-layer tests run on services over empty folders whose queue runs a stand-in for the model (their subject
is HTTP, not diffusion); the Gradio tests build a one-button Blocks app through Gradio itself, so every route
Gradio registers is there.
"""

from __future__ import annotations

import ipaddress

import pytest

import launch
from app.api.webhooks import check_webhook_url, is_public_address
from modules.errors import RequestError


def config_from(argv: list[str]):
    return launch.build_config(launch.parse_args(argv))


# -- webhooks: only globally routable addresses from an exposed studio -----------------------------------------------
@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True),
    ("1.1.1.1", True),
    ("2606:4700:4700::1111", True),
    ("2002:808:808::1", True),  # 6to4 around a public IPv4 address
    ("::ffff:8.8.8.8", True),  # IPv4-mapped public address
    ("64:ff9b::808:808", True),  # NAT64 to a public address
    ("100.100.100.200", False),  # cloud metadata in 100.64.0.0/10 (carrier-grade NAT)
    ("100.64.0.1", False),
    ("169.254.169.254", False),
    ("127.0.0.1", False),
    ("10.1.2.3", False),
    ("172.16.0.1", False),
    ("192.168.1.1", False),
    ("198.18.0.1", False),  # benchmarking
    ("192.0.2.1", False),  # documentation
    ("0.0.0.0", False),
    ("255.255.255.255", False),
    ("224.0.1.1", False),  # multicast
    ("240.0.0.1", False),  # reserved
    ("::1", False),
    ("::", False),
    ("fe80::1", False),
    ("fc00::1", False),
    ("ff0e::1", False),
    ("2001:db8::1", False),  # documentation
    ("2002:a00:1::", False),  # 6to4 around 10.0.0.1
    ("2002:6464:64c8::1", False),  # 6to4 around 100.100.100.200
    ("2002:7f00:1::", False),  # 6to4 around 127.0.0.1
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ("::ffff:10.0.0.1", False),  # IPv4-mapped private
    ("::ffff:100.100.100.200", False),
    ("::ffff:127.0.0.1", False),
    ("64:ff9b::a00:1", False),  # NAT64 to 10.0.0.1
    ("64:ff9b::a9fe:a9fe", False),  # NAT64 to 169.254.169.254
    ("::a00:1", False),  # IPv4-compatible (deprecated)
    ("::808:808", False),
])
def test_webhook_addresses_from_an_exposed_studio(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:9000/hook"
    if public:
        assert check_webhook_url(url, allow_private=False) == url
    else:
        with pytest.raises(RequestError, match="internal address") as refused:
            check_webhook_url(url, allow_private=False)
        assert refused.value.field == "webhook_url"
    assert check_webhook_url(url, allow_private=True) == url  # a local studio may call local automation


# -- CPU threads -----------------------------------------------------------------------------------------------------
def topology(root, cpus: dict[int, tuple[int, int]]):
    for cpu, (package, core) in cpus.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return root


def test_physical_cores_counts_cores_not_hyperthreads_among_the_allowed_cpus(tmp_path):
    from modules.runtime.devices import physical_cores

    # two sockets, two cores each, two hyper-threads per core
    root = topology(tmp_path, {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1), 4: (0, 0), 5: (0, 1), 6: (1, 0), 7: (1, 1)})
    assert physical_cores(set(range(8)), root) == 4
    assert physical_cores({0, 4}, root) == 1  # an affinity mask of one core's two threads
    assert physical_cores({0, 2}, root) == 2  # same core id, different sockets
    assert physical_cores({9, 10}, root) == 2  # no topology: each logical CPU counts
    assert physical_cores(set(), root) == 1


def test_threads_flag_default_and_refusal():
    from modules.runtime.devices import physical_cores

    assert config_from(["--threads", "3"]).threads == 3
    assert config_from([]).threads == physical_cores() >= 1
    with pytest.raises(SystemExit, match="--threads"):
        config_from(["--threads", "0"])


def test_threads_are_applied_when_the_device_is_decided_and_shown_in_the_system_report(tmp_path):
    import torch
    from fastapi.testclient import TestClient

    from app.api import create_api
    from tests.helpers import studio_services

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        services = studio_services(tmp_path, threads=1)
        assert torch.get_num_threads() == 2  # start-up leaves torch alone (it is not even imported there)
        services.runtime.get()  # the first job, or the background detection after the server answers
        assert torch.get_num_threads() == 1
        report = TestClient(create_api(services), base_url="http://localhost").get("/api/v1/system").json()
        assert "CPU threads: 1" in report["device_report"]
    finally:
        torch.set_num_threads(before)
    untouched = studio_services(tmp_path / "again")  # no --threads (tests, embedding): torch keeps its own count
    untouched.runtime.get()
    assert f"CPU threads: {before}" in untouched.device_report


# -- non-finite numbers and out-of-range paging ------------------------------------------------------------------------
@pytest.fixture
def local_api(tmp_path):
    """The whole API over real services (a real job store, no model loaded: nothing here reaches the worker)."""
    from fastapi.testclient import TestClient

    from app.api import create_api
    from tests.helpers import studio_services

    services = studio_services(tmp_path)
    with TestClient(create_api(services), base_url="http://localhost", raise_server_exceptions=False) as client:
        yield client
    services.stop()


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/sdapi/v1/txt2img", '{"prompt": "x", "cfg_scale": NaN}', "cfg_scale"),
    ("/sdapi/v1/txt2img", '{"prompt": NaN}', "prompt"),
    ("/sdapi/v1/txt2img", '{"override_settings": {"CLIP_stop_at_last_layers": -Infinity}}',
     "override_settings.CLIP_stop_at_last_layers"),
    ("/sdapi/v1/img2img", '{"init_images": [Infinity], "denoising_strength": 0.5}', "init_images.0"),
    ("/sdapi/v1/png-info", '{"image": NaN}', "image"),
    ("/sdapi/v1/options", '{"samples_save": NaN}', "samples_save"),
    ("/api/v1/jobs", '{"prompt": "x", "steps": NaN}', "steps"),
    ("/api/v1/jobs", '{"prompt": "x", "hires": {"scale": Infinity}}', "hires.scale"),
    ("/api/v1/jobs", '{"kind": "upscale", "scale": NaN}', "scale"),
])
def test_nan_and_infinity_are_a_4xx_naming_the_field(local_api, path, body, field):
    response = local_api.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and "finite" in response.json()["detail"]


def test_nan_in_an_openai_body_is_answered_in_openai_shape(local_api):
    response = local_api.post("/v1/images/generations", content='{"prompt": "x", "n": NaN}',
                              headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"


def test_error_echo_never_fails_on_a_non_finite_input():
    from app.api.errors import json_safe

    echoed = json_safe([{"loc": ("body", "x"), "input": float("nan"), "ctx": {"limit": float("-inf")}}])
    assert echoed == [{"loc": ["body", "x"], "input": "nan", "ctx": {"limit": "-inf"}}]


def test_a_huge_history_offset_is_a_4xx_naming_offset(local_api):
    response = local_api.get("/api/v1/jobs", params={"offset": 10**30})
    assert response.status_code == 422 and response.json()["field"] == "offset"
    assert local_api.get("/api/v1/jobs", params={"offset": 10**9}).status_code == 200


# -- other keys' jobs are private; the operator's routes need the operator -----------------------------------------
ALICE_KEY = "sk-alice-0123456789abcdef"
BOB_KEY = "sk-bob-fedcba9876543210"
OPS_KEY = "sk-ops-00112233445566778899"
BOSS_KEY = "sk-boss-99887766554433221100"


def write_keys(folder, keys: list[dict] | None = None, tiers: dict | None = None):
    import json

    keys = keys if keys is not None else [
        {"name": "alice", "tier": "small", "key": ALICE_KEY},
        {"name": "bob", "tier": "small", "key": BOB_KEY},
        {"name": "ops", "tier": "small", "key": OPS_KEY, "admin": True},  # the key's own flag
        {"name": "boss", "tier": "staff", "key": BOSS_KEY},  # admin through its tier
    ]
    path = folder / "keys.json"
    path.write_text(json.dumps({"tiers": tiers or {"small": {}, "staff": {"admin": True}}, "keys": keys}))
    return path


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class HeldRunner:
    """Stands in for the model: reports a step with a live preview and a text, then holds until released (or
    interrupted), so a test can look at a running job."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, request, control):
        from PIL import Image

        from modules.image.results import GeneratedImage, GenerationResult
        from modules.jobs.control import Progress

        control.report(Progress(step=1, steps=2, preview=Image.new("RGB", (8, 8), (255, 0, 0)),
                                text=request.prompt))
        self.started.set()
        while not self.release.wait(0.02) and not control.interrupted.is_set():
            pass
        image = GeneratedImage(Image.new("RGB", (8, 8)), seed=1, subseed=1, prompt=request.prompt,
                               negative_prompt="", infotext="")
        return GenerationResult(images=[image], grid=None)


@pytest.fixture
def keyed_studio(tmp_path):
    """The whole API with API keys and a Basic login, over a queue whose runner holds each job."""
    from fastapi.testclient import TestClient

    from app.api import create_api
    from app.api.context import ApiContext
    from tests.helpers import studio_services

    runner = HeldRunner()
    services = studio_services(tmp_path, runner)
    context = ApiContext(services=services, keys_file=write_keys(tmp_path), api_auth=(("carol", "pw"),),
                         usage_file=tmp_path / "usage.json")
    services.queue.start()
    with TestClient(create_api(services, context), base_url="http://localhost") as client:
        yield client, services, runner
    runner.release.set()
    services.queue.stop()


def test_progress_and_system_show_a_caller_only_its_own_running_job(keyed_studio):
    api, services, runner = keyed_studio
    submitted = api.post("/api/v1/jobs", json={"prompt": "alice's secret prompt"}, headers=bearer(ALICE_KEY))
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert runner.started.wait(30)

    mine = api.get("/sdapi/v1/progress", headers=bearer(ALICE_KEY)).json()
    assert mine["current_task"] == job_id and mine["current_image"] and mine["textinfo"] == "alice's secret prompt"
    assert api.get("/api/v1/system", headers=bearer(ALICE_KEY)).json()["running"]["id"] == job_id

    for stranger in (bearer(BOB_KEY), bearer(OPS_KEY), basic("carol", "pw")):
        theirs = api.get("/sdapi/v1/progress", headers=stranger).json()
        assert theirs["current_task"] is None and theirs["current_image"] is None, theirs
        assert theirs["textinfo"] is None and theirs["state"]["job_count"] == 0
        assert job_id not in api.get("/sdapi/v1/progress", headers=stranger).text
        system = api.get("/api/v1/system", headers=stranger).json()
        assert system["running"] is None and job_id not in str(system)
        assert api.get(f"/api/v1/jobs/{job_id}", headers=stranger).status_code == 404
    runner.release.set()


def test_a_local_studio_without_credentials_shows_every_job(tmp_path):
    from fastapi.testclient import TestClient

    from app.api import create_api
    from tests.helpers import studio_services, txt2img

    runner = HeldRunner()
    services = studio_services(tmp_path, runner)
    services.queue.start()
    try:
        job = services.queue.submit(txt2img(prompt="from the UI"))
        assert runner.started.wait(30)
        api = TestClient(create_api(services), base_url="http://localhost")
        assert api.get("/sdapi/v1/progress").json()["current_task"] == job.id
        assert api.get("/api/v1/system").json()["running"]["id"] == job.id
        assert api.get("/sdapi/v1/cmd-flags").status_code == 200  # the local user is the operator
    finally:
        runner.release.set()
        services.queue.stop()


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/sdapi/v1/options", {"CLIP_stop_at_last_layers": 2}),
    ("GET", "/sdapi/v1/cmd-flags", None),
])
def test_operator_routes_need_an_admin_key_or_the_basic_login(keyed_studio, method, path, body):
    api, services, _ = keyed_studio
    for caller in (bearer(ALICE_KEY), {"x-api-key": BOB_KEY}):
        refused = api.request(method, path, json=body, headers=caller)
        assert refused.status_code == 403, refused.text
        assert f"{method} {path}" in refused.json()["detail"] and "admin" in refused.json()["detail"]
    for operator in (bearer(OPS_KEY), bearer(BOSS_KEY), basic("carol", "pw")):
        answer = api.request(method, path, json=body, headers=operator)
        assert answer.status_code == 200, answer.text
    if method == "POST":
        assert services.settings.get("CLIP_stop_at_last_layers") == 2
    else:
        assert answer.json()["outdir"].endswith("outputs")
    assert api.get("/sdapi/v1/options", headers=bearer(ALICE_KEY)).status_code == 200  # reading stays open


def test_the_admin_flag_must_be_a_boolean(tmp_path):
    from app.api.keys import KeysFileError, load_keys

    keys = load_keys(write_keys(tmp_path))
    assert {key.name: key.admin for key in keys.keys} == {"alice": False, "bob": False, "ops": True, "boss": True}
    with pytest.raises(KeysFileError, match="admin must be true or false"):
        load_keys(write_keys(tmp_path, [{"name": "eve", "tier": "small", "key": ALICE_KEY, "admin": "yes"}]))
    with pytest.raises(KeysFileError, match="tier 'staff': admin must be true or false"):
        load_keys(write_keys(tmp_path, tiers={"small": {}, "staff": {"admin": 1}}))


# -- the web UI on the network: a login of some kind, and one access layer for every route ---------------------------
@pytest.mark.parametrize("argv", [
    ["--listen"],
    ["--listen", "--share-without-auth"],  # opting out of a share login is not opting out of this one
])
def test_listen_without_any_login_refuses_to_start(tmp_path, argv):
    from app.server import check_ui

    with pytest.raises(SystemExit, match="--listen-without-auth") as refused:
        check_ui(config_from(argv))
    assert "--gradio-auth" in str(refused.value) and "--api-auth" in str(refused.value)
    # and from the composition root, before any model is looked at
    with pytest.raises(SystemExit, match="--listen-without-auth"):
        launch.main(["--skip-install", "--exit", "--models-dir", str(tmp_path / "none"), *argv])


@pytest.mark.parametrize("argv", [
    ["--listen", "--gradio-auth", "u:p"],
    ["--listen", "--listen-without-auth"],
    ["--listen", "--api-auth", "u:p"],  # the API's credentials guard the UI too
    ["--listen", "--api", "--api-auth", "u:p"],
    ["--listen", "--nowebui", "--api-auth", "u:p"],  # no web UI to guard
    [],
])
def test_ways_to_serve_the_ui_on_the_network(tmp_path, argv):
    from app.server import check_ui

    config = config_from(argv)
    check_ui(config)
    assert config.listen_without_auth == ("--listen-without-auth" in argv)
    assert launch.main(["--skip-install", "--exit", "--models-dir", str(tmp_path), *argv]) == 0


def tiny_blocks():
    """A one-button Blocks: every route Gradio registers is there, without building the studio's tabs."""
    import gradio as gr

    with gr.Blocks() as blocks:
        text = gr.Textbox()
        gr.Button().click(lambda value: value[::-1], text, text, api_name="reverse")
    return blocks


@pytest.fixture
def launched(tmp_path):
    """``launched(**config)``: the studio's own web UI server (``app.server.ui_app``, as ``serve_ui`` runs it) around
    a tiny Blocks, bound to 127.0.0.1 and returned once the page is served; ``listen=True`` in the config makes the
    access rules those of a studio on the network. Returns (base URL, services)."""
    import contextlib
    import dataclasses
    import itertools

    from app.server import ui_app, ui_context, ui_policy
    from tests.api_server import serve_app
    from tests.helpers import studio_services

    numbers = itertools.count()
    with contextlib.ExitStack() as running:

        def launch_with(**settings):
            services = studio_services(tmp_path / f"studio{next(numbers)}", HeldRunner(), **settings)
            context = ui_context(services)
            config = dataclasses.replace(services.config, listen=False)  # bind locally all the same
            app = ui_app(services, config, context, ui_policy(context), build=tiny_blocks)
            server = running.enter_context(serve_app(app, lifespan="on"))
            assert app.state.sfumato_ui.wait_served(120)
            return server.url, services

        yield launch_with


UI_ROUTES = ["/", "/config", "/gradio_api/info", "/theme.css", "/gradio_api/info?all_endpoints=true"]


def call_reverse(url: str, **headers: str):
    import httpx

    return httpx.post(f"{url}/gradio_api/call/reverse", json={"data": ["abc"]}, headers=headers, timeout=30)


def test_the_apis_login_guards_the_ui_and_gradios_routes_of_an_exposed_studio(launched, tmp_path):
    import httpx

    keys = write_keys(tmp_path)
    url, _ = launched(listen=True, api=True, api_auth=(("carol", "pw"),), api_keys_file=keys)

    for path in UI_ROUTES:
        refused = httpx.get(url + path, timeout=30)
        assert refused.status_code == 401, (path, refused.text)
        assert 'Basic realm="Sfumato API"' in refused.headers.get_list("WWW-Authenticate")  # a browser asks
        assert httpx.get(url + path, headers=basic("carol", "pw"), timeout=30).status_code == 200, path
        assert httpx.get(url + path, headers=bearer(OPS_KEY), timeout=30).status_code == 200, path  # admin key
        tiered = httpx.get(url + path, headers=bearer(ALICE_KEY), timeout=30)  # no way around its quotas
        assert tiered.status_code == 403 and "API routes only" in tiered.json()["detail"], path
    assert httpx.get(url + "/file=" + str(tmp_path / "keys.json"), timeout=30).status_code == 401
    assert httpx.get(url + "/gradio_api/file=" + str(tmp_path / "keys.json"), timeout=30).status_code == 401

    assert call_reverse(url).status_code == 401  # generating through Gradio's API needs the login too
    assert call_reverse(url, **bearer(BOB_KEY)).status_code == 403
    assert call_reverse(url, **basic("carol", "pw")).status_code == 200
    assert httpx.post(f"{url}/gradio_api/queue/join", json={}, timeout=30).status_code == 401
    assert httpx.post(f"{url}/gradio_api/upload", files={"files": b"x"}, timeout=30).status_code == 401

    # the API is as before: its own keys are welcome there; its description stays open
    assert httpx.get(url + "/sdapi/v1/samplers", timeout=30).status_code == 401
    assert httpx.get(url + "/sdapi/v1/samplers", headers=bearer(ALICE_KEY), timeout=30).status_code == 200
    assert httpx.get(url + "/openapi.json", timeout=30).status_code == 200
    assert httpx.get(url + "/docs", timeout=30).status_code == 200


def test_api_credentials_guard_an_exposed_ui_even_without_the_api_routes(launched):
    import httpx

    url, _ = launched(listen=True, api_auth=(("carol", "pw"),))
    assert httpx.get(url + "/", timeout=30).status_code == 401
    assert call_reverse(url).status_code == 401
    assert call_reverse(url, **basic("carol", "pw")).status_code == 200
    assert httpx.get(url + "/sdapi/v1/samplers", headers=basic("carol", "pw"), timeout=30).status_code == 404


def test_with_gradio_auth_gradios_own_login_guards_every_route_that_runs_code(launched, tmp_path):
    import httpx

    keys = write_keys(tmp_path)
    url, _ = launched(listen=True, api=True, api_keys_file=keys, gradio_auth=(("ui", "secret"),))

    assert httpx.get(url + "/", timeout=30).status_code == 200  # Gradio's login page
    for key in ({}, bearer(ALICE_KEY), bearer(OPS_KEY)):  # an API key is no Gradio login
        assert call_reverse(url, **key).status_code == 401
        assert httpx.get(url + "/config", headers=key, timeout=30).status_code == 401
        assert httpx.post(f"{url}/gradio_api/queue/join", json={}, headers=key, timeout=30).status_code == 401
        assert httpx.get(url + "/gradio_api/file=" + str(keys), headers=key, timeout=30).status_code == 401
    with httpx.Client(base_url=url, timeout=30) as browser:
        assert browser.post("/login", data={"username": "ui", "password": "secret"}).status_code == 200
        assert browser.post("/gradio_api/call/reverse", json={"data": ["abc"]}).status_code == 200
        assert browser.get("/sdapi/v1/samplers").status_code == 401  # and a UI login is no API key
    assert httpx.get(url + "/sdapi/v1/samplers", headers=bearer(ALICE_KEY), timeout=30).status_code == 200


def test_a_local_ui_is_open_to_localhost_but_not_to_a_rebound_host_or_a_foreign_page(launched):
    import httpx

    url, _ = launched(api=True, api_auth=(("carol", "pw"),))  # localhost only: the UI is open, as before
    assert httpx.get(url + "/", timeout=30).status_code == 200
    assert call_reverse(url).status_code == 200
    rebound = httpx.get(url + "/config", headers={"Host": "evil.example:7860"}, timeout=30)
    assert rebound.status_code == 403 and "localhost" in rebound.json()["detail"]  # DNS rebinding
    assert call_reverse(url, Origin="http://evil.example").status_code == 403  # a page on another site
    assert call_reverse(url, Origin=url).status_code == 200  # the UI's own page


# -- bodies over the limit ---------------------------------------------------------------------------------------------
SMALL_LIMIT = 4096


@pytest.fixture
def small_limit_api(tmp_path):
    """The whole API with a 4 KiB body limit (the subject is the limit, not its size)."""
    from fastapi.testclient import TestClient

    from app.api import create_api
    from tests.helpers import studio_services

    services = studio_services(tmp_path, HeldRunner(), max_body_bytes=SMALL_LIMIT)
    with TestClient(create_api(services), base_url="http://localhost", raise_server_exceptions=False) as client:
        yield client


def test_max_body_flag():
    assert config_from([]).max_body_bytes == 64 * 1024 * 1024
    assert config_from(["--max-body-mb", "1.5"]).max_body_bytes == 1536 * 1024
    with pytest.raises(SystemExit, match="--max-body-mb"):
        config_from(["--max-body-mb", "0"])


@pytest.mark.parametrize("path", ["/sdapi/v1/txt2img", "/sdapi/v1/png-info", "/api/v1/jobs", "/sdapi/v1/options",
                                  "/sdapi/v1/no-such-route"])
def test_a_json_body_over_the_limit_is_413_on_every_route(small_limit_api, path):
    import json

    body = json.dumps({"prompt": "x" * SMALL_LIMIT})
    declared = small_limit_api.post(path, content=body, headers={"content-type": "application/json"})
    assert declared.status_code == 413, declared.text
    assert f"{SMALL_LIMIT:,} bytes" in declared.json()["detail"] and declared.json()["error"] == "PayloadTooLarge"

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(4):
            yield body[: SMALL_LIMIT // 2].encode()

    if path.endswith("no-such-route"):
        return  # a route that never reads its body buffers none of it: only the declared length matters there
    streamed = small_limit_api.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]


def test_multipart_uploads_over_the_limit_are_413_in_the_dialects_shape(small_limit_api):
    form = small_limit_api.post("/v1/images/edits", data={"prompt": "x"}, files={"image": b"\x89PNG" * SMALL_LIMIT})
    assert form.status_code == 413 and "limit" in form.json()["error"]["message"]
    stability = small_limit_api.post("/v2beta/stable-image/edit/inpaint", data={"prompt": "x"},
                                     files={"image": b"\x89PNG" * SMALL_LIMIT})
    assert stability.status_code == 413 and "limit" in stability.json()["errors"][0]


def test_bodies_under_the_limit_are_untouched(small_limit_api):
    assert small_limit_api.post("/sdapi/v1/png-info", json={"image": ""}).json()["info"] == ""
    refused = small_limit_api.post("/api/v1/jobs", json={"prompt": "x", "steps": -1})  # 0 = the model's default
    assert refused.status_code == 422 and refused.json()["field"] == "steps"


def test_gradios_upload_route_has_the_same_limit(launched):
    import httpx

    url, _ = launched(max_body_bytes=SMALL_LIMIT)
    big = httpx.post(f"{url}/gradio_api/upload", files={"files": ("a.png", b"x" * 2 * SMALL_LIMIT)}, timeout=30)
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    small = httpx.post(f"{url}/gradio_api/upload", files={"files": ("a.png", b"x" * 100)}, timeout=30)
    assert small.status_code == 200


# -- a synchronous caller that hangs up does not keep the worker -------------------------------------------------------
def hang_up_after_posting(url: str, path: str, body: dict, services, before: int) -> None:
    """POST over a raw socket, wait until the job is queued, then close the connection without reading."""
    import json
    import socket
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        deadline = time.monotonic() + 30
        while len(services.queue.jobs()) <= before:
            assert time.monotonic() < deadline, "the request's job was never queued"
            time.sleep(0.02)


def wait_for(condition, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def served_studio(tmp_path):
    """The API over real HTTP (uvicorn) on services whose queue runs a held stand-in for the model."""
    from app.api import create_api
    from tests.api_server import serve_app
    from tests.helpers import studio_services

    runner = HeldRunner()
    services = studio_services(tmp_path, runner)
    services.queue.start()
    with serve_app(create_api(services)) as server:
        yield server.url, services, runner
    runner.release.set()
    services.queue.stop()


def test_a_queued_a1111_job_whose_client_hung_up_is_cancelled(served_studio):
    from tests.helpers import txt2img

    url, services, runner = served_studio
    blocker = services.queue.submit(txt2img(prompt="holds the worker"))
    assert runner.started.wait(30)
    hang_up_after_posting(url, "/sdapi/v1/txt2img", {"prompt": "nobody waits for me", "steps": 2}, services, 1)
    abandoned = next(job for job in services.queue.jobs() if job.id != blocker.id)
    wait_for(lambda: abandoned.state == "cancelled")
    assert abandoned.started is None  # it never took the worker
    runner.release.set()
    wait_for(lambda: blocker.state == "done")


def test_a_running_a1111_job_whose_client_hung_up_is_interrupted(served_studio):
    url, services, runner = served_studio
    hang_up_after_posting(url, "/sdapi/v1/txt2img", {"prompt": "nobody waits for me", "steps": 2}, services, 0)
    job = services.queue.jobs()[0]
    assert runner.started.wait(30)
    wait_for(job.done_event.is_set)  # the runner only returns early when interrupted
    assert job.control.interrupted.is_set() and not runner.release.is_set()


# -- hires sizes refused at submission ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("hires", "size", "field"), [
    ({"resize_x": 100_000}, (64, 64), "hires.resize_x"),
    ({"resize_y": 10**30}, (64, 64), "hires.resize_y"),
    ({"resize_x": -8}, (64, 64), "hires.resize_x"),
    ({"resize_x": 4096, "resize_y": 4096}, (0, 0), "hires.resize_x"),  # 16 MP with the model's own size
    ({"resize_x": 4096}, (512, 512), "hires.resize_x"),  # the other side follows the aspect: 4096x4096
    ({"resize_y": 3000}, (512, 1024), "hires.resize_y"),  # 1500x3000 = 4.5 MP
    ({"scale": 4.0}, (1024, 1024), "hires.scale"),
])
def test_a_hires_target_over_the_limits_is_refused_naming_the_field(hires, size, field):
    from modules.image.request import GenerationRequest, HiresFix, Limits, validate_request

    request = GenerationRequest(prompt="x", width=size[0], height=size[1], hires=HiresFix(**hires))
    with pytest.raises(RequestError) as refused:
        validate_request(request, Limits())
    assert refused.value.field == field


def test_hires_targets_within_the_limits_pass():
    from modules.image.request import GenerationRequest, HiresFix, Limits, validate_request

    for hires, size in (({"resize_x": 2048, "resize_y": 2048}, (0, 0)), ({"scale": 2.0}, (1024, 1024)),
                        ({"resize_x": 1024}, (0, 0)), ({}, (64, 64))):
        validate_request(GenerationRequest(prompt="x", width=size[0], height=size[1], hires=HiresFix(**hires)),
                         Limits())


def test_hires_resize_over_the_limits_is_a_4xx_at_submit_in_each_dialect(local_api):
    native = local_api.post("/api/v1/jobs", json={"prompt": "x", "width": 64, "height": 64,
                                                  "hires": {"resize_x": 100_000, "resize_y": 64}})
    assert native.status_code == 422 and native.json()["field"] == "hires.resize_x"
    a1111 = local_api.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "enable_hr": True,
                                                      "hr_resize_x": 8192, "hr_resize_y": 8192})
    assert a1111.status_code == 422 and a1111.json()["field"] == "hr_resize_x"
    assert local_api.get("/api/v1/jobs").json()["total"] == 0


# -- crash leftovers ---------------------------------------------------------------------------------------------------
def written(path, age: float = 3600.0, content: bytes = b"half written"):
    """A file last touched ``age`` seconds ago."""
    import os
    import time

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_start_up_removes_our_own_old_staging_files_and_nothing_else(tmp_path):
    import os
    import time

    from tests.helpers import studio_services

    services = studio_services(tmp_path)
    day = tmp_path / "outputs" / "txt2img" / "2030-01-01"
    data = tmp_path / "data"
    leftovers = [
        written(day / ".staging-4242-139812.png"),  # OutputStore's staged image
        written(day / ".staging-xyz-4242-139812.png"),  # the X/Y/Z plot's grid
        written(day / "..staging-4242-139812.png.k2j4_9zq.tmp"),  # atomic_write under the staged image
        written(data / ".settings.json.a1b2c3d4.tmp"),  # atomic_write of a settings file
    ]
    install = data / "extensions" / ".installing-q1w2e3r4"  # an extension install cut short
    written(install / "repo" / "big.bin")
    os.utime(install, (time.time() - 3600, time.time() - 3600))
    kept = [
        written(day / "00001-1-a-red-circle.png", content=b"keep"),  # a finished image
        written(day / ".staging-4242-139813.png", age=1),  # being written right now by someone
        written(day / ".staging-notes.txt"),  # not our pattern
        written(day / "photo.tmp"),
        written(data / "settings.json", content=b"{}"),
    ]
    foreign = written(tmp_path / "elsewhere" / ".staging-1-1.png")  # not under the outputs or data folders
    link = day / ".staging-7-7.png"
    link.symlink_to(foreign)

    services.start()
    try:
        assert not any(path.exists() for path in leftovers)
        assert not install.exists()
        assert all(path.exists() for path in kept)
        assert foreign.exists() and link.is_symlink()
    finally:
        services.stop()


def saving_runner(outputs, saved, hold=None, shade: int = 0):
    """Stands in for the model: saves two images through the output store (as generation does), then, with
    ``hold``, never returns, as a process killed at that moment never records the job."""

    def run(request, control):
        from PIL import Image

        from modules.image.results import GeneratedImage, GenerationResult

        images = []
        for seed in (1, 2):
            picture = Image.new("RGB", (8, 8), (seed * 100, shade, 0))
            path = outputs.save(picture, "txt2img", "a test", seed, request.prompt)
            saved.append(path)
            images.append(GeneratedImage(picture, seed, seed, request.prompt, "", "a test", path))
        if hold is not None:
            hold.wait()
            raise RuntimeError("killed")
        return GenerationResult(images=images, grid=None)

    return run


def queue_over(db, outputs, runner):
    """A persistent queue as the wiring makes it: the runner's saved files recorded in the job's manifest."""
    from modules.image.kind import image_kind
    from modules.image.request import Limits, validate_request
    from modules.jobs.kinds import KindRegistry
    from modules.jobs.queue import JobQueue
    from modules.jobs.store import JobStore
    from modules.runtime.services import recording_outputs

    kinds = KindRegistry()
    queue = JobQueue(kinds, store=JobStore(db))
    kinds.register(image_kind(recording_outputs(runner, queue, outputs), lambda r: validate_request(r, Limits())))
    return queue


def test_a_job_rerun_after_a_kill_replaces_the_images_of_its_unrecorded_first_run(tmp_path):
    import threading

    from modules.runtime.outputs import OutputStore
    from tests.helpers import txt2img

    outputs = OutputStore(tmp_path / "outputs")
    db = tmp_path / "data" / "jobs.sqlite3"
    first_run, hold = [], threading.Event()
    killed = queue_over(db, outputs, saving_runner(outputs, first_run, hold, shade=50))
    job = killed.submit(txt2img(prompt="twice"))
    killed.start()
    wait_for(lambda: len(first_run) == 2)  # both images written; the job is still "running" in the store
    first_bytes = {path.read_bytes() for path in first_run}

    second_run: list = []
    restarted = queue_over(db, outputs, saving_runner(outputs, second_run))  # the next start, same folders
    restarted.start()
    try:
        rerun = restarted.get(job.id)
        wait_for(lambda: rerun.state == "done")
        assert rerun.attempts == 1
        owned = sorted(item.path for item in rerun.result.images)
        assert owned == sorted(second_run)
        # no image left that no job owns: the folder holds the rerun's two images, none of the first run's
        assert sorted(p for p in (tmp_path / "outputs").rglob("*") if p.is_file()) == owned
        assert not first_bytes & {path.read_bytes() for path in owned}
    finally:
        restarted.stop()
        hold.set()


def test_a_rerun_leaves_a_file_that_someone_else_wrote_under_a_recorded_name(tmp_path):
    from PIL import Image

    from modules.runtime.outputs import OutputStore

    outputs = OutputStore(tmp_path / "outputs")
    manifest = tmp_path / "job" / "outputs.jsonl"
    with outputs.recording(manifest):
        ours = outputs.save(Image.new("RGB", (8, 8)), "txt2img", "x", 1, "ours")
        theirs = outputs.save(Image.new("RGB", (8, 8), (9, 9, 9)), "txt2img", "x", 2, "theirs")
    theirs.write_bytes(b"another process's image under the same name")
    with manifest.open("a") as file:
        file.write('{"path": "../outside.png", "sha')  # a line cut short by the kill
    (tmp_path / "outside.png").write_bytes(b"x")
    with outputs.recording(manifest):  # the rerun
        pass
    assert not ours.exists() and theirs.exists() and (tmp_path / "outside.png").exists()
    assert not manifest.exists()


# -- the published description says what is sent ----------------------------------------------------------------------
def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def error_ref(operation: dict, status: int) -> str:
    return operation["responses"][str(status)]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]


def test_the_schema_documents_every_error_answer_in_its_dialects_shape(local_api):
    import json

    schema = local_api.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(schema)
    for path, method, operation in operations(schema):
        shape = "OpenAIError" if path.startswith("/v1/") else "StabilityError" if path.startswith(
            "/v2beta/") else "SfumatoError"
        for status in (401, 403, 429):
            assert error_ref(operation, status) == shape, (method, path, status)
        if method == "post":
            assert error_ref(operation, 413) == shape, (method, path)
        if shape != "SfumatoError":
            assert "422" not in operation["responses"], (method, path)  # they answer bad input with 400
    paths = schema["paths"]
    assert error_ref(paths["/sdapi/v1/txt2img"]["post"], 422) == "SfumatoError"
    assert error_ref(paths["/sdapi/v1/txt2img"]["post"], 409) == "SfumatoError"
    assert error_ref(paths["/api/v1/jobs/{job_id}"]["get"], 404) == "SfumatoError"
    assert error_ref(paths["/v1/images/generations"]["post"], 400) == "OpenAIError"
    assert error_ref(paths["/v2beta/stable-image/generate/core"]["post"], 501) == "StabilityError"
    assert set(schema["components"]["schemas"]["SfumatoError"]["required"]) == {"error", "detail", "field"}


def test_the_schema_gives_the_media_types_of_images_and_the_event_stream(local_api):
    paths = local_api.get("/openapi.json").json()["paths"]
    ok = {path: paths[path]["get"]["responses"]["200"]["content"] for path in (
        "/api/v1/jobs/{job_id}/events", "/api/v1/jobs/{job_id}/preview", "/api/v1/jobs/{job_id}/images/{index}")}
    assert set(ok["/api/v1/jobs/{job_id}/events"]) == {"text/event-stream"}
    assert set(ok["/api/v1/jobs/{job_id}/preview"]) == {"image/png"}
    assert set(ok["/api/v1/jobs/{job_id}/images/{index}"]) == {"image/png", "image/jpeg", "image/webp"}
    core = paths["/v2beta/stable-image/generate/core"]["post"]["responses"]
    assert {"application/json", "image/png"} <= set(core["200"]["content"]) and "202" in core


def test_errors_sent_match_the_documented_shape(local_api):
    validation = local_api.post("/sdapi/v1/txt2img", json={"steps": "many"})
    assert validation.status_code == 422 and {"error", "detail", "field"} <= set(validation.json())
    missing = local_api.get("/api/v1/jobs/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404 and missing.json()["field"] == "job_id"


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", "/sdapi/v1/options", "GET, POST"),
    ("PUT", "/api/v1/jobs", "GET, POST"),
    ("POST", "/api/v1/jobs/abc", "DELETE, GET"),
    ("GET", "/sdapi/v1/txt2img", "POST"),
    ("DELETE", "/v1/images/generations", "POST"),
])
def test_a_405_lists_every_method_the_path_takes(local_api, method, path, allowed):
    answer = local_api.request(method, path)
    assert answer.status_code == 405 and answer.headers["Allow"] == allowed
    body = answer.json()
    assert body["error"]["message"] if path.startswith("/v1/") else body["error"] == "Error"
    for other in allowed.split(", "):  # each method it lists is one the path really takes
        assert local_api.request(other, path).status_code != 405
