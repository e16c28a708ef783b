"""The API flags end to end: parsed into an ``AppConfig``, then ``launch.py`` really serving the API, alone
(``--nowebui``) or on the Gradio UI's own server (``--api``), with the access rules in front of it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from server_process import ServerProcess

import launch
from app.api.keys import DEFAULT_REQUESTS_PER_MINUTE

AUTH = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}


def config_from(argv: list[str]):
    return launch.build_config(launch.parse_args(argv))


def test_api_flags_become_the_app_config(tmp_path):
    keys = tmp_path / "keys.json"
    config = config_from(["--api", "--api-auth", "alice:pw,bob:pa:ss", "--api-keys", str(keys),
                          "--cors-allow-origins", "https://a.example, http://b.example:8080"])
    assert config.api and not config.nowebui and config.serves_api
    assert config.api_auth == (("alice", "pw"), ("bob", "pa:ss"))
    assert config.api_keys_file == keys.resolve()
    assert config.cors_allow_origins == ("https://a.example", "http://b.example:8080")
    plain = config_from([])
    assert not plain.serves_api and plain.api_auth == () and plain.api_keys_file is None
    assert config_from(["--nowebui"]).serves_api


@pytest.mark.parametrize(("argv", "message"), [
    (["--api-auth", "nopassword"], "--api-auth: bad credentials"),
    (["--nowebui", "--share"], "cannot be combined with --nowebui"),
])
def test_unusable_api_flags_stop_with_the_reason(argv, message):
    with pytest.raises(SystemExit, match=message):
        config_from(argv)


def server_args(tmp_path: Path, models: Path, *extra: str) -> list[str]:
    return ["--models-dir", str(models), "--data-dir", str(tmp_path / "data"), "--outdir", str(tmp_path / "out"),
            "--ckpt", "tiny-sd1", *extra]


@pytest.fixture
def servers():
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def test_listening_without_credentials_refuses_to_start(tmp_path, tiny_model_store):
    server = ServerProcess(server_args(tmp_path, tiny_model_store, "--nowebui", "--listen"), tmp_path / "log.txt")
    code = server.start().wait_exit(timeout=300)
    assert code != 0
    assert "--api-auth" in server.output() and "--api-keys" in server.output()


@pytest.mark.slow
def test_nowebui_serves_the_api_alone_behind_its_access_rules(tmp_path, tiny_model_store, servers):
    server = ServerProcess(server_args(tmp_path, tiny_model_store, "--nowebui", "--api-auth", "alice:pw"),
                           tmp_path / "log.txt")
    servers.append(server.start())
    server.wait_ready("/docs")

    schema = httpx.get(server.url + "/openapi.json").json()
    assert schema["info"]["title"] == "Sfumato API"
    refused = httpx.get(server.url + "/sdapi/v1/samplers")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    admitted = httpx.get(server.url + "/sdapi/v1/samplers", headers=AUTH)
    assert admitted.status_code == 200 and admitted.headers["X-RateLimit-Limit"] == str(DEFAULT_REQUESTS_PER_MINUTE)
    assert httpx.get(server.url + "/").status_code == 404  # no web UI here
    assert server.interrupt() == 0  # Ctrl-C: the worker stops and the process exits cleanly


@pytest.mark.slow
def test_api_flag_serves_the_api_on_the_ui_server(tmp_path, tiny_model_store, servers):
    server = ServerProcess(server_args(tmp_path, tiny_model_store, "--api", "--api-auth", "alice:pw"),
                           tmp_path / "log.txt")
    servers.append(server.start())
    server.wait_ready("/docs", printed="* API on the same server")  # Gradio serves /docs before the API joins

    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "gradio" in page.text.lower()  # the UI, unaffected and open
    assert httpx.get(server.url + "/config").status_code == 200
    assert "X-RateLimit-Limit" not in page.headers
    paths = json.loads(httpx.get(server.url + "/openapi.json").text)["paths"]
    assert paths and all(path.startswith(("/sdapi/", "/api/v1/", "/v1/", "/v2beta/", "/controlnet/"))
                         for path in paths), paths

    refused = httpx.get(server.url + "/sdapi/v1/samplers")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    admitted = httpx.get(server.url + "/sdapi/v1/samplers", headers=AUTH)
    assert admitted.status_code == 200 and "Euler" in {sampler["name"] for sampler in admitted.json()}
    assert admitted.headers["X-RateLimit-Remaining"] == str(DEFAULT_REQUESTS_PER_MINUTE - 1)
    cross = httpx.post(server.url + "/sdapi/v1/txt2img", json={}, headers={**AUTH, "Origin": "http://evil.example"})
    assert cross.status_code == 403 and cross.json()["error"] == "Forbidden"


def test_listen_without_a_login_refuses_to_start_the_ui(tmp_path, tiny_model_store):
    server = ServerProcess(server_args(tmp_path, tiny_model_store, "--listen"), tmp_path / "log.txt")
    assert server.start().wait_exit(timeout=300) != 0
    assert "--listen-without-auth" in server.output() and "--gradio-auth" in server.output()


@pytest.mark.slow
def test_on_the_network_the_apis_login_guards_the_ui_too(tmp_path, tiny_model_store, servers):
    server = ServerProcess(server_args(tmp_path, tiny_model_store, "--listen", "--api", "--api-auth", "alice:pw"),
                           tmp_path / "log.txt")
    servers.append(server.start())
    server.wait_ready("/docs", printed="* API on the same server")

    for path in ("/", "/config", "/gradio_api/info"):
        refused = httpx.get(server.url + path)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic"), path
        assert httpx.get(server.url + path, headers=AUTH).status_code == 200, path
    assert httpx.get(server.url + "/sdapi/v1/samplers").status_code == 401
    assert httpx.get(server.url + "/sdapi/v1/samplers", headers=AUTH).status_code == 200
    assert server.interrupt() == 0
