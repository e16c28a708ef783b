"""A killed server loses no work: jobs of two kinds (images and an upscale) queued through the native API, the
server SIGKILLed mid-job, restarted, and every job ends done with its artifacts (the interrupted one runs again,
the queued ones run after it)."""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from PIL import Image
from server_process import ServerProcess

JOBS = 4
STEPS = 40  # long enough at 64x64 that the kill lands while a job is running
FINISHED = ("done", "failed", "cancelled")


def server_args(tmp_path, models) -> list[str]:
    return ["--nowebui", "--models-dir", str(models), "--data-dir", str(tmp_path / "data"),
            "--outdir", str(tmp_path / "out"), "--ckpt", "tiny-sd1"]


def submit(api: httpx.Client, seed: int) -> str:
    answer = api.post("/api/v1/jobs", json={"prompt": f"a red circle {seed}", "steps": STEPS, "width": 64,
                                            "height": 64, "seed": seed, "sampler_name": "Euler"})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def submit_upscale(api: httpx.Client) -> str:
    picture = Image.new("RGB", (96, 64), (30, 60, 200))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    answer = api.post("/api/v1/jobs", json={
        "kind": "upscale", "images": [base64.b64encode(buffer.getvalue()).decode("ascii")], "names": ["blue.png"],
        "upscaler": "4x-TinyCompact", "scale": 4, "tile_size": 32, "tile_overlap": 8, "save_images": False})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def wait_for_running(api: httpx.Client, ids: list[str], timeout: float = 300.0) -> dict:
    """The first job seen running, polled fast so the kill lands before it ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job_id in ids:
            view = api.get(f"/api/v1/jobs/{job_id}").json()
            if view["state"] == "running":
                return view
        time.sleep(0.02)
    raise AssertionError("no job started running")


def wait_finished(api: httpx.Client, job_id: str, timeout: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = api.get(f"/api/v1/jobs/{job_id}").json()
        if view["state"] in FINISHED:
            return view
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.mark.slow
def test_image_and_upscale_jobs_survive_a_sigkill_mid_job_and_finish_after_restart(tmp_path, tiny_model_store):
    first = ServerProcess(server_args(tmp_path, tiny_model_store), tmp_path / "first.log")
    try:
        first.start().wait_ready("/docs")
        with httpx.Client(base_url=first.url, timeout=60) as api:
            ids = [submit(api, seed) for seed in range(JOBS)]
            upscale_id = submit_upscale(api)
            running = wait_for_running(api, ids)
            first.kill()
        assert running["progress"]["step"] < STEPS, "the job ended before the kill"
        seeds = dict(zip(ids, range(JOBS), strict=True))
    finally:
        first.stop()

    second = ServerProcess(server_args(tmp_path, tiny_model_store), tmp_path / "second.log")
    try:
        second.start().wait_ready("/docs")
        with httpx.Client(base_url=second.url, timeout=60) as api:
            for job_id, seed in seeds.items():
                view = wait_finished(api, job_id)
                assert view["state"] == "done", (job_id, view.get("error"), second.output()[-3000:])
                listing = api.get(f"/api/v1/jobs/{job_id}/images").json()["images"]
                assert [item["seed"] for item in listing] == [seed]
                picture = Image.open(io.BytesIO(api.get(f"/api/v1/jobs/{job_id}/images/0").content))
                assert picture.size == (64, 64)
                assert picture.getextrema() != ((0, 0), (0, 0), (0, 0))  # an image was made, not a blank
            view = wait_finished(api, upscale_id)
            assert view["state"] == "done" and view["kind"] == "upscale", (view.get("error"), second.output()[-3000:])
            [artifact] = view["result"]["artifacts"]
            upscaled = Image.open(io.BytesIO(api.get(artifact["url"]).content))
            assert upscaled.size == (384, 256) and artifact["parameters"]["source"] == "blue.png"
        assert second.interrupt() == 0
    finally:
        second.stop()
