"""The depth and normal preprocessors through the extension's routes over real HTTP: a studio whose models folder
holds tiny depth models as Hugging Face folders (``tests.tiny_depth``) answers them as available in
``module_list`` and runs them in ``detect``, driven by the unmodified ``webuiapi`` client and by raw requests."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.api import create_api
from modules.controlnet import annotators
from tests.api_server import serve_app
from tests.helpers import studio_services
from tests.tiny_depth import save_tiny_depth_anything, save_tiny_dpt

webuiapi = pytest.importorskip("webuiapi")
pytest.importorskip("cv2")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    services = studio_services(tmp_path_factory.mktemp("controlnet-depth-api"))
    save_tiny_dpt(services.config.models_dir)
    save_tiny_depth_anything(services.config.models_dir)
    with serve_app(create_api(services)) as running:
        yield running
    annotators.clear_cache()


def picture(width: int = 96, height: int = 64) -> Image.Image:
    image = Image.new("RGB", (width, height), (40, 60, 90))
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(220, 200, 170))
    return image


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decoded(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def test_module_list_says_which_depth_preprocessors_have_their_folder(server):
    detail = httpx.get(f"{server.url}/controlnet/module_list").json()["module_detail"]
    assert detail["depth"]["available"] and detail["normal_map"]["available"] and detail["depth_anything"]["available"]
    assert detail["depth_anything_v2"]["available"] is False
    assert detail["depth_anything_v2"]["requires"] == ["models/ControlNet/annotators/depth-anything-v2-small/"]
    labels = httpx.get(f"{server.url}/controlnet/module_list", params={"alias_names": "true"}).json()
    assert labels["module_detail"]["depth_midas"]["available"] is True


def test_webuiapi_detect_depth_midas_answers_grey_at_the_resolution(server):
    api = webuiapi.WebUIApi(host=server.host, port=server.port)
    answer = api.controlnet_detect([picture(96, 64)], module="depth_midas", processor_res=128)
    assert answer.info == "Success"
    control = answer.image
    assert control.mode == "RGB" and control.size == (192, 128)
    pixels = np.asarray(control)
    assert (pixels[:, :, 0] == pixels[:, :, 2]).all() and pixels.min() == 0 and pixels.max() == 255


def test_detect_depth_anything_and_normal_by_the_extension_field_names(server):
    body = {"controlnet_module": "depth_anything", "controlnet_input_images": [b64(picture()), b64(picture())],
            "controlnet_processor_res": 64}
    answer = httpx.post(f"{server.url}/controlnet/detect", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    first, second = (decoded(image) for image in answer.json()["images"])
    assert first.shape == (64, 96, 3) and np.array_equal(first, second)  # deterministic
    normal = httpx.post(f"{server.url}/controlnet/detect", timeout=120, json={
        "controlnet_module": "normal_midas", "controlnet_input_images": [b64(picture())],
        "controlnet_processor_res": 64, "controlnet_threshold_a": 0.4})
    assert normal.status_code == 200, normal.text
    pixels = decoded(normal.json()["images"][0])
    assert pixels.shape == (64, 96, 3) and (pixels == [127, 127, 255]).all(axis=2).any()


def test_detect_without_the_folder_names_it(server):
    answer = httpx.post(f"{server.url}/controlnet/detect", timeout=60, json={
        "controlnet_module": "depth_anything_v2", "controlnet_input_images": [b64(picture())]})
    assert answer.status_code == 422
    assert answer.json()["field"] == "controlnet_module"
    assert "models/ControlNet/annotators/depth-anything-v2-small/ is missing" in answer.json()["detail"]
