"""The ControlNet extension's routes over real HTTP, driven by the unmodified ``webuiapi`` client and by raw
requests for what a careless client sends. No diffusion model is involved: the preprocessors are the subject, so
the studio runs on empty model folders (``tests.helpers.studio_services``) behind a real uvicorn server."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from app.api import create_api
from tests.api_server import serve_app
from tests.helpers import studio_services

webuiapi = pytest.importorskip("webuiapi")
pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    services = studio_services(tmp_path_factory.mktemp("controlnet-api"))
    with serve_app(create_api(services)) as running:
        yield running


@pytest.fixture
def api(server):
    return webuiapi.WebUIApi(host=server.host, port=server.port)


def detect(server, **body) -> httpx.Response:
    return httpx.post(f"{server.url}/controlnet/detect", json=body, timeout=60)


def white_square(size: int = 96) -> Image.Image:
    image = Image.new("RGB", (size, size), "black")
    inset = size // 4
    ImageDraw.Draw(image).rectangle((inset, inset, size - inset - 1, size - inset - 1), fill="white")
    return image


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decoded(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def test_webuiapi_reads_the_version_and_the_module_list(api):
    assert api.controlnet_version() == 2
    modules = api.controlnet_module_list()
    assert modules[0] == "none" and {"canny", "invert", "shuffle", "depth"} <= set(modules)


def test_module_list_describes_sliders_and_takes_alias_names(server):
    answer = httpx.get(f"{server.url}/controlnet/module_list").json()
    assert set(answer) == {"module_list", "module_detail"}
    assert answer["module_detail"]["canny"]["sliders"][1] == {"name": "Low Threshold", "value": 100, "min": 1,
                                                              "max": 255, "step": 1}
    aliases = httpx.get(f"{server.url}/controlnet/module_list", params={"alias_names": "true"}).json()
    assert "invert (from white bg & black line)" in aliases["module_list"]
    assert "depth_midas" in aliases["module_detail"]


def test_webuiapi_detect_canny_answers_the_square_border(api):
    answer = api.controlnet_detect([white_square(96)], module="canny", processor_res=96, threshold_a=100,
                                   threshold_b=200)
    assert answer.info == "Success" and len(answer.images) == 1  # a WebUIApiResult with PIL images
    control = answer.image
    assert control.mode == "RGB" and control.size == (96, 96)
    edges = np.asarray(control)[:, :, 0] > 0
    assert edges[22:26, 30:66].any(axis=0).all() and not edges[32:64, 32:64].any()


def test_webuiapi_defaults_work_for_every_model_free_module(api):
    """webuiapi sends thresholds of 64 whatever the module (out of range for tile_resample): clamped, not refused."""
    for module in ("none", "invert", "canny", "scribble_xdog", "lineart_standard", "threshold", "shuffle",
                   "tile_resample", "blur_gaussian"):
        answer = api.controlnet_detect([white_square(64)], module=module, processor_res=128)
        assert answer.info == "Success", module
        assert answer.image.mode == "RGB"


def test_detect_takes_the_extension_field_names_and_several_images(server):
    answer = detect(server, controlnet_module="Canny", controlnet_input_images=[b64(white_square(64)),
                                                                                b64(white_square(80))],
                    controlnet_processor_res=128, controlnet_threshold_a=-1, controlnet_threshold_b=None)
    assert answer.status_code == 200, answer.text
    assert [decoded(image).size for image in answer.json()["images"]] == [(128, 128), (128, 128)]


def test_invert_by_its_ui_label(server):
    image = white_square(32)
    answer = detect(server, controlnet_module="invert (from white bg & black line)",
                    controlnet_input_images=[b64(image)])
    assert answer.status_code == 200, answer.text
    assert np.array_equal(np.asarray(decoded(answer.json()["images"][0])), 255 - np.asarray(image))


def test_unknown_module_is_a_4xx_naming_controlnet_module(server):
    answer = detect(server, controlnet_module="no_such_module", controlnet_input_images=[b64(white_square())])
    assert answer.status_code == 400
    assert answer.json()["field"] == "controlnet_module"
    assert "unknown preprocessor 'no_such_module'" in answer.json()["detail"]


def test_model_based_module_names_the_missing_file(server):
    answer = detect(server, controlnet_module="depth_midas", controlnet_input_images=[b64(white_square())])
    assert answer.status_code == 422
    assert answer.json()["field"] == "controlnet_module"
    assert "models/ControlNet/annotators/dpt-hybrid-midas/ is missing" in answer.json()["detail"]


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"controlnet_module": "canny", "controlnet_input_images": ["not base64 at all!"]}, 422,
     "controlnet_input_images.0"),
    ({"controlnet_module": "canny", "controlnet_images": [base64.b64encode(b"no picture").decode()]}, 422,
     "controlnet_images.0"),
    ({"controlnet_module": "canny"}, 422, "controlnet_input_images"),
    ({"controlnet_module": "canny", "controlnet_input_images": ["x"] * 17}, 422, "controlnet_input_images"),
    ({"controlnet_module": "canny", "controlnet_processor_res": 100000}, 422, "controlnet_processor_res"),
    ({"controlnet_module": "canny", "controlnet_processor_res": 32}, 422, "controlnet_processor_res"),
    ({"controlnet_module": "canny", "controlnet_threshold_a": "low"}, 422, "controlnet_threshold_a"),
])
def test_bad_input_is_a_4xx_naming_the_field(server, body, status, field):
    if "controlnet_processor_res" in body:
        body = {**body, "controlnet_input_images": [b64(white_square())]}
    answer = detect(server, **body)
    assert answer.status_code == status, answer.text
    assert answer.json()["field"] == field


def test_detect_is_behind_the_access_rules(tmp_path):
    api = TestClient(create_api(studio_services(tmp_path, api_auth=(("u", "p"),))), base_url="http://localhost")
    body = {"controlnet_module": "invert", "controlnet_input_images": [b64(white_square(16))]}
    assert api.post("/controlnet/detect", json=body).status_code == 401
    assert api.get("/controlnet/module_list").status_code == 401
    assert api.post("/controlnet/detect", json=body, auth=("u", "p")).status_code == 200
