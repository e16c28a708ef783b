"""Video over real HTTP on tiny models: native jobs of kind ``video`` (the MP4 downloaded as an artifact with its
media type, video-to-video from an uploaded clip, refusals naming the field) and Stability's image-to-video pair
(``{"id"}``, 202 while running, then the MP4 or JSON with base64 ``video``, errors in Stability's shape)."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
from PIL import Image

from modules.video.encode import probe, read_video_infotext, write_video
from tests.api_studio import file_bytes, picture, running_studio

AUTH = {"authorization": "Bearer sk-local"}
TINY = {"kind": "video", "frames": 4, "fps": 8, "steps": 2}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, video_model_store):
    with running_studio(tmp_path_factory.mktemp("video-api"), video_model_store) as running:
        yield running


@pytest.fixture
def api(studio):
    with httpx.Client(base_url=studio.url + "/api/v1", timeout=300) as client:
        yield client


@pytest.fixture
def stability(studio):
    with httpx.Client(base_url=studio.url + "/v2beta", timeout=300, headers=AUTH) as client:
        yield client


def wait_ended(api: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = api.get(f"/jobs/{job_id}").json()
        if view["state"] in ("done", "failed", "cancelled") and view["finished"]:
            return view
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


def saved(tmp_path, data: bytes, name: str = "clip.mp4"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_native_video_job_downloads_as_mp4_with_its_parameters(api, tmp_path):
    answer = api.post("/jobs", json={**TINY, "prompt": "a red circle moving up", "seed": 11})
    assert answer.status_code == 202, answer.text
    view = wait_ended(api, answer.json()["id"])
    assert view["state"] == "done" and view["kind"] == "video", view
    result = view["result"]
    assert result["parameters"]["Seed"] == 11 and result["parameters"]["Frames"] == 4
    artifact = result["artifacts"][0]
    assert artifact["type"] == "video" and artifact["media_type"] == "video/mp4"
    assert result["videos"] == [artifact["url"]]
    download = httpx.get(artifact["url"], timeout=60)
    assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
    clip = saved(tmp_path, download.content)
    info = probe(clip)
    assert (info.frames, info.width, info.height, info.fps) == (4, 64, 64, 8.0)
    assert "Seed: 11" in read_video_infotext(clip)


def test_video_to_video_from_an_uploaded_clip(api, tmp_path):
    source = [Image.new("RGB", (64, 64), (30 * index, 80, 160)) for index in range(5)]
    upload = tmp_path / "source.mp4"
    write_video(source, upload, "mp4", 8, "", {})
    answer = api.post("/jobs", json={"kind": "video", "prompt": "a blue square", "steps": 4, "strength": 0.5,
                                     "init_video": base64.b64encode(upload.read_bytes()).decode("ascii")})
    assert answer.status_code == 202, answer.text
    view = wait_ended(api, answer.json()["id"])
    assert view["state"] == "done", view
    clip = saved(tmp_path, httpx.get(view["result"]["artifacts"][0]["url"], timeout=60).content)
    assert probe(clip).frames == 5


@pytest.mark.parametrize(("body", "field"), [
    ({"frames": 5000}, "frames"),
    ({"width": 9000}, "width"),
    ({"output_formats": ["avi"]}, "output_format"),
    ({"model": "tiny-svd"}, "init_image"),
    ({"model": "tiny-svd", "init_image": base64.b64encode(b"not an image at all").decode("ascii")}, "init_image"),
    ({"init_video": base64.b64encode(b"garbage bytes").decode("ascii")}, "init_video"),
    ({"model": "xl-motion"}, "checkpoint"),
    ({"motion_end": 2}, "motion_end"),
    ({"motion_end": "soon"}, "motion_end"),
])
def test_bad_video_input_is_a_4xx_naming_the_field_and_the_queue_goes_on(api, body, field):
    before = api.get("/jobs").json()["total"]
    response = api.post("/jobs", json={**TINY, "prompt": "x", **body})
    assert response.status_code in (400, 413, 422), response.text
    assert response.json()["field"] == field, response.json()
    assert api.get("/jobs").json()["total"] == before


def test_stability_image_to_video_answers_an_id_then_202_then_the_mp4(stability, tmp_path):
    form = {"seed": "5", "cfg_scale": "2.5", "motion_bucket_id": "90", "steps": "2", "frames": "4"}
    answer = stability.post("/image-to-video", files={"image": ("in.png", file_bytes(picture((64, 64))), "image/png")},
                            data=form)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"id"}
    job_id = answer.json()["id"]
    deadline = time.monotonic() + 300
    seen_running = None
    while time.monotonic() < deadline:
        result = stability.get(f"/image-to-video/result/{job_id}")
        if result.status_code != 202:
            break
        seen_running = result.json()
        time.sleep(0.05)
    if seen_running is not None:
        assert seen_running == {"id": job_id, "status": "in-progress"}
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4", result.text
    assert result.headers["seed"] == "5" and result.headers["finish-reason"] == "SUCCESS"
    clip = saved(tmp_path, result.content)
    info = probe(clip)
    assert (info.frames, info.width, info.height) == (4, 64, 64)
    text = read_video_infotext(clip)
    assert "Motion bucket: 90" in text and "CFG scale: 2.5" in text and "Video family: svd" in text
    as_json = stability.get(f"/image-to-video/result/{job_id}", headers={"accept": "application/json"}).json()
    assert set(as_json) == {"video", "finish_reason", "seed"} and as_json["seed"] == 5
    assert base64.b64decode(as_json["video"]) == result.content


@pytest.mark.parametrize(("files", "data", "field"), [
    (None, {"seed": "1"}, "image"),
    ({"image": ("in.png", b"broken", "image/png")}, {}, "image"),
    ("image", {"motion_bucket_id": "300"}, "motion_bucket_id"),
    ("image", {"cfg_scale": "11"}, "cfg_scale"),
    ("image", {"seed": "-4"}, "seed"),
])
def test_stability_image_to_video_errors_name_the_field(stability, files, data, field):
    if files == "image":
        files = {"image": ("in.png", file_bytes(picture((64, 64))), "image/png")}
    response = stability.post("/image-to-video", files=files or {"none": ("", b"")}, data=data)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["name"] == "bad_request" and body["errors"][0].startswith(f"{field}:"), body
    assert stability.get("/image-to-video/result/nope").status_code == 404



def test_every_job_kinds_tag_is_left_out_of_the_named_field():
    """pydantic puts the body's kind tag in an error's location; the client never wrote it."""
    from app.api.errors import field_of

    for kind in ("image", "upscale", "interrogate", "audio", "train", "video"):
        assert field_of(("body", kind, "steps")) == "steps"
    assert field_of(("body", "hires", "steps")) == "hires.steps"
