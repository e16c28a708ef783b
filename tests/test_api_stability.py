"""The Stability v2beta dialect over real HTTP on the tiny model: core in both accept modes, inpaint, outpaint,
the async results pattern, and errors in Stability's ``{"name", "errors"}`` shape."""

from __future__ import annotations

import base64
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.api_studio import file_bytes, load, picture, running_studio
from tests.helpers import pixels

AUTH = {"authorization": "Bearer sk-local"}
FAST = {"steps": "3"}
NO_FILE = {"none": ("", b"")}  # what Stability's own examples send to force a multipart body


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_store):
    with running_studio(tmp_path_factory.mktemp("stability"), tiny_model_store) as running:
        yield running


@pytest.fixture
def api(studio):
    with httpx.Client(base_url=studio.url + "/v2beta", timeout=300, headers=AUTH) as client:
        yield client


def test_core_as_image_bytes_with_seed_and_finish_reason_headers(api):
    response = api.post("/stable-image/generate/core", headers={"accept": "image/*"}, files=NO_FILE,
                        data={"prompt": "a lighthouse", "seed": "42", "style_preset": "pixel-art", **FAST})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["seed"] == "42" and response.headers["finish-reason"] == "SUCCESS"
    image = load(response.content)
    assert image.size == (64, 64)  # 1:1 over the tiny model's own 64x64
    assert image.info["parameters"].startswith("a lighthouse, pixel art") and "Seed: 42" in image.info["parameters"]


def test_core_as_json_at_an_aspect_ratio(api):
    response = api.post("/stable-image/generate/core", headers={"accept": "application/json"}, files=NO_FILE,
                        data={"prompt": "a wide field", "aspect_ratio": "16:9", "output_format": "jpeg", **FAST})
    body = response.json()
    assert response.status_code == 200 and set(body) == {"image", "seed", "finish_reason"}
    assert body["finish_reason"] == "SUCCESS" and 0 <= body["seed"] <= 4294967294
    image = load(base64.b64decode(body["image"]))
    assert image.format == "JPEG" and image.size == (88, 48)


def test_aspect_ratios_keep_the_model_area():
    from app.api.stability import ASPECT_RATIOS, aspect_size

    for ratio in ASPECT_RATIOS:
        width, height = aspect_size(ratio, 1024)
        across, down = (int(part) for part in ratio.split(":"))
        assert width % 8 == 0 and height % 8 == 0
        assert abs(width / height - across / down) < 0.05 and abs(width * height / 1024**2 - 1) < 0.05


def test_inpaint_repaints_only_the_white_mask(api):
    original = picture()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    response = api.post("/stable-image/edit/inpaint", headers={"accept": "image/*"},
                        files={"image": ("image.png", file_bytes(original)), "mask": ("mask.png", file_bytes(mask))},
                        data={"prompt": "a yellow star", "grow_mask": "0", "output_format": "png", **FAST})
    assert response.status_code == 200, response.text
    before, after = pixels(original), pixels(load(response.content))
    outside = np.asarray(mask) == 0
    assert np.array_equal(before[outside], after[outside])
    assert np.abs(before[~outside] - after[~outside]).mean() > 1.0


def test_outpaint_grows_the_canvas(api):
    response = api.post("/stable-image/edit/outpaint", headers={"accept": "image/*"},
                        files={"image": ("image.png", file_bytes(picture()))},
                        data={"left": "16", "down": "8", "prompt": "more sky", **FAST})
    assert response.status_code == 200, response.text
    assert load(response.content).size == (80, 72)


def test_async_results_are_202_while_running_then_the_result(api, studio):
    response = api.post("/stable-image/generate/core", headers={"x-async": "true"}, files=NO_FILE,
                        data={"prompt": "slowly", "seed": "9", "steps": "40"})
    assert response.status_code == 200 and set(response.json()) == {"id"}
    job_id = response.json()["id"]
    first = api.get(f"/results/{job_id}", headers={"accept": "image/*"})
    assert first.status_code == 202 and first.json() == {"id": job_id, "status": "in-progress"}
    deadline = time.monotonic() + 300
    while (result := api.get(f"/results/{job_id}", headers={"accept": "image/*"})).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert result.status_code == 200 and result.headers["seed"] == "9"
    assert load(result.content).size == (64, 64)
    as_json = api.get(f"/results/{job_id}", headers={"accept": "application/json"}).json()
    assert as_json["seed"] == 9 and as_json["finish_reason"] == "SUCCESS"
    assert studio.services.queue.get(job_id).source == "stability"


