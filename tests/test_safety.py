"""The NSFW filter (issue 14) through the queue and the APIs on the tiny model, with tiny checkers whose verdict is
fixed: off leaves pixels alone, a checker that does not flag changes nothing, one that flags blurs or blacks the
image out and says so (infotext, Stability's CONTENT_FILTERED, A1111's ``info``, the native job), a key whose rule
says "always" filters without being asked and cannot be talked out of it, and asking with no checker installed
is refused naming the field."""

from __future__ import annotations

import base64
import json
import shutil
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from modules.errors import RequestError
from modules.safety import SafetyRule
from modules.safety.screen import obscure
from tests.api_studio import load
from tests.helpers import pixels, txt2img
from tests.tiny_safety import save_tiny_classifier, save_tiny_sd_checker

PLAIN_KEY = "sk-plain-0123456789abcdef"
GUARDED_KEY = "sk-guarded-0123456789abcdef"
DARK_KEY = "sk-dark-0123456789abcdefgh"
KEYS = {
    "tiers": {"guarded": {"safety": "blur", "safety_always": True}},
    "keys": [{"name": "plain", "key": PLAIN_KEY},
             {"name": "guarded", "tier": "guarded", "key": GUARDED_KEY},
             {"name": "dark", "key": DARK_KEY, "safety": "black"}],
}
FAST = {"steps": 3, "width": 64, "height": 64, "seed": 77}
NO_FILE = {"none": ("", b"")}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_store, one_thread):
    from app.api import create_api
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services
    from tests.api_server import serve_app

    root = tmp_path_factory.mktemp("safety")
    shutil.copytree(tiny_model_store, root / "models")
    keys = root / "keys.json"
    keys.write_text(json.dumps(KEYS))
    config = AppConfig(models_dir=root / "models", outdir=root / "outputs", data_dir=root / "data",
                       default_ckpt="tiny-sd1", preview_interval=1, api_keys_file=keys)
    services = build_services(config)
    services.start()
    try:
        with serve_app(create_api(services)) as server:
            services.url = server.url
            yield services
    finally:
        services.stop()


@pytest.fixture(scope="module")
def baseline(studio):
    """The unfiltered picture of ``FAST`` (no checker installed, filter off)."""
    install(studio, None)
    return studio.run(txt2img(**FAST), timeout=300).images[0]


def install(services, maker, flags: bool = False) -> None:
    """Put a fresh checker (or none) in the studio's models/safety_checker."""
    root = services.engine.safety.root
    shutil.rmtree(root, ignore_errors=True)
    if maker is not None:
        maker(root / "checker", flags=flags)


def api(services, key: str) -> httpx.Client:
    return httpx.Client(base_url=services.url, timeout=300, headers=bearer(key))


# -- the request field and the keys file -------------------------------------------------------------------------
def test_the_safety_field_is_checked_by_name_and_survives_the_job_store(tmp_path):
    from modules.image.codec import request_from_dict, request_to_dict
    from modules.image.request import GenerationRequest, Limits, validate_request

    request = GenerationRequest(prompt="a cat", safety="black")
    assert request_from_dict(request_to_dict(request, tmp_path), tmp_path).safety == "black"
    assert request_from_dict({"prompt": "an old record"}, tmp_path).safety is None  # rows from before the field
    with pytest.raises(RequestError) as error:
        validate_request(GenerationRequest(safety="pink"), Limits())
    assert error.value.field == "safety" and "off, blur, black" in error.value.message


def test_which_images_were_filtered_survives_the_job_store(tmp_path):
    from modules.image.codec import result_from_dict, result_to_dict
    from modules.image.results import GeneratedImage, GenerationResult

    images = [GeneratedImage(Image.new("RGB", (8, 8)), 1, 1, "p", "", "p\nSteps: 1", nsfw=flag)
              for flag in (True, False, None)]
    restored, problems = result_from_dict(result_to_dict(GenerationResult(images=images), tmp_path), tmp_path)
    assert not problems and [item.nsfw for item in restored.images] == [True, False, None]
    assert restored.filtered == [True, False, False]
    assert [item.parameters.get("nsfw") for item in restored.artifacts] == [True, False, None]


