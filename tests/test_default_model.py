"""The embedded default model follows prompts: what the image shows is measured from its pixels.

These run the committed model (models/Stable-diffusion/sfumato-shapes) through the same engine and queue the UI
uses, on the CPU, and check what a user would look at: the background colour, the shape's colour and kind. The
checks are tolerant (a colour is the nearest palette entry; a shape is the best-fitting outline), never pixel
hashes, so they survive harmless numeric changes but fail when the model stops following the prompt.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from modules.image.request import GenerationRequest
from modules.runtime.config import ROOT, AppConfig
from tools.shapes import metrics as metrics

MODEL_NAME = "sfumato-shapes"
MODEL_DIR = ROOT / "models" / "Stable-diffusion" / MODEL_NAME

pytestmark = pytest.mark.skipif(not (MODEL_DIR / "model_index.json").is_file(),
                                reason="the trained default model is not in models/ yet")

PROMPTS = [
    # (prompt, seed, background, foreground, shape)
    ("a large red circle on the left, on a blue background", 11, "blue", "red", "circle"),
    ("a large yellow square in the centre, on a black background", 12, "black", "yellow", "square"),
    ("a large white triangle on the right, on a green background", 13, "green", "white", "triangle"),
    ("a large orange star in the centre, on a purple background", 14, "purple", "orange", "star"),
]


@pytest.fixture(scope="module")
def shapes_services(tmp_path_factory):
    """Services whose only checkpoint is the committed default model (copied, so nothing writes into the repo)."""
    from modules.runtime.services import build_services

    root = tmp_path_factory.mktemp("shapes")
    models = root / "models"
    shutil.copytree(MODEL_DIR, models / "Stable-diffusion" / MODEL_NAME,
                    ignore=shutil.ignore_patterns(".train-state", "samples.png"))
    config = AppConfig(models_dir=models, outdir=root / "outputs", data_dir=root / "data")
    services = build_services(config)
    services.start()
    yield services
    services.stop()


def recommended() -> dict:
    import json

    record = json.loads((MODEL_DIR / "training_config.json").read_text(encoding="utf-8"))
    return record["recommended"]


def test_default_size_is_the_models_own(shapes_services):
    result = shapes_services.run(GenerationRequest(prompt=PROMPTS[0][0], steps=2, seed=1))
    assert result.images[0].image.size == (64, 64)


@pytest.mark.parametrize(("prompt", "seed", "background", "foreground", "shape"), PROMPTS)
def test_image_shows_what_the_prompt_asks(shapes_services, prompt, seed, background, foreground, shape):
    wanted = recommended()
    request = GenerationRequest(prompt=prompt, seed=seed, steps=wanted["steps"], cfg_scale=wanted["guidance"],
                                sampler_name=wanted["sampler"])
    reading = metrics.measure(shapes_services.run(request).images[0].image)
    assert (reading.background, reading.foreground, reading.shape) == (background, foreground, shape), reading


@pytest.mark.parametrize("seed", [6, 7])
def test_inpainting_a_square_puts_a_green_circle_there_and_keeps_the_rest(shapes_services, seed):
    wanted = recommended()
    first = shapes_services.run(GenerationRequest(
        prompt="a small red square on the left, on a blue background", seed=5, steps=wanted["steps"],
        cfg_scale=wanted["guidance"], sampler_name=wanted["sampler"])).images[0].image
    from PIL import Image, ImageDraw

    mask = Image.new("L", first.size, 0)
    ImageDraw.Draw(mask).rectangle((28, 14, 63, 49), fill=255)
    result = shapes_services.run(GenerationRequest(
        task="inpaint", prompt="a large green circle on the right, on a blue background", init_image=first, mask=mask,
        seed=seed, steps=wanted["steps"], cfg_scale=wanted["guidance"], sampler_name=wanted["sampler"],
        denoising_strength=1.0, inpainting_fill=1, mask_blur=0)).images[0].image
    before, after = np.asarray(first, dtype=np.int16), np.asarray(result, dtype=np.int16)
    outside = np.asarray(mask) == 0
    assert np.abs(before - after)[outside].max() <= 1
    crop = result.crop((28, 14, 64, 50))
    reading = metrics.measure(crop)
    assert reading.foreground == "green" and reading.shape == "circle", reading


def test_img2img_turns_the_shape_into_what_the_prompt_asks(shapes_services):
    wanted = recommended()
    common = dict(steps=wanted["steps"], cfg_scale=wanted["guidance"], sampler_name=wanted["sampler"])
    source = shapes_services.run(GenerationRequest(
        prompt="a large red circle in the centre, on a yellow background", seed=21, **common)).images[0].image
    assert metrics.measure(source).foreground == "red"
    result = shapes_services.run(GenerationRequest(
        task="img2img", prompt="a large blue square in the centre, on a yellow background", init_image=source,
        denoising_strength=0.8, seed=22, **common)).images[0].image
    reading = metrics.measure(result)
    assert (reading.background, reading.foreground, reading.shape) == ("yellow", "blue", "square"), reading


def test_the_ui_starts_with_the_models_recommended_settings_unless_the_user_saved_their_own(shapes_services):
    from app.ui import choices

    wanted = recommended()
    assert choices.form_default(shapes_services, "cfg_scale") == wanted["guidance"]
    assert choices.form_default(shapes_services, "sampler") == wanted["sampler"]
    shapes_services.settings.update({"cfg_scale": 6.0})
    try:
        assert choices.form_default(shapes_services, "cfg_scale") == 6.0
    finally:
        shapes_services.settings.update({"cfg_scale": wanted["guidance"]})


SHORT_PROMPTS = [
    # (prompt, seed, background or None when the prompt names none, foreground): the forms people type first
    ("a red circle on a blue background", 31, "blue", "red"),
    ("a red circle on a blue background", 32, "blue", "red"),
    ("a yellow square on a black background", 33, "black", "yellow"),
    ("on a green background, a white triangle", 34, "green", "white"),
    ("a green star", 35, None, "green"),
]

@pytest.mark.parametrize("cfg", ["recommended", 7.0])
@pytest.mark.parametrize(("prompt", "seed", "background", "foreground"), SHORT_PROMPTS)
def test_short_prompts_get_their_colours(shapes_services, prompt, seed, background, foreground, cfg):
    """Issue 12: "a red circle on a blue background" missed its background 81.5 % of the time, because captions
    without size and position were rare in training; at the card's CFG and at A1111's usual 7."""
    wanted = recommended()
    request = GenerationRequest(prompt=prompt, seed=seed, steps=wanted["steps"], sampler_name=wanted["sampler"],
                                cfg_scale=wanted["guidance"] if cfg == "recommended" else cfg)
    reading = metrics.measure(shapes_services.run(request).images[0].image)
    assert reading.foreground == foreground, reading
    if background is not None:
        assert reading.background == background, reading


def _trained_with_plain_backdrop() -> bool:
    import json

    path = MODEL_DIR / "training_config.json"
    return path.is_file() and bool(json.loads(path.read_text(encoding="utf-8")).get("plain_unnamed_background"))


@pytest.mark.skipif(not _trained_with_plain_backdrop(),
                    reason="the model was trained before unnamed backgrounds meant plain grey")
@pytest.mark.parametrize("cfg", ["recommended", 7.0])
@pytest.mark.parametrize(("prompt", "seed", "foreground"), [
    ("a green star", 41, "green"), ("a black circle on the left", 42, "black"), ("a small white square", 43, "white"),
])
def test_a_prompt_without_a_background_gets_plain_grey(shapes_services, prompt, seed, foreground, cfg):
    """The card's promise: a prompt that names no background shows the shape on grey, never on its own colour,
    and guidance at A1111's usual 7 keeps the grey grey (it blotched it before the empty captions saw grey)."""
    from tools.shapes import dataset as world

    wanted = recommended()
    request = GenerationRequest(prompt=prompt, seed=seed, steps=wanted["steps"], sampler_name=wanted["sampler"],
                                cfg_scale=wanted["guidance"] if cfg == "recommended" else cfg)
    pixels = np.asarray(shapes_services.run(request).images[0].image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3)])
    off_grey = np.abs(border - np.asarray(world.PLAIN_BACKGROUND, dtype=np.float32)).max(axis=1)
    assert np.median(off_grey) < 24, np.median(border, axis=0)
    assert (off_grey < 48).mean() > 0.9, "blotches in the grey backdrop"
    assert metrics.measure(pixels).foreground == foreground
