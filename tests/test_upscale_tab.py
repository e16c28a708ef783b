"""The Upscale tab's handlers on the studio's real services: what a user sees after each click."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.ui import build_layout
from app.ui.send import send_file_to_upscale, send_image
from app.ui.upscale_tab import SOURCES, request_from_values, upscale_events

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_model_store):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    root = tmp_path_factory.mktemp("upscale-ui")
    shutil.copytree(tiny_model_store, root / "models")
    built = build_services(AppConfig(models_dir=root / "models", outdir=root / "outputs", data_dir=root / "data",
                                     default_ckpt="tiny-sd1"))
    built.start()
    yield built
    built.stop()


def saved_picture(path, size=(40, 24), parameters: str | None = None):
    image = Image.new("RGB", size, (30, 60, 200))
    ImageDraw.Draw(image).rectangle((4, 4, 20, 16), fill=(220, 40, 40))
    info = None
    if parameters:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("parameters", parameters)
    image.save(path, pnginfo=info)
    return str(path)


BASE = {"source": SOURCES[0], "resize_mode": "Scale by", "scale": 2, "width": 512, "height": 512, "crop": True,
        "upscaler": "2x-TinyCompact", "upscaler_2": "None", "upscaler_2_visibility": 0, "tile_size": 0,
        "tile_overlap": 32}


def test_the_tab_is_built_with_the_installed_upscalers_and_send_buttons(services):
    ui = build_layout(services)
    upscaler = ui.upscale["upscaler"]
    names = [choice[0] for choice in upscaler.choices]
    assert names[:3] == ["None", "Lanczos", "Nearest"] and {"2x-TinyCompact", "4x-TinyCompact"} <= set(names)
    assert upscaler.value == "2x-TinyCompact"  # a model, not a plain resize, when one is installed
    for tab in ui.generation.values():
        assert "send_upscale" in tab.form
    assert "send_upscale" in ui.pnginfo
    hires = [choice[0] for choice in ui.generation["txt2img"].form["hr_upscaler"].choices]
    assert hires[0] == "Latent" and "4x-TinyCompact" in hires


def test_upscale_shows_progress_then_the_saved_upscaled_image_with_its_parameters(services, tmp_path):
    path = saved_picture(tmp_path / "cat.png", parameters="a cat\nSteps: 20, Seed: 3")
    updates = list(upscale_events(services, {**BASE, "image": path}))
    last = updates[-1]
    assert updates[0]["job"] and "sf-progress" in updates[0]["progress"]
    [shown] = last["gallery"]
    assert Image.open(shown).size == (80, 48) and shown.endswith("-cat.png") and "extras-images" in shown
    assert last["infotext"].startswith("a cat\nSteps: 20, Seed: 3, Postprocess upscale by: 2")
    assert "1 image in" in last["status"]


def test_several_images_and_a_folder(services, tmp_path):
    files = [saved_picture(tmp_path / f"{name}.png") for name in ("a", "b")]
    last = list(upscale_events(services, {**BASE, "source": SOURCES[1], "files": files, "scale": 1.5}))[-1]
    assert [Image.open(item).size for item in last["gallery"]] == [(60, 36), (60, 36)]
    folder = tmp_path / "folder"
    folder.mkdir()
    saved_picture(folder / "c.png", size=(16, 16))
    last = list(upscale_events(services, {**BASE, "source": SOURCES[2], "input_dir": str(folder),
                                          "resize_mode": "Scale to", "width": 40, "height": 20}))[-1]
    assert [Image.open(item).size for item in last["gallery"]] == [(40, 20)]


@pytest.mark.parametrize("values, field", [
    ({"image": None}, "image"),
    ({"source": SOURCES[1], "files": []}, "files"),
    ({"source": SOURCES[2], "input_dir": ""}, "input_dir"),
    ({"source": SOURCES[2], "input_dir": "/no/such/folder"}, "input_dir"),
    ({"scale": 0}, "upscaling_resize"),
    ({"upscaler": "4x-Gone"}, "upscaler"),
])
def test_bad_input_shows_a_notice_naming_the_field(services, tmp_path, values, field):
    good = saved_picture(tmp_path / "ok.png")
    last = list(upscale_events(services, {**BASE, "image": good, **values}))[-1]
    assert f"<b>{field}</b>" in last["status"] and last["_warning"].startswith(field)


def test_a_corrupt_upload_is_named(services, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    last = list(upscale_events(services, {**BASE, "image": str(broken)}))[-1]
    assert "<b>image</b>" in last["status"] and "not a readable image" in last["status"]


def test_send_to_upscale_from_a_generation_and_from_png_info(tmp_path):
    path = saved_picture(tmp_path / "made.png")
    state = {"items": [{"image": path, "infotext": "x", "seed": 1, "subseed": -1, "grid": False}], "selected": 0}
    sent = send_image({"txt2img.result": state}, source="txt2img", target="upscale")
    assert sent["upscale.image"] == path and sent["upscale.source"] == SOURCES[0]
    assert "upscale.prompt" not in sent
    assert send_file_to_upscale({"pnginfo.image": path})["upscale.image"] == path
    assert "_warning" in send_file_to_upscale({"pnginfo.image": None})


def test_the_request_carries_every_choice(tmp_path):
    path = saved_picture(tmp_path / "x.png")
    request = request_from_values({**BASE, "image": path, "resize_mode": "Scale to", "width": 100, "height": 50,
                                   "crop": False, "upscaler_2": "Lanczos", "upscaler_2_visibility": 0.25,
                                   "tile_size": 128, "tile_overlap": 16})
    assert (request.resize_mode, request.width, request.height, request.crop) == (1, 100, 50, False)
    assert (request.upscaler_2, request.upscaler_2_visibility) == ("Lanczos", 0.25)
    assert (request.tile_size, request.tile_overlap) == (128, 16) and request.names == ("x.png",)
    assert np.asarray(request.images[0]).shape == (24, 40, 3)
