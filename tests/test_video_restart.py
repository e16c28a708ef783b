"""A killed server loses no video work: two video jobs queued through the native API, the server SIGKILLed while
the first one denoises, restarted, and both end done with a decodable MP4 of the asked shape, and no stray file
of the killed attempt left in the outputs."""

from __future__ import annotations

import time

import httpx
import pytest
from server_process import ServerProcess

from modules.video.encode import probe, read_video_parameters

STEPS = 20  # long enough that the kill lands while the clip is being denoised
FRAMES = 4


def server_args(tmp_path, models) -> list[str]:
    return ["--nowebui", "--models-dir", str(models), "--data-dir", str(tmp_path / "data"),
            "--outdir", str(tmp_path / "out"), "--ckpt", "tiny-sd1", "--threads", "1"]


def submit(api: httpx.Client, seed: int) -> str:
    answer = api.post("/api/v1/jobs", json={"kind": "video", "prompt": f"a red circle {seed}", "frames": FRAMES,
                                            "fps": 6, "steps": STEPS, "seed": seed})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def wait_for(api: httpx.Client, job_id: str, states: tuple[str, ...], timeout: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = api.get(f"/api/v1/jobs/{job_id}").json()
        if view["state"] in states and (view["state"] != "running" or view["progress"]["step"] >= 1):
            return view
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {states}")


@pytest.mark.slow
def test_video_jobs_survive_a_sigkill_mid_clip_and_finish_after_restart(tmp_path, video_model_store):
    first = ServerProcess(server_args(tmp_path, video_model_store), tmp_path / "first.log")
    try:
        first.start().wait_ready("/docs")
        with httpx.Client(base_url=first.url, timeout=60) as api:
            ids = [submit(api, seed) for seed in (1, 2)]
            running = wait_for(api, ids[0], ("running",))
            first.kill()
        assert running["progress"]["step"] < STEPS, "the clip was finished before the kill"
    finally:
        first.stop()
    assert not list((tmp_path / "out").rglob("*.mp4")), "a video was written before the kill"

    second = ServerProcess(server_args(tmp_path, video_model_store), tmp_path / "second.log")
    try:
        second.start().wait_ready("/docs")
        with httpx.Client(base_url=second.url, timeout=60) as api:
            for job_id, seed in zip(ids, (1, 2), strict=True):
                view = wait_for(api, job_id, ("done", "failed", "cancelled"))
                assert view["state"] == "done" and view["kind"] == "video", (view.get("error"),
                                                                             second.output()[-3000:])
                clip = tmp_path / f"{seed}.mp4"
                clip.write_bytes(api.get(view["result"]["artifacts"][0]["url"]).content)
                info = probe(clip)
                assert (info.frames, info.width, info.height, info.fps) == (FRAMES, 64, 64, 6.0)
                assert read_video_parameters(clip)["Seed"] == seed
        assert second.interrupt() == 0
    finally:
        second.stop()
    assert len(list((tmp_path / "out").rglob("*.mp4"))) == 2
