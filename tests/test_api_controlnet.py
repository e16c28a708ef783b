"""ControlNet over real HTTP: the extension's unit shape from the unmodified ``webuiapi`` client and from raw
requests, its model list, and Stability's control routes, on the tiny model and tiny ControlNets."""

from __future__ import annotations

import base64
import io
import shutil

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.api_studio import b64, file_bytes, load, running_studio
from tests.helpers import pixels

webuiapi = pytest.importorskip("webuiapi")
TINY = dict(width=64, height=64, steps=3, sampler_name="Euler", seed=11)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_store):
    from tools.tiny_controlnet import save_tiny_controlnet
    from tools.tiny_model import build_tiny_pipeline

    store = tmp_path_factory.mktemp("cn-store") / "models"
    shutil.copytree(tiny_model_store, store)
    save_tiny_controlnet(build_tiny_pipeline("sd1", seed=0), store / "ControlNet" / "tiny-scribble", seed=1)
    with running_studio(tmp_path_factory.mktemp("cn-api"), store) as running:
        yield running


@pytest.fixture
def client(studio):
    return webuiapi.WebUIApi(host=studio.server.host, port=studio.server.port)


def outline() -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle((10, 20, 40, 50), outline="white", width=2)
    return image


def decoded(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


# webuiapi's txt2img/img2img keep one ``alwayson_scripts={}`` default dict and add the units to it, so a unit sent
# once would ride along with every later call of the process: each call here passes a dict of its own.


def test_webuiapi_units_steer_txt2img_and_the_model_list_names_them(client):
    titles = client.controlnet_model_list()
    assert len(titles) == 1 and titles[0].startswith("tiny-scribble [")
    plain = client.txt2img(prompt="a cat", **TINY)
    unit = webuiapi.ControlNetUnit(image=outline(), module="none", model=titles[0], weight=1.0)
    steered = client.txt2img(prompt="a cat", alwayson_scripts={}, controlnet_units=[unit], **TINY)
    assert np.abs(pixels(plain.image) - pixels(steered.image)).max() > 5
    assert f"ControlNet 0: \"Module: none, Model: {titles[0]}" in steered.info["infotexts"][0]
    disabled = webuiapi.ControlNetUnit(image=outline(), model=titles[0], enabled=False)
    off = client.txt2img(prompt="a cat", alwayson_scripts={}, controlnet_units=[disabled], **TINY)
    assert np.array_equal(pixels(plain.image), pixels(off.image))


def test_img2img_unit_without_an_image_reads_the_input_image(client):
    source = Image.new("RGB", (64, 64), (20, 20, 20))
    ImageDraw.Draw(source).ellipse((12, 12, 52, 52), outline=(250, 250, 250), width=3)
    title = client.controlnet_model_list()[0]
    plain = client.img2img(images=[source], prompt="a ring", denoising_strength=0.8, **TINY)
    unit = webuiapi.ControlNetUnit(model=title, control_mode=2)
    steered = client.img2img(images=[source], prompt="a ring", denoising_strength=0.8, alwayson_scripts={},
                             controlnet_units=[unit], **TINY)
    assert np.abs(pixels(plain.image) - pixels(steered.image)).max() > 5
    assert "Control Mode: ControlNet is more important" in steered.info["infotexts"][0]


@pytest.mark.parametrize(("unit", "status", "field"), [
    ({"model": "nope", "image": "B64"}, 400, "alwayson_scripts.controlnet.args[0].model"),
    ({"model": "MODEL", "image": "B64", "control_mode": 7}, 422, "alwayson_scripts.controlnet.args[0].control_mode"),
    ({"model": "MODEL", "image": "B64", "weight": "heavy"}, 422, "alwayson_scripts.controlnet.args[0].weight"),
    ({"model": "MODEL", "image": "not base64 at all!"}, 422, "alwayson_scripts.controlnet.args[0].image"),
    ({"model": "MODEL"}, 422, "alwayson_scripts.controlnet.args[0].image"),
    ({"model": "None", "image": "B64"}, 422, "alwayson_scripts.controlnet.args[0].model"),
    ({"model": "MODEL", "image": "B64", "module": "telepathy"}, 400, "alwayson_scripts.controlnet.args[0].module"),
])
def test_bad_units_are_refused_naming_the_field(studio, client, unit, status, field):
    title = client.controlnet_model_list()[0]
    unit = {key: (b64(outline()) if value == "B64" else title if value == "MODEL" else value)
            for key, value in unit.items()}
    response = httpx.post(f"{studio.url}/sdapi/v1/txt2img", timeout=120, json={
        "prompt": "x", **TINY, "alwayson_scripts": {"ControlNet": {"args": [unit]}}})
    assert response.status_code == status, response.text
    assert field in response.text
    assert client.txt2img(prompt="x", **TINY).image.size == (64, 64)  # and the studio still works


def test_stability_sketch_and_structure_follow_the_image(studio):
    sketch = Image.new("RGB", (96, 64), "white")
    ImageDraw.Draw(sketch).ellipse((20, 10, 60, 50), outline="black", width=3)
    with httpx.Client(base_url=studio.url + "/v2beta", timeout=300,
                      headers={"authorization": "Bearer sk-local", "accept": "image/*"}) as api:
        for route in ("sketch", "structure"):
            response = api.post(f"/stable-image/control/{route}", files={"image": ("s.png", file_bytes(sketch))},
                                data={"prompt": "a ring", "control_strength": "0.9", "seed": "5", "steps": "3"})
            assert response.status_code == 200, response.text
            image = load(response.content)
            assert image.width > image.height  # the sketch's aspect over the model's area
            assert "ControlNet 0" in image.info["parameters"]
        bad = api.post("/stable-image/control/sketch", files={"image": ("s.png", file_bytes(sketch))},
                       data={"prompt": "a ring", "control_strength": "3"})
        assert bad.status_code == 400 and "control_strength" in bad.text


def test_native_jobs_take_units_by_field_name(studio):
    title = studio.services.engine.controlnets.list()[0].title
    body = {"prompt": "a ring", "steps": 3, "width": 64, "height": 64, "seed": 4,
            "controlnet": [{"model": title, "image": b64(outline()), "weight": 0.9}]}
    with httpx.Client(base_url=studio.url + "/api/v1", timeout=300) as api:
        job = api.post("/jobs", json=body)
        assert job.status_code in (200, 201, 202), job.text
        job_id = job.json()["id"]
        for _ in range(600):
            state = api.get(f"/jobs/{job_id}").json()
            if state["state"] in ("done", "failed", "cancelled"):
                break
            import time

            time.sleep(0.1)
        assert state["state"] == "done", state
        refused = api.post("/jobs", json={**body, "controlnet": [{"model": "nope", "image": b64(outline())}]})
        assert refused.status_code in (400, 422) and "controlnet[0].model" in refused.text
