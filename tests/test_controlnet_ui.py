"""The ControlNet accordion: every generation tab has its units, a unit's controls become a ``ControlNetUnit`` of
the request, and a Generate click with an enabled unit runs it (or says which field is missing)."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image, ImageDraw

from app.ui import build_layout
from app.ui.controlnet_panel import UNIT_COUNT, field, units_from_form
from app.ui.generate import generation_events
from modules.image.infotext import parse_infotext


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_model_store, one_thread):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services
    from tools.tiny_controlnet import save_tiny_controlnet
    from tools.tiny_model import build_tiny_pipeline

    root = tmp_path_factory.mktemp("cn-ui")
    shutil.copytree(tiny_model_store, root / "models")
    save_tiny_controlnet(build_tiny_pipeline("sd1", seed=0), root / "models" / "ControlNet" / "tiny-cn", seed=1)
    built = build_services(AppConfig(models_dir=root / "models", outdir=root / "outputs", data_dir=root / "data",
                                     default_ckpt="tiny-sd1"))
    built.start()
    yield built
    built.stop()


def outline() -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).ellipse((8, 8, 40, 40), outline="white", width=2)
    return image


def unit_values(services, **changes):
    title = services.engine.controlnets.list()[0].title
    values = {field(0, "enabled"): True, field(0, "model"): title, field(0, "image"): outline(),
              field(0, "module"): "Canny", field(0, "weight"): 0.8, field(0, "guidance_start"): 0.0,
              field(0, "guidance_end"): 1.0, field(0, "control_mode"): "Balanced",
              field(0, "resize_mode"): "Crop and Resize", field(0, "processor_res"): 64, field(0, "threshold_a"): 100,
              field(0, "threshold_b"): 200, field(0, "pixel_perfect"): False}
    values.update({field(0, key): value for key, value in changes.items()})
    return values


def test_every_generation_tab_has_its_units_and_lists_the_models(services):
    ui = build_layout(services)
    for tab in ui.generation.values():
        for unit in range(UNIT_COUNT):
            assert {field(unit, name) for name in ("enabled", "image", "module", "model", "weight")} <= set(tab.inputs)
        choices = [choice[0] for choice in tab.form[field(0, "model")].choices]
        assert choices[0] == "None" and choices[1].startswith("tiny-cn [")
        modules = [choice[0] for choice in tab.form[field(0, "module")].choices]
        assert "Canny" in modules or "canny" in modules


def test_form_values_become_a_unit_with_the_module_name(services):
    (unit,) = units_from_form(unit_values(services))
    assert unit.module == "canny" and unit.weight == 0.8 and unit.processor_res == 64
    assert units_from_form(unit_values(services, enabled=False)) == ()


def test_generate_with_a_unit_shows_it_in_the_infotext_and_a_missing_model_is_named(services):
    base = {"task": "txt2img", "prompt": "a ring", "steps": 3, "width": 64, "height": 64, "seed": 5}
    final = list(generation_events(services, {**base, **unit_values(services)}, poll=0.02))[-1]
    params = parse_infotext(final["infotext"])
    assert params["ControlNet 0"].startswith("Module: canny, Model: tiny-cn [")
    refused = list(generation_events(services, {**base, **unit_values(services, model="None")}, poll=0.02))[-1]
    assert "controlnet[0].model" in refused["status"] and "choose its model" in refused["status"]
