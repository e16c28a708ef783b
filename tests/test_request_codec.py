"""A request written to JSON (its images to PNG files) and read back is the same request, pixels included."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.errors import RequestError
from modules.image.codec import request_from_dict, request_to_dict
from modules.image.request import GenerationRequest, HiresFix, Outpaint


def picture(mode: str = "RGBA") -> Image.Image:
    image = Image.new(mode, (40, 24), (10, 200, 30, 128)[: len(mode)])
    ImageDraw.Draw(image).rectangle((5, 5, 20, 15), fill=(250, 0, 90, 255)[: len(mode)])
    return image


def scalar_fields(request: GenerationRequest) -> dict:
    return {item.name: getattr(request, item.name) for item in dataclasses.fields(request)
            if item.name not in ("init_image", "mask")}


def test_round_trip_keeps_every_field_and_the_pixels(tmp_path):
    mask = Image.new("L", (40, 24), 0)
    ImageDraw.Draw(mask).ellipse((10, 4, 30, 20), fill=255)
    request = GenerationRequest(
        task="inpaint", prompt="a ✨ lantern", negative_prompt="blur", styles=("warm", "film"), model="tiny-sd1",
        sampler_name="DPM++ 2M", scheduler="Karras", steps=7, cfg_scale=5.5, width=64, height=48, seed=2**32 - 1,
        subseed=3, subseed_strength=0.25, batch_size=2, n_iter=3, init_image=picture(), mask=mask,
        denoising_strength=0.4, inpaint_full_res=True, outpaint=Outpaint(left=8, bottom=16),
        hires=HiresFix(scale=1.5, upscaler="Lanczos", steps=3, resize_x=96), save_images=False,
        output_format="webp", extensions={"xyz": {"axes": [["Seed", [1, 2]]], "on": True}},
    )
    data = request_to_dict(request, tmp_path)
    text = json.dumps(data)  # JSON-safe as it is
    assert (data["init_image"], data["mask"]) == ("init.png", "mask.png")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["init.png", "mask.png"]

    again = request_from_dict(json.loads(text), tmp_path)
    assert scalar_fields(again) == scalar_fields(request)
    assert again.styles == ("warm", "film") and isinstance(again.hires, HiresFix) and again.outpaint.bottom == 16
    assert again.init_image.mode == "RGBA" and again.mask.mode == "L"
    assert np.array_equal(np.asarray(again.init_image), np.asarray(request.init_image))
    assert np.array_equal(np.asarray(again.mask), np.asarray(mask))


def test_a_request_without_images_writes_no_file_and_defaults_survive(tmp_path):
    request = GenerationRequest(prompt="plain")
    data = request_to_dict(request, tmp_path / "job")
    assert data["init_image"] is None and data["hires"] is None
    assert not (tmp_path / "job").exists()
    again = request_from_dict(data, tmp_path / "job")
    assert scalar_fields(again) == scalar_fields(request) and again.init_image is None


def test_unknown_keys_are_ignored_and_missing_ones_take_defaults(tmp_path):
    old = {"prompt": "from an older version", "steps": 9, "restore_faces": True,
           "hires": {"scale": 2.0, "sharpness": 3}, "outpaint": {"left": 8, "feather": 2}}
    request = request_from_dict(old, tmp_path)
    # A missing CFG is "the model's default" (None), filled in from the model's family when the job runs.
    assert (request.prompt, request.steps, request.cfg_scale) == ("from an older version", 9, None)
    assert request.hires == HiresFix(scale=2.0) and request.outpaint == Outpaint(left=8)


def test_a_mode_png_cannot_hold_is_stored_as_rgb(tmp_path):
    cmyk = picture("RGB").convert("CMYK")
    data = request_to_dict(GenerationRequest(task="img2img", init_image=cmyk), tmp_path)
    again = request_from_dict(data, tmp_path)
    assert again.init_image.mode == "RGB" and again.init_image.size == (40, 24)


def test_a_missing_or_damaged_image_names_its_field_or_is_left_out(tmp_path):
    data = request_to_dict(GenerationRequest(task="img2img", init_image=picture()), tmp_path)
    (tmp_path / "init.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(RequestError) as caught:
        request_from_dict(data, tmp_path)
    assert caught.value.field == "init_image" and "cannot be read" in caught.value.message
    assert request_from_dict(data, tmp_path, strict=False).init_image is None

    (tmp_path / "init.png").unlink()
    with pytest.raises(RequestError, match="init_image"):
        request_from_dict(data, tmp_path)
    escaping = {**data, "init_image": "../../etc/passwd"}
    with pytest.raises(RequestError, match="outside"):
        request_from_dict(escaping, tmp_path)
