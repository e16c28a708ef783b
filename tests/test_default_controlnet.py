"""The embedded ControlNet works out of the box: through the same engine and queue the UI uses, a scribble decides
the shape and where it is, the prompt decides the colours, even when the prompt names another shape and place.

These run the committed models (models/Stable-diffusion/sfumato-shapes with models/ControlNet/
sfumato-shapes-scribble) on the CPU and measure the result from the pixels (``tools/shapes/metrics.py``), with
a tolerance of one image in four, so they survive harmless numeric changes but fail when control is lost.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from modules.controlnet.units import ControlNetUnit
from modules.image.request import GenerationRequest
from modules.runtime.config import ROOT, AppConfig
from tools.shapes import dataset as world
from tools.shapes import metrics
from tools.shapes_controlnet import control as ctl

BASE_NAME = "sfumato-shapes"
BASE_DIR = ROOT / "models" / "Stable-diffusion" / BASE_NAME
CONTROLNET_NAME = "sfumato-shapes-scribble"
CONTROLNET_DIR = ROOT / "models" / "ControlNet" / CONTROLNET_NAME

pytestmark = pytest.mark.skipif(not (CONTROLNET_DIR / "config.json").is_file(),
                                reason="the embedded ControlNet is not in models/ yet")


@pytest.fixture(scope="module")
def studio(tmp_path_factory, one_thread):
    """Services with the committed default model and ControlNet (copied, so nothing writes into the repo)."""
    from modules.runtime.services import build_services

    root = tmp_path_factory.mktemp("shapes-controlnet")
    models = root / "models"
    ignore = shutil.ignore_patterns(".train-state", "samples.png")
    shutil.copytree(BASE_DIR, models / "Stable-diffusion" / BASE_NAME, ignore=ignore)
    shutil.copytree(CONTROLNET_DIR, models / "ControlNet" / CONTROLNET_NAME, ignore=ignore)
    services = build_services(AppConfig(models_dir=models, outdir=root / "outputs", data_dir=root / "data"))
    services.start()
    yield services
    services.stop()


def test_the_scribble_decides_shape_and_place_and_the_prompt_the_colours(studio):
    drawn = world.ShapeSpec("star", "red", "blue", "large", "middle left")  # what the scribble shows
    box = world.box_for(drawn, side=33.0)
    scribble = Image.fromarray(ctl.to_rgb(ctl.scribble(drawn.shape, box)))
    unit = ControlNetUnit(model=CONTROLNET_NAME, image=scribble)
    readings = []
    for seed in (1, 2, 3, 4):
        result = studio.run(GenerationRequest(prompt="a small red circle on the right, on a blue background",
                                              seed=seed, controlnet=(unit,)))
        readings.append(metrics.measure(result.images[0].image))
    def share(attribute: str, wanted: str) -> float:
        return float(np.mean([getattr(r, attribute) == wanted for r in readings]))

    assert share("position", "middle left") >= 0.75, [r.position for r in readings]
    assert share("size", "large") >= 0.75, [r.size for r in readings]
    assert share("shape", "star") >= 0.75, [r.shape for r in readings]
    assert share("foreground", "red") >= 0.75 and share("background", "blue") >= 0.75


def test_at_cfg_7_controlnet_is_more_important_keeps_the_drawing_against_the_prompt(studio):
    """The card's advice for A1111's habitual CFG 7: the control mode that lets the drawing win."""
    drawn = world.ShapeSpec("triangle", "red", "blue", "large", "middle right")
    scribble = Image.fromarray(ctl.to_rgb(ctl.scribble(drawn.shape, world.box_for(drawn, side=33.0))))
    unit = ControlNetUnit(model=CONTROLNET_NAME, image=scribble, control_mode="ControlNet is more important")
    readings = [metrics.measure(studio.run(GenerationRequest(
        prompt="a large yellow square on the left, on a purple background", seed=seed, cfg_scale=7,
        controlnet=(unit,))).images[0].image) for seed in (1, 2, 3, 4)]
    assert sum(r.shape == "triangle" and r.position == "middle right" for r in readings) >= 3, readings
    assert sum(r.foreground == "yellow" and r.background == "purple" for r in readings) >= 3, readings