def test_keys_file_safety_rules_and_what_a_request_may_change():
    from app.api.keys import KeysFileError, parse_keys

    ring = parse_keys(KEYS)
    rules = {key.name: key.safety_rule for key in ring.keys}
    assert rules == {"plain": None, "guarded": SafetyRule("blur", True), "dark": SafetyRule("black", False)}
    always, default = rules["guarded"], rules["dark"]
    assert always.apply(None) == "blur" and always.apply("black") == "black" and always.apply("blur") == "blur"
    with pytest.raises(RequestError) as error:
        always.apply("off")
    assert error.value.field == "safety" and "always filters" in error.value.message
    assert default.apply(None) == "black" and default.apply("off") == "off"  # a default, not a rule
    with pytest.raises(KeysFileError, match="safety must be one of off, blur, black"):
        parse_keys({"tiers": {"t": {"safety": "pixelate"}}, "keys": []})
    with pytest.raises(KeysFileError, match="unknown field.*safety_alwyas"):
        parse_keys({"keys": [{"name": "x", "key": PLAIN_KEY, "safety_alwyas": True}]})


# -- through the queue -------------------------------------------------------------------------------------------
def test_asking_without_a_checker_installed_is_refused_naming_the_field_and_folder(studio, baseline):
    install(studio, None)
    with pytest.raises(RequestError) as error:
        studio.queue.submit(txt2img(**FAST, safety="blur"))
    assert error.value.field == "safety" and str(studio.engine.safety.root) in error.value.message
    with api(studio, GUARDED_KEY) as client:  # the key's rule asks for it: refused too, never passed unchecked
        response = client.post("/v2beta/stable-image/generate/core", files=NO_FILE, data={"prompt": "x"})
    assert response.status_code == 400 and response.json()["errors"][0].startswith("safety: ")
    with api(studio, PLAIN_KEY) as client:
        response = client.post("/api/v1/jobs", json={"prompt": "x", "safety": "black"})
    assert response.status_code == 422 and response.json()["field"] == "safety" and "safety_checker" in response.text


def test_off_and_a_checker_that_does_not_flag_leave_every_pixel(studio, baseline):
    install(studio, save_tiny_sd_checker, flags=False)
    off = studio.run(txt2img(**FAST), timeout=300).images[0]  # the studio's default: off
    checked = studio.run(txt2img(**FAST, safety="blur"), timeout=300).images[0]
    assert np.array_equal(pixels(off.image), pixels(baseline.image)) and off.nsfw is None
    assert np.array_equal(pixels(checked.image), pixels(baseline.image))
    assert checked.nsfw is False and checked.infotext == baseline.infotext


def test_a_flagging_checker_blurs_or_blacks_out_and_marks_the_infotext(studio, baseline):
    install(studio, save_tiny_sd_checker, flags=True)
    off = studio.run(txt2img(**FAST), timeout=300).images[0]
    assert np.array_equal(pixels(off.image), pixels(baseline.image))  # off: the checker is not even asked
    result = studio.run(txt2img(**FAST, safety="blur"), timeout=300)
    blurred = result.images[0]
    assert blurred.nsfw is True and result.filtered == [True]
    assert np.array_equal(pixels(blurred.image), pixels(obscure(baseline.image, "blur")))
    assert pixels(blurred.image).std() < pixels(baseline.image).std() / 2
    assert "NSFW: filtered (blur), Version: " in blurred.infotext
    saved = Image.open(blurred.path)  # what reached the outputs folder is the filtered picture
    assert np.array_equal(pixels(saved), pixels(blurred.image))
    assert "NSFW: filtered (blur)" in saved.info["parameters"]

    install(studio, save_tiny_classifier, flags=True)  # a transformers classifier works the same way
    black = studio.run(txt2img(**FAST, safety="black", batch_size=2), timeout=300)
    assert black.filtered == [True, True]
    assert all(not pixels(item.image).any() for item in black.images)
    assert not pixels(black.grid.image).any()  # the grid is made of the filtered images
    assert "NSFW: filtered (black)" in black.images[1].infotext


