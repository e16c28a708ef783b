"""Transparency means the same thing everywhere: a palette PNG with one transparent colour is an inpaint mask for
the native API and OpenAI's edits, like an RGBA image is."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from modules.image.masks import alpha_of, binary_mask, flatten, has_transparency, mask_from_transparency, storable
from modules.image.request import GenerationRequest, Limits, validate_request


def palette_with_a_hole(size: int = 64) -> Image.Image:
    """A 'P' image whose colour 0 is transparent: a see-through square in a blue picture."""
    image = Image.new("P", (size, size), 1)
    image.putpalette([0, 0, 0, 40, 90, 200] + [0, 0, 0] * 254)
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill=0)
    image.info["transparency"] = 0
    return image


def png_round_trip(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("image, transparent", [
    (palette_with_a_hole(), True),
    (png_round_trip(palette_with_a_hole()), True),
    (Image.new("RGBA", (8, 8), (1, 2, 3, 0)), True),
    (Image.new("RGBA", (8, 8), (1, 2, 3, 255)), False),
    (Image.new("LA", (8, 8), (9, 100)), True),
    (Image.new("RGB", (8, 8)), False),
])
def test_every_form_of_transparency_is_seen(image, transparent):
    assert has_transparency(image) is transparent


def test_the_hole_of_a_palette_image_is_the_mask_and_flattens_to_black():
    image = palette_with_a_hole()
    mask = np.asarray(mask_from_transparency(image))
    assert mask[32, 32] == 255 and mask[2, 2] == 0 and (mask == 255).sum() == 32 * 32
    assert np.asarray(alpha_of(image))[32, 32] == 0
    flat = np.asarray(flatten(image))
    assert tuple(flat[32, 32]) == (0, 0, 0) and tuple(flat[2, 2]) == (40, 90, 200)
    assert np.array_equal(np.asarray(binary_mask(image)), 255 - mask)  # a mask image: its opaque part
    assert storable(Image.new("CMYK", (2, 2)), "png").mode == "RGB"
    assert storable(image, "webp").mode == "RGBA"


def test_inpaint_without_a_mask_accepts_a_palette_image_with_a_transparent_colour():
    validate_request(GenerationRequest(task="inpaint", init_image=palette_with_a_hole()), Limits())


def _wait(api: TestClient, job_id: str) -> dict:
    deadline = time.time() + 120
    while time.time() < deadline:
        job = api.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError("the job did not end")


def test_native_jobs_and_openai_edits_inpaint_a_palette_png(services):
    from app.api import create_api

    buffer = io.BytesIO()
    palette_with_a_hole().save(buffer, format="PNG")
    data = buffer.getvalue()
    with TestClient(create_api(services), base_url="http://127.0.0.1") as api:
        answer = api.post("/api/v1/jobs", json={"task": "inpaint", "prompt": "a red circle", "steps": 2,
                                                "init_image": base64.b64encode(data).decode("ascii"), "seed": 3})
        assert answer.status_code == 202, answer.text
        job = _wait(api, answer.json()["id"])
        assert job["state"] == "done", job
        edit = api.post("/v1/images/edits", files={"image": ("hole.png", data, "image/png")},
                        data={"prompt": "a red circle", "size": "64x64", "steps": "2"})
        assert edit.status_code == 200, edit.text
        assert len(edit.json()["data"]) == 1
