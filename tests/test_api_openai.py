"""The OpenAI images dialect, driven by the official ``openai`` client with ``base_url`` pointed at a running
studio on the tiny model: generations, edits with a mask, URLs, and errors the client raises as BadRequestError."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.api_studio import file_bytes, load, picture, running_studio
from tests.helpers import pixels

openai = pytest.importorskip("openai")

FAST = {"steps": 3}  # Sfumato's own field, passed the way the client passes extras


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_store):
    with running_studio(tmp_path_factory.mktemp("openai"), tiny_model_store) as running:
        yield running


@pytest.fixture
def client(studio):
    return openai.OpenAI(base_url=f"{studio.url}/v1", api_key="sk-local", max_retries=0, timeout=300)


def decoded(item) -> Image.Image:
    return load(base64.b64decode(item.b64_json))


def edit_mask(size=(64, 64), box=(16, 16, 48, 48)) -> Image.Image:
    """OpenAI's convention: opaque = keep, transparent = the area to edit."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), box)
    return mask


def test_generate_n_images_as_base64(client, studio):
    result = client.images.generate(model="sfumato", prompt="a red circle", size="64x64", n=2,
                                    response_format="b64_json", extra_body=FAST)
    assert result.created > 0 and len(result.data) == 2
    first, second = (decoded(item) for item in result.data)
    assert first.size == second.size == (64, 64) and first.format == "PNG"
    assert "Steps: 3" in first.info["parameters"]
    assert np.abs(pixels(first) - pixels(second)).mean() > 1.0  # two seeds, two pictures
    job, _ = studio.services.queue.history(limit=1)
    assert job[0].source == "openai" and job[0].request.batch_size == 2


def test_openai_model_names_mean_the_default_and_urls_serve_the_file(client):
    result = client.images.generate(model="dall-e-2", prompt="a blue square", size="64x64",
                                    response_format="url", output_format="jpeg", extra_body=FAST)
    assert result.data[0].b64_json is None and result.data[0].url.startswith("http://127.0.0.1")
    fetched = httpx.get(result.data[0].url, timeout=30)
    assert fetched.headers["content-type"] == "image/jpeg" and load(fetched.content).size == (64, 64)


def test_edit_with_a_mask_changes_only_the_transparent_area(client, tmp_path):
    original = picture()
    (tmp_path / "image.png").write_bytes(file_bytes(original))
    (tmp_path / "mask.png").write_bytes(file_bytes(edit_mask()))
    with open(tmp_path / "image.png", "rb") as image, open(tmp_path / "mask.png", "rb") as mask:
        result = client.images.edit(image=image, mask=mask, prompt="a green leaf", size="64x64", extra_body=FAST)
    edited = decoded(result.data[0])
    assert edited.size == (64, 64)
    before, after = pixels(original), pixels(edited)
    outside = np.ones((64, 64), dtype=bool)
    outside[16:48, 16:48] = False
    assert np.array_equal(before[outside], after[outside])
    assert np.abs(before[~outside] - after[~outside]).mean() > 1.0


def test_edit_without_a_mask_uses_the_image_transparency(client, tmp_path):
    image = picture().convert("RGBA")
    image.paste((0, 0, 0, 0), (0, 0, 32, 64))
    path = tmp_path / "transparent.png"
    path.write_bytes(file_bytes(image))
    with open(path, "rb") as handle:
        result = client.images.edit(image=[handle], prompt="sky", n=1, extra_body=FAST)
    edited = pixels(decoded(result.data[0]))
    assert np.array_equal(edited[:, 32:], pixels(image)[:, 32:])


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"size": "65x64"}, "size"),
    ({"size": "huge"}, "size"),
    ({"size": "8192x8192"}, "size"),
    ({"n": 50}, "n"),
    ({"response_format": "svg"}, "response_format"),
    ({"model": "sfumato", "extra_body": {"steps": "lots"}}, "steps"),
    ({"extra_body": {"sampler_name": "Nonexistent"}}, "sampler_name"),
])
def test_bad_generation_raises_bad_request_naming_the_param(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="x", **kwargs)
    assert caught.value.status_code == 400 and caught.value.param == param
    assert caught.value.type == "invalid_request_error" and param in caught.value.message


def test_bad_edits_raise_bad_request_then_a_good_one_still_works(client, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(file_bytes(picture()))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    small_mask = tmp_path / "small.png"
    small_mask.write_bytes(file_bytes(edit_mask((32, 32), (8, 8, 16, 16))))
    opaque_mask = tmp_path / "opaque.png"
    opaque_mask.write_bytes(file_bytes(Image.new("RGB", (64, 64), "white")))
    cases = [({"image": corrupt}, "image"), ({"image": good, "mask": small_mask}, "mask"),
             ({"image": good, "mask": opaque_mask}, "mask")]
    for files, param in cases:
        handles = {name: open(path, "rb") for name, path in files.items()}  # noqa: SIM115 (closed below)
        try:
            with pytest.raises(openai.BadRequestError) as caught:
                client.images.edit(prompt="x", extra_body=FAST, **handles)
        finally:
            for handle in handles.values():
                handle.close()
        assert caught.value.param == param, caught.value.message
    with pytest.raises(openai.BadRequestError) as no_prompt:
        client.post("/images/generations", body={"size": "64x64"}, cast_to=object)
    assert no_prompt.value.param == "prompt" and "Missing required parameter" in no_prompt.value.message
    with open(good, "rb") as handle:
        result = client.images.edit(image=handle, prompt="fine", extra_body=FAST)
    assert decoded(result.data[0]).size == (64, 64)


def test_malformed_json_and_missing_image_are_openai_shaped_400s(studio):
    response = httpx.post(f"{studio.url}/v1/images/generations", content="{not json",
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "JSON" in error["message"] and error["param"] is None
    response = httpx.post(f"{studio.url}/v1/images/edits", data={"prompt": "x"}, files={"note": ("a.txt", b"x")},
                          timeout=30)
    assert response.status_code == 400 and response.json()["error"]["param"] == "image"