def test_unknown_result_id_is_404(api):
    response = api.get("/results/does-not-exist")
    assert response.status_code == 404 and response.json()["name"] == "not_found"


@pytest.mark.parametrize(("route", "fields", "files", "field"), [
    ("generate/core", {"prompt": "x", "aspect_ratio": "7:3"}, NO_FILE, "aspect_ratio"),
    ("generate/core", {"aspect_ratio": "1:1"}, NO_FILE, "prompt"),
    ("generate/core", {"prompt": "x", "seed": "abc"}, NO_FILE, "seed"),
    ("generate/core", {"prompt": "x", "seed": "4294967295"}, NO_FILE, "seed"),
    ("generate/core", {"prompt": "x", "style_preset": "vaporwave"}, NO_FILE, "style_preset"),
    ("generate/core", {"prompt": "x", "output_format": "gif"}, NO_FILE, "output_format"),
    ("edit/inpaint", {"prompt": "x"}, {"image": ("a.png", b"\x89PNG\r\n\x1a\nbroken")}, "image"),
    ("edit/inpaint", {"prompt": "x"}, {"image": ("a.png", file_bytes(picture()))}, "mask"),
    ("edit/inpaint", {"prompt": "x", "grow_mask": "50"}, {"image": ("a.png", file_bytes(picture()))}, "grow_mask"),
    ("edit/outpaint", {"prompt": "x"}, {"image": ("a.png", file_bytes(picture()))}, "left"),
    ("edit/outpaint", {"up": "-3"}, {"image": ("a.png", file_bytes(picture()))}, "up"),
    ("edit/outpaint", {"left": "8"}, NO_FILE, "image"),
])
def test_bad_input_is_a_stability_400_naming_the_field(api, studio, route, fields, files, field):
    queued_before = studio.services.queue.history(limit=1)[1]
    response = api.post(f"/stable-image/{route}", files=files, data=fields)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["name"] == "bad_request" and body["errors"][0].startswith(f"{field}:"), body
    assert studio.services.queue.history(limit=1)[1] == queued_before


def test_fast_upscale_is_4x_with_a_model_and_refuses_a_tiny_image(api):
    response = api.post("/stable-image/upscale/fast", files={"image": ("a.png", file_bytes(picture()))},
                        headers={"accept": "image/*"})
    assert response.status_code == 200 and response.headers["finish-reason"] == "SUCCESS"
    upscaled = load(response.content)
    assert upscaled.size == (256, 256) and "Postprocess upscaler: 4x-TinyCompact" in upscaled.info["parameters"]
    small = api.post("/stable-image/upscale/fast", files={"image": ("a.png", file_bytes(picture((16, 16))))})
    assert small.status_code == 400 and small.json()["errors"][0].startswith("image: ")
    ok = api.post("/stable-image/generate/core", files=NO_FILE, data={"prompt": "fine", **FAST})
    assert ok.status_code == 200 and "image" in ok.json()


def test_conservative_upscale_redraws_the_enlarged_picture_in_tiles(api):
    response = api.post("/stable-image/upscale/conservative", headers={"accept": "image/*"},
                        files={"image": ("a.png", file_bytes(picture()))},
                        data={"prompt": "a red circle on a blue background", "creativity": "0.3", "seed": "5",
                              "steps": "4"})
    assert response.status_code == 200, response.text
    upscaled = load(response.content)
    assert upscaled.size == (256, 256) and response.headers["seed"] == "5"
    parameters = upscaled.info["parameters"]
    assert "SD upscale tiles: 25, " in parameters and "Size: 256x256" in parameters  # 64 px tiles, 16 px overlap
    assert "Denoising strength: 0.3" in parameters
    enlarged = np.asarray(picture().resize((256, 256)).convert("RGB"), dtype=np.int16)
    difference = np.abs(np.asarray(upscaled.convert("RGB"), dtype=np.int16) - enlarged).mean()
    assert 1 < difference < 80  # redrawn, yet still the same picture
    refused = api.post("/stable-image/upscale/conservative", files={"image": ("a.png", file_bytes(picture()))},
                       data={"prompt": "x", "creativity": "0.9"})
    assert refused.status_code == 400 and refused.json()["errors"][0].startswith("creativity")
