"""ControlNet in a real browser: a model dropped into models/ControlNet appears after Refresh, the preprocessor's
preview shows before generating, and Generate runs the unit (the infotext names it)."""

from __future__ import annotations

import re
import shutil

import pytest
from PIL import Image, ImageDraw

from .conftest import missing
from .test_studio import DONE, choose, generate, open_tab

pytestmark = pytest.mark.slow
if missing():
    pytest.skip(missing(), allow_module_level=True)
from playwright.sync_api import expect  # noqa: E402


def test_a_controlnet_unit_previews_its_preprocessor_and_steers_generate(page, studio, tmp_path):
    from tools.tiny_controlnet import save_tiny_controlnet
    from tools.tiny_model import build_tiny_pipeline

    target = studio["root"] / "models" / "ControlNet" / "tiny-browser-cn"
    if not target.exists():
        built = save_tiny_controlnet(build_tiny_pipeline("sd1", seed=0), tmp_path / "tiny-browser-cn", seed=1)
        shutil.copytree(built, target)
    control = tmp_path / "outline.png"
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((10, 10, 50, 50), fill=(200, 40, 40))
    image.save(control)

    tab = open_tab(page, "txt2img")
    tab.get_by_text("ControlNet", exact=True).click()
    unit = tab.get_by_role("tabpanel").filter(visible=True).filter(has_text="Control image").first
    unit.get_by_label("Enable", exact=True).check()
    unit.locator("input[type=file]").first.set_input_files(control)
    expect(unit.get_by_test_id("image").get_by_role("img").first).to_be_visible()  # uploaded before it is used
    unit.get_by_role("button", name="Refresh the ControlNet model list").click()
    box = unit.get_by_role("combobox", name="Model", exact=True)
    box.click()
    page.get_by_role("option", name=re.compile(r"^tiny-browser-cn \[")).click()
    choose(unit, "Preprocessor", "canny")
    expect(unit.get_by_text("Low Threshold", exact=True).first).to_be_visible()  # its sliders have come
    unit.get_by_role("button", name="Preview", exact=True).click()
    expect(page.locator("#txt2img-controlnet-0-preview img")).to_be_visible()
    generate(tab, "a red circle")
    expect(tab.get_by_text(DONE)).to_be_visible()
    expect(tab.get_by_label("Generation parameters")).to_have_value(
        re.compile(r'ControlNet 0: "Module: canny, Model: tiny-browser-cn \['))
