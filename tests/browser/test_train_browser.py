"""The Train tab in the browser: a tiny LoRA run from a folder of images, followed live to its loss curve."""

from __future__ import annotations

import re

import pytest

from tests.training_helpers import heart_folder

from .conftest import missing

if missing():
    pytest.skip(missing(), allow_module_level=True)
expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = pytest.mark.slow
STEPS = 60


def test_a_tiny_run_shows_its_loss_curve_and_lands_in_models(page, studio, tmp_path):
    folder = heart_folder(tmp_path / "hearts")
    page.get_by_role("tab", name="Train", exact=True).click()
    tab = page.get_by_role("tabpanel").filter(visible=True).first
    tab.get_by_label("Output name").fill("browserheart")
    tab.get_by_placeholder("/path/to/images", exact=True).fill(str(folder))  # not the class image folder
    tab.get_by_label("Instance prompt").fill("a sks on a plain background")
    # enough steps that the live preview is still up when the test looks (a busy machine finishes 12 steps first)
    for label, value in (("Steps", STEPS), ("Resolution", 64), ("Learning rate", 0.002)):
        box = tab.get_by_label(label, exact=True)
        box.fill(str(value))
    tab.get_by_role("button", name="Start", exact=True).click()
    # live: the progress line says the step and the loss, the preview shows the curve
    expect(tab.get_by_text("step", exact=False).first).to_be_visible()
    preview = page.locator("#sf-train-preview img")
    expect(preview).to_be_visible()
    # done: the status names the file; the gallery's first picture is the loss curve (480 x 240)
    lora = studio["root"] / "models" / "Lora" / "browserheart.safetensors"
    saved = re.escape(f"Saved {lora} (step {STEPS}/{STEPS}, ")
    expect(tab.get_by_label("Result")).to_have_value(re.compile(saved + r"last loss \d+\.\d{4}\)"),
                                                     timeout=120_000)
    thumbnails = tab.get_by_role("button", name="Thumbnail 1 of 1").locator("img")
    expect(thumbnails).to_have_count(1)
    size = thumbnails.evaluate("(node) => [node.naturalWidth, node.naturalHeight]")
    for _ in range(100):
        if size[0]:
            break
        page.wait_for_timeout(100)
        size = thumbnails.evaluate("(node) => [node.naturalWidth, node.naturalHeight]")
    assert size == [480, 240]
    assert (studio["root"] / "models" / "Lora" / "browserheart.safetensors").is_file()
