"""Upscaling over HTTP in every dialect that has it: A1111 Extras with the unmodified ``webuiapi`` client, the
native API's upscale jobs and artifact downloads, and Stability's fast upscale."""

from __future__ import annotations

import time

import httpx
import pytest
from PIL import Image

from tests.api_studio import b64, load, picture, running_studio

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_store):
    with running_studio(tmp_path_factory.mktemp("upscale-api"), tiny_model_store) as running:
        yield running


def test_webuiapi_extra_single_image_upscales_with_a_model(studio):
    import webuiapi

    client = webuiapi.WebUIApi(host="127.0.0.1", port=studio.server.port)
    result = client.extra_single_image(image=picture((40, 24)), upscaler_1="2x-TinyCompact", upscaling_resize=2)
    assert result.image.size == (80, 48)
    assert "Postprocess upscale by: 2, Postprocess upscaler: 2x-TinyCompact" in result.info
    assert "Postprocess upscaler: 2x-TinyCompact" in result.image.info["parameters"]


def test_webuiapi_extra_batch_images_keeps_order_and_scales_to_a_box(studio):
    import webuiapi

    client = webuiapi.WebUIApi(host="127.0.0.1", port=studio.server.port)
    result = client.extra_batch_images(images=[picture((40, 24)), picture((16, 16))], name_list=["a", "b"],
                                       resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=32,
                                       upscaler_1="Lanczos", upscaler_2="4x-TinyCompact",
                                       extras_upscaler_2_visibility=0.5)
    assert [image.size for image in result.images] == [(64, 32), (64, 32)]


def test_upscalers_lists_the_models_with_their_scales(studio):
    listed = httpx.get(f"{studio.url}/sdapi/v1/upscalers").json()
    by_name = {item["name"]: item for item in listed}
    assert [item["name"] for item in listed[:3]] == ["None", "Lanczos", "Nearest"]
    assert by_name["2x-TinyCompact"]["scale"] == 2 and by_name["2x-TinyCompact"]["model_name"] == "ESRGAN"
    assert by_name["4x-TinyCompact"]["model_path"].endswith("4x-TinyCompact.pth")
    realesrgan = httpx.get(f"{studio.url}/sdapi/v1/realesrgan-models").json()
    assert [item["name"] for item in realesrgan] == ["4x-TinyCompact"] and realesrgan[0]["scale"] == 4


@pytest.mark.parametrize("body, status, field", [
    ({"upscaling_resize": 0}, 422, "upscaling_resize"),
    ({"upscaling_resize": 8, "image": None}, 422, "upscaling_resize"),
    ({"upscaler_1": "4x-NoSuchModel"}, 400, "upscaler_1"),
    ({"upscaler_2": "nope", "extras_upscaler_2_visibility": 0.3}, 400, "upscaler_2"),
    ({"extras_upscaler_2_visibility": 2}, 422, "extras_upscaler_2_visibility"),
    ({"image": "bm90IGFuIGltYWdl"}, 422, "image"),
    ({"gfpgan_visibility": 0.5}, 422, "gfpgan_visibility"),
])
def test_bad_extras_requests_are_4xx_naming_the_field(studio, body, status, field):
    large = b64(Image.new("RGB", (2048, 2048)))
    payload = {"image": b64(picture((40, 24))), "upscaler_1": "Lanczos", **body}
    if payload.get("image") is None:
        payload["image"] = large
    answer = httpx.post(f"{studio.url}/sdapi/v1/extra-single-image", json=payload, timeout=60)
    assert answer.status_code == status, answer.text
    assert field in answer.text
    assert httpx.post(f"{studio.url}/sdapi/v1/extra-single-image", timeout=60,
                      json={"image": b64(picture((8, 8))), "upscaler_1": "Nearest"}).status_code == 200


def test_a_native_upscale_job_has_downloadable_artifacts_and_a_history_entry(studio):
    submitted = httpx.post(f"{studio.url}/api/v1/jobs", json={
        "kind": "upscale", "images": [b64(picture((40, 24)))], "names": ["cat.png"], "scale": 3,
        "upscaler": "4x-TinyCompact", "save_images": False}).json()
    deadline = time.time() + 60
    while time.time() < deadline:
        job = httpx.get(f"{studio.url}/api/v1/jobs/{submitted['id']}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.05)
    assert job["state"] == "done" and job["kind"] == "upscale", job
    [artifact] = job["result"]["artifacts"]
    assert artifact["type"] == "image" and artifact["parameters"]["source"] == "cat.png"
    download = httpx.get(artifact["url"])
    assert download.headers["content-type"] == "image/png" and load(download.content).size == (120, 72)
    assert load(httpx.get(job["result"]["images"][0]).content).size == (120, 72)
    listed = httpx.get(f"{studio.url}/api/v1/jobs", params={"limit": 5}).json()["jobs"]
    assert any(item["id"] == job["id"] and item["kind"] == "upscale" for item in listed)


def test_native_upscale_refusals_name_the_field(studio):
    answer = httpx.post(f"{studio.url}/api/v1/jobs", json={"kind": "upscale", "images": [b64(picture())],
                                                            "scale": -2})
    assert answer.status_code == 422 and "upscaling_resize" in answer.text
    answer = httpx.post(f"{studio.url}/api/v1/jobs", json={"kind": "upscale", "images": [b64(picture())],
                                                            "prompt": "not an upscale field"})
    assert answer.status_code == 422 and "prompt" in answer.text
    answer = httpx.post(f"{studio.url}/api/v1/jobs", json={"kind": "hologram"})
    assert answer.status_code == 422 and "kind" in answer.text.lower()
