"""What a user of ``webuiapi`` sees with the embedded model and the embedded ControlNet: an outline drawn on one
side puts the shape there, at the drawn size and in the drawn form, while the prompt (which names another shape
and place) decides the colours. Measured from the pixels, on several seeds; tolerant (most, not all)."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image, ImageDraw

from modules.runtime.config import ROOT
from tests.api_studio import running_studio
from tools.shapes import metrics

webuiapi = pytest.importorskip("webuiapi")
BASE = ROOT / "models" / "Stable-diffusion" / "sfumato-shapes"
CONTROLNET = ROOT / "models" / "ControlNet" / "sfumato-shapes-scribble"
pytestmark = pytest.mark.skipif(not (BASE / "model_index.json").is_file() or not (CONTROLNET / "config.json").is_file(),
                                reason="the embedded model or ControlNet is not in models/")


@pytest.fixture(scope="module")
def studio(tmp_path_factory, one_thread):
    store = tmp_path_factory.mktemp("embedded-store") / "models"
    shutil.copytree(BASE, store / "Stable-diffusion" / BASE.name, ignore=shutil.ignore_patterns(".train-state"))
    shutil.copytree(CONTROLNET, store / "ControlNet" / CONTROLNET.name, ignore=shutil.ignore_patterns(".train-state"))
    with running_studio(tmp_path_factory.mktemp("embedded-api"), store) as running:
        yield running


def outline_on_the_right(size: int = 512) -> Image.Image:
    """A user's scribble: a large circle's outline at the right of a 512 px canvas, white on black."""
    image = Image.new("RGB", (size, size), "black")
    side = size * 33 // 64
    left = size - size * 2 // 64 - side
    top = (size - side) // 2
    ImageDraw.Draw(image).ellipse((left, top, left + side, top + side), outline="white", width=size // 64 * 2)
    return image


def test_webuiapi_unit_with_the_embedded_controlnet_puts_the_shape_where_the_scribble_is(studio):
    client = webuiapi.WebUIApi(host=studio.server.host, port=studio.server.port)
    title = next(name for name in client.controlnet_model_list() if name.startswith("sfumato-shapes-scribble"))
    # webuiapi sends CFG 7 unless told otherwise; with a prompt that names another shape, the README tells users to
    # pick "ControlNet is more important" there (control_mode 2), as sd-webui-controlnet users do. (Balanced at CFG 7
    # draws this square-against-circle case as a circle in 3 of 8 seeds; the card has the held-out figures.)
    unit = webuiapi.ControlNetUnit(image=outline_on_the_right(), module="none", model=title,
                                   resize_mode="Just Resize", control_mode=2)
    readings = []
    for seed in (1, 2, 3, 4):
        result = client.txt2img(prompt="a small yellow square on the left, on a purple background", seed=seed,
                                width=64, height=64, alwayson_scripts={}, controlnet_units=[unit])
        readings.append(metrics.measure(result.image))
    placed = sum(r.position == "middle right" and r.size == "large" for r in readings)
    coloured = sum(r.foreground == "yellow" and r.background == "purple" for r in readings)
    circles = sum(r.shape == "circle" for r in readings)
    assert placed >= 3 and coloured >= 3 and circles >= 3, readings