def test_the_settings_default_filters_what_the_ui_and_anonymous_callers_send(studio, baseline):
    from app.ui.settings_tab import save_settings

    assert "safety must be one of" in save_settings(studio.settings, {"safety": "pink"})["status"]
    install(studio, save_tiny_sd_checker, flags=True)
    save_settings(studio.settings, {"safety": "black"})
    try:
        job = studio.queue.submit(txt2img(**FAST))  # no owner, no safety field: the studio's default
        assert job.request.safety == "black"  # resolved at submission: the stored job says what runs
        assert not pixels(studio.queue.wait(job, 300).images[0].image).any()
    finally:
        studio.settings.set("safety", "off")


# -- through the APIs --------------------------------------------------------------------------------------------
def test_stability_answers_content_filtered_for_a_key_whose_rule_filters(studio, baseline):
    install(studio, save_tiny_sd_checker, flags=True)
    form = {"prompt": "a lighthouse", "seed": "77", "steps": "3"}
    with api(studio, GUARDED_KEY) as client:
        as_image = client.post("/v2beta/stable-image/generate/core", headers={"accept": "image/*"}, files=NO_FILE,
                               data=form)
        as_json = client.post("/v2beta/stable-image/generate/core", headers={"accept": "application/json"},
                              files=NO_FILE, data=form)
    assert as_image.status_code == 200, as_image.text
    assert as_image.headers["finish-reason"] == "CONTENT_FILTERED"
    assert "NSFW: filtered (blur)" in load(as_image.content).info["parameters"]
    assert as_json.json()["finish_reason"] == "CONTENT_FILTERED"
    with api(studio, PLAIN_KEY) as client:  # no rule on this key: the studio's default, off
        plain = client.post("/v2beta/stable-image/generate/core", headers={"accept": "image/*"}, files=NO_FILE,
                            data=form)
    assert plain.headers["finish-reason"] == "SUCCESS" and "NSFW" not in load(plain.content).info["parameters"]
    guarded, unguarded = pixels(load(as_image.content)), pixels(load(plain.content))
    assert np.array_equal(guarded, pixels(obscure(load(plain.content).convert("RGB"), "blur")))
    assert not np.array_equal(guarded, unguarded)


def test_a1111_info_and_the_native_job_say_which_images_were_filtered(studio, baseline):
    install(studio, save_tiny_sd_checker, flags=True)
    with api(studio, GUARDED_KEY) as client:
        a1111 = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", **FAST, "batch_size": 2})
        refused = client.post("/api/v1/jobs", json={"prompt": "a cat", **FAST, "safety": "off"})
    assert a1111.status_code == 200, a1111.text
    info = json.loads(a1111.json()["info"])
    assert info["nsfw"] == [True, True] and all("NSFW: filtered (blur)" in text for text in info["infotexts"])
    assert refused.status_code == 422 and refused.json()["field"] == "safety"

    with api(studio, DARK_KEY) as client:  # the key's default (black) without asking ...
        dark = wait_ended(client, client.post("/api/v1/jobs", json={"prompt": "a cat", **FAST}).json()["id"])
        # ... and, as it is only a default, the request may switch it off
        clear = wait_ended(client, client.post("/api/v1/jobs", json={"prompt": "a cat", **FAST,
                                                                     "safety": "off"}).json()["id"])
        images = client.get(f"/api/v1/jobs/{dark['id']}/images", params={"encoding": "base64"}).json()["images"]
    assert dark["state"] == "done" and dark["result"]["nsfw"] == [True]
    assert images[0]["nsfw"] is True and not pixels(load(base64.b64decode(images[0]["image"]))).any()
    assert clear["result"]["nsfw"] == [False]
    # a filtered job shows no live preview (it would be the unchecked picture); an unfiltered one does
    assert not studio.queue.get(dark["id"]).progress.has_preview
    assert studio.queue.get(clear["id"]).progress.has_preview


def wait_ended(client: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/api/v1/jobs/{job_id}").json()
        if view["state"] in ("done", "failed", "cancelled"):
            return view
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end")
