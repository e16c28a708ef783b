"""The A1111 dialect (``/sdapi/v1``) over real HTTP, driven by the unmodified ``webuiapi`` client and by raw
requests for what a well-behaved client never sends; the real engine runs the tiny models behind it."""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.api_server import RunningServer
from tests.api_studio import running_studio
from tests.helpers import pixels

webuiapi = pytest.importorskip("webuiapi")

TINY = dict(width=64, height=64, steps=2, sampler_name="Euler")
INFO_FIELDS = ("prompt", "all_prompts", "negative_prompt", "seed", "all_seeds", "subseed", "all_subseeds", "width",
               "height", "sampler_name", "cfg_scale", "steps", "batch_size", "sd_model_name", "sd_model_hash",
               "infotexts", "index_of_first_image")


@dataclass
class Studio:
    services: Any
    server: RunningServer

    def url(self, route: str) -> str:
        return f"{self.server.url}/sdapi/v1/{route}"

    def title(self, name: str) -> str:
        return self.services.engine.registry.find(name).title

    def client(self) -> Any:
        return webuiapi.WebUIApi(host=self.server.host, port=self.server.port)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_store):
    """One running API on the tiny models for the whole module (loading a model once keeps it quick)."""
    with running_studio(tmp_path_factory.mktemp("a1111"), tiny_model_store) as running:
        yield Studio(running.services, running.server)


@pytest.fixture(autouse=True)
def _restore_options(studio):
    """Tests may change the saved options and the default model; the next test starts from the launch state."""
    before = studio.services.settings.all()
    yield
    after = studio.services.settings.all()
    studio.services.settings.update({key: before.get(key) for key in after if after[key] != before.get(key)})


@pytest.fixture
def client(studio):
    return studio.client()




def picture() -> Image.Image:
    image = Image.new("RGB", (64, 64), (40, 90, 200))
    ImageDraw.Draw(image).ellipse((8, 8, 40, 40), fill=(230, 20, 20))
    return image


def b64(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def post(studio: Studio, route: str, payload: Any = None, content: str | None = None) -> httpx.Response:
    if content is not None:
        return httpx.post(studio.url(route), content=content, headers={"content-type": "application/json"},
                          timeout=120)
    return httpx.post(studio.url(route), json=payload, timeout=120)


# -- generation through webuiapi --------------------------------------------------------------------------------


def test_txt2img_returns_png_with_infotext_and_a_reproducible_seed(client, studio):
    result = client.txt2img(prompt="a red circle", negative_prompt="blurry", seed=1234, **TINY)
    again = client.txt2img(prompt="a red circle", negative_prompt="blurry", seed=1234, **TINY)
    other = client.txt2img(prompt="a red circle", negative_prompt="blurry", seed=99, **TINY)

    assert len(result.images) == 1 and result.image.size == (64, 64)
    info = result.info
    assert all(field in info for field in INFO_FIELDS)
    assert info["seed"] == 1234 and info["all_seeds"] == [1234]
    assert info["sd_model_name"] == "tiny-sd1" and info["sampler_name"] == "Euler" and info["steps"] == 2
    assert result.image.info["parameters"] == info["infotexts"][0]
    assert "Negative prompt: blurry" in info["infotexts"][0] and "Seed: 1234" in info["infotexts"][0]
    assert result.parameters["prompt"] == "a red circle" and result.parameters["seed"] == 1234
    assert np.array_equal(pixels(result.image), pixels(again.image))
    assert np.abs(pixels(result.image) - pixels(other.image)).mean() > 1.0
    assert not result.json["images"][0].startswith("data:")


def test_batch_returns_the_grid_first_as_info_says(client):
    result = client.txt2img(prompt="dots", seed=500, batch_size=2, **TINY)
    assert result.info["index_of_first_image"] == 1 and result.info["all_seeds"] == [500, 501]
    assert [image.size for image in result.images] == [(128, 64), (64, 64), (64, 64)]


def test_override_settings_apply_to_that_request_only(client, studio):
    inpainting = studio.title("tiny-sd1-inpainting")
    overridden = client.txt2img(prompt="x", seed=3, override_settings={"sd_model_checkpoint": inpainting,
                                                                       "CLIP_stop_at_last_layers": 2}, **TINY)
    plain = client.txt2img(prompt="x", seed=3, **TINY)
    assert overridden.info["sd_model_name"] == "tiny-sd1-inpainting" and overridden.info["clip_skip"] == 2
    assert "Clip skip: 2" in overridden.info["infotexts"][0]
    assert plain.info["sd_model_name"] == "tiny-sd1" and plain.info["clip_skip"] == 1
    assert client.get_options()["sd_model_checkpoint"] == studio.title("tiny-sd1")


def test_options_switch_the_default_model_for_later_requests(client, studio):
    options = client.get_options()
    assert options["sd_model_checkpoint"] == studio.title("tiny-sd1")
    assert options["sd_vae"] == "Automatic" and options["CLIP_stop_at_last_layers"] == 1
    assert options["samples_format"] == "png"

    inpainting = studio.title("tiny-sd1-inpainting")
    client.util_set_model("tiny-sd1-inpainting")  # webuiapi's helper: sd-models, then POST options
    assert client.util_get_current_model() == inpainting
    assert studio.services.settings.get("sd_model_checkpoint") == inpainting
    assert client.txt2img(prompt="x", seed=1, **TINY).info["sd_model_name"] == "tiny-sd1-inpainting"

    client.set_options({"sd_model_checkpoint": "tiny-sd1", "CLIP_stop_at_last_layers": 2, "samples_format": "jpg",
                        "some_a1111_option_we_do_not_have": True})
    options = client.get_options()
    assert options["sd_model_checkpoint"] == studio.title("tiny-sd1")
    assert options["samples_format"] == "jpeg" and options["output_format"] == "jpeg"
    later = client.txt2img(prompt="x", seed=1, **TINY)
    assert later.info["sd_model_name"] == "tiny-sd1" and later.info["clip_skip"] == 2


def test_img2img_with_a_mask_inpaints_and_keeps_unmasked_pixels(client):
    image = picture()
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((32, 32, 55, 55), fill=255)
    result = client.img2img(images=[image], mask_image=mask, prompt="a green square", seed=5, denoising_strength=1.0,
                            mask_blur=4, **TINY)
    out = result.image
    keep = np.asarray(mask) == 0
    assert out.size == (64, 64)
    assert np.array_equal(pixels(out)[keep], pixels(image)[keep])
    assert np.abs(pixels(out)[~keep] - pixels(image)[~keep]).mean() > 1.0
    infotext = result.info["infotexts"][0]
    assert "Mask blur: 4" in infotext and "Inpaint area: Only masked" in infotext  # webuiapi's inpaint_full_res
    assert result.parameters["init_images"] is None and result.parameters["mask"] is None


def test_img2img_accepts_raw_base64_and_changes_the_image(studio):
    image = picture()
    response = post(studio, "img2img", {"init_images": [b64(image)], "prompt": "x", "seed": 2,
                                        "denoising_strength": 0.9, **TINY})
    assert response.status_code == 200, response.text
    body = response.json()
    out = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert out.size == (64, 64)
    assert np.abs(pixels(out) - pixels(image)).mean() > 1.0
    assert json.loads(body["info"])["denoising_strength"] == 0.9


def test_png_info_reads_back_the_infotext(client):
    made = client.txt2img(prompt="a quiet lake", seed=42, cfg_scale=5, **TINY).image
    made.info["comment"] = "hello"  # webuiapi re-sends every text chunk of the image
    answer = client.png_info(made)
    assert answer.info == made.info["parameters"]
    parsed = answer.parameters
    assert parsed["Prompt"] == "a quiet lake" and parsed["Seed"] == "42" and parsed["CFG scale"] == "5"
    assert parsed["Size-1"] == "64" and parsed["Sampler"] == "Euler"
    assert answer.json["items"] == {"comment": "hello"}


def test_send_images_false_and_save_images(studio):
    outputs = studio.services.config.outdir
    before = len(list(outputs.rglob("*.png"))) if outputs.exists() else 0
    quiet = post(studio, "txt2img", {"prompt": "x", "send_images": False, **TINY})
    assert quiet.status_code == 200 and quiet.json()["images"] == []
    assert (len(list(outputs.rglob("*.png"))) if outputs.exists() else 0) == before  # API default: not saved
    saved = post(studio, "txt2img", {"prompt": "x", "save_images": True, **TINY})
    assert saved.status_code == 200
    assert len(list(outputs.rglob("*.png"))) == before + 1


def test_unknown_and_null_fields_are_ignored(studio):
    payload = {"prompt": None, "negative_prompt": None, "steps": None, "hr_upscaler": None, "eta": 1.0,
               "s_churn": 0, "sampler_index": "Euler a", "sampler_name": None, "scheduler": "automatic",
               "alwayson_scripts": {"ControlNet": {"args": []}}, "brand_new_field": {"x": [1]},
               "width": 64, "height": 64, "seed": 1}
    response = post(studio, "txt2img", payload)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["sampler_name"] == "Euler a" and info["steps"] == 50  # sampler_index used; the API's 50 steps


# -- progress, interrupt, skip ------------------------------------------------------------------------------------


def test_progress_is_idle_between_jobs(client):
    progress = client.get_progress()
    assert progress["progress"] == 0 and progress["current_image"] is None
    assert progress["state"]["job_count"] == 0 and progress["state"]["interrupted"] is False


def wait_for(check, timeout: float = 120.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_progress_skip_and_interrupt_act_on_the_running_job(studio, client):
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(
        client.txt2img(prompt="long", seed=8, n_iter=20, steps=150, width=64, height=64)))
    worker.start()
    try:
        running = wait_for(lambda: (p := client.get_progress())["state"]["sampling_step"] > 1 and p)
        state = running["state"]
        assert state["job_count"] == 20 and state["sampling_steps"] == 150 and state["job_no"] == 0
        assert 0 < running["progress"] < 1 and running["eta_relative"] > 0 and running["current_task"]
        with_image = wait_for(lambda: (p := client.get_progress())["current_image"] and p)
        assert Image.open(io.BytesIO(base64.b64decode(with_image["current_image"]))).size == (64, 64)
        no_image = httpx.get(studio.url("progress"), params={"skip_current_image": "true"}).json()
        assert no_image["current_image"] is None

        client.skip()  # ends the running batch only; the job goes on with the next
        wait_for(lambda: client.get_progress()["state"]["job_no"] >= 1)
        assert client.interrupt() == {}
        worker.join(120)
    finally:
        studio.services.queue.interrupt_current()
        worker.join(120)
    assert len(results) == 1
    result = results[0]
    assert 2 <= len(result.info["all_seeds"]) < 20
    assert client.get_progress()["state"]["job_count"] == 0


# -- listings ---------------------------------------------------------------------------------------------------


def test_model_and_sampler_listings(client, studio):
    models = client.get_sd_models()
    by_name = {model["model_name"]: model for model in models}
    tiny = by_name["tiny-sd1"]
    assert tiny["title"] == f"tiny-sd1 [{tiny['sha256'][:10]}]" and tiny["hash"] == tiny["sha256"][:10]
    assert tiny["filename"].endswith("tiny-sd1") and tiny["config"] is None
    assert "tiny-sd1" in client.util_get_model_names()[0]

    samplers = client.get_samplers()
    assert {"name": "Euler", "aliases": ["k_euler"], "options": {}} in samplers
    assert "DPM++ 2M" in client.util_get_sampler_names()
    schedulers = client.get_schedulers()
    assert {"name", "label", "aliases", "default_rho", "need_inner_model"} <= set(schedulers[0])
    assert "karras" in client.util_get_scheduler_names()
    upscalers = {item["name"]: item for item in client.get_upscalers()}
    assert {"None", "Lanczos", "Nearest", "2x-TinyCompact", "4x-TinyCompact"} <= set(upscalers)
    assert "Latent" not in upscalers  # latent modes are listed apart, as A1111 does
    assert set(upscalers["Lanczos"]) == {"name", "model_name", "model_path", "model_url", "scale"}
    assert {"name": "Latent"} in client.get_latent_upscale_modes()



def test_new_a1111_samplers_run_and_refused_ones_are_named(client, studio):
    """Issue 13: the samplers diffusers can express run through the API; the others are a 400 saying why."""
    listed = {item["name"] for item in client.get_samplers()}
    assert {"DPM++ 3M SDE", "DPM++ 2M SDE Heun"} <= listed
    assert not listed & {"Restart", "DPM fast", "DPM adaptive", "DPM++ 2S a", "DDIM CFG++"}
    labels = {item["label"] for item in client.get_schedulers()}
    assert {"Normal", "DDIM", "Polyexponential", "KL Optimal", "Align Your Steps"} <= labels

    result = client.txt2img(prompt="a red circle", seed=3, **{**TINY, "sampler_name": "DPM++ 3M SDE",
                                                               "scheduler": "Normal"})
    assert "Sampler: DPM++ 3M SDE" in result.info["infotexts"][0]
    written = "a [red:blue:0.5] circle AND a square :0.5"
    result = client.txt2img(prompt=written, seed=3, **{**TINY, "scheduler": "align_your_steps"})
    assert result.info["infotexts"][0].startswith(written + "\n")  # the prompt as written
    assert "Sampler: Euler, Schedule type: Align Your Steps," in result.info["infotexts"][0]

    for field, value, name in [("sampler_name", "Restart", "Restart"), ("sampler_name", "DPM fast", "DPM fast"),
                               ("scheduler", "align_your_steps", "Align Your Steps")]:
        # a computed sigma list needs a sampler that takes one (Euler): with DPM++ 2M it is refused, named
        response = post(studio, "txt2img", {**TINY, "sampler_name": "DPM++ 2M", field: value})
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["field"] == field and name in body["detail"] and "not available" in body["detail"], body

def test_file_listings_follow_the_models_folder(client, studio):
    models_dir = studio.services.config.models_dir
    (models_dir / "Lora").mkdir(exist_ok=True)
    (models_dir / "Lora" / "ink.safetensors").write_bytes(b"\0")
    (models_dir / "embeddings").mkdir(exist_ok=True)
    (models_dir / "embeddings" / "bad-hands.pt").write_bytes(b"\0")
    assert [lora["name"] for lora in client.get_loras()] == ["ink"]
    embeddings = client.get_embeddings()
    assert embeddings["loaded"] == {} and set(embeddings["skipped"]) == {"bad-hands"}
    skipped = embeddings["skipped"]["bad-hands"]
    assert skipped["vectors"] == 0 and "bad-hands.pt" in skipped["reason"]
    assert client.get_sd_vae() == []

    shutil.copytree(models_dir / "Stable-diffusion" / "tiny-sd1", models_dir / "Stable-diffusion" / "copy")
    assert "copy" not in [model["model_name"] for model in client.get_sd_models()]
    assert client.refresh_checkpoints() is None
    assert "copy" in [model["model_name"] for model in client.get_sd_models()]


def test_loras_and_embeddings_routes_and_a_lora_in_txt2img(client, studio, network_files):
    models_dir = studio.services.config.models_dir
    for folder in ("Lora", "embeddings"):
        shutil.copytree(network_files / folder, models_dir / folder, dirs_exist_ok=True)
    loras = {item["name"]: item for item in httpx.get(studio.url("loras")).json()}
    assert {"peftstyle", "kohyastyle", "other", "xl-only"} <= set(loras)
    assert set(loras["kohyastyle"]) == {"name", "alias", "path", "metadata"}
    assert loras["kohyastyle"]["metadata"]["ss_output_name"] == "kohyastyle"
    assert loras["other"]["path"].endswith("sub/other.safetensors")
    for route in ("refresh-loras", "refresh-embeddings"):
        assert httpx.post(studio.url(route)).status_code == 200

    result = client.txt2img(prompt="a red circle <lora:peftstyle:0.9>, shinyemb", seed=5, **TINY)
    assert "Lora hashes" in result.info["infotexts"][0] and "TI hashes" in result.info["infotexts"][0]
    embeddings = httpx.get(studio.url("embeddings")).json()  # a model is loaded now: shapes are checked
    assert embeddings["loaded"]["shinyemb"] == {"step": 1000, "sd_checkpoint": "0123456789",
                                                "sd_checkpoint_name": "tiny", "shape": 64, "vectors": 2}
    assert "another architecture" in embeddings["skipped"]["xlemb"]["reason"]

    response = httpx.post(studio.url("txt2img"), json={"prompt": "a cat <lora:nope:1>", **TINY}, timeout=60)
    assert 400 <= response.status_code < 500
    assert "nope" in response.text and "prompt" in response.text


def test_styles_memory_flags_and_scripts(client, studio):
    from modules.image.styles import Style

    studio.services.engine.styles.save(Style("moody", "{prompt}, dark", "sunny"))
    assert {"name": "moody", "prompt": "{prompt}, dark", "negative_prompt": "sunny"} in client.get_prompt_styles()
    styled = client.txt2img(prompt="a cat", styles=["moody"], seed=1, **TINY)
    assert styled.info["prompt"] == "a cat, dark" and styled.info["negative_prompt"] == "sunny"

    memory = client.get_memory()
    assert memory["ram"]["total"] >= memory["ram"]["used"] > 0 and "cuda" in memory
    flags = client.get_cmd_flags()
    assert flags["default_ckpt"] == "tiny-sd1" and flags["limits"]["max_steps"] == 150
    # the built-in X/Y/Z plot is a selectable script, with its positional arguments named
    assert client.get_scripts() == {"txt2img": ["controlnet", "x/y/z plot"], "img2img": ["controlnet", "x/y/z plot"]}
    info = httpx.get(studio.url("script-info")).json()
    xyz = next(entry for entry in info if entry["name"] == "x/y/z plot" and not entry["is_img2img"])
    assert [arg["label"] for arg in xyz["args"]][:3] == ["X type", "X values", "X values"]
    assert len(xyz["args"]) == 18 and xyz["args"][-2]["label"] == "Grid margins (px)"
    # a client resolves an axis label to the index it sends, per tab, as with A1111 (Steps is 4 in both tabs;
    # "Hires steps" exists only in txt2img, so "CFG Scale" is 6 in txt2img and 5 in img2img)
    for entry, cfg_index in ((xyz, 6), (next(entry for entry in info if entry["is_img2img"]), 5)):
        choices = entry["args"][0]["choices"]
        assert choices.index("Steps") == 4 and choices.index("CFG Scale") == cfg_index
    steps_by_label = client.txt2img(prompt="a red circle", steps=2, width=64, height=64, script_name="x/y/z plot",
                                    script_args=[xyz["args"][0]["choices"].index("Steps"), "2,3"])
    assert len(steps_by_label.images) >= 2
    rows = httpx.get(studio.url("extensions")).json()
    assert {"name": "xyz_plot", "enabled": True, "status": "active", "source": "built-in"}.items() <= next(
        row for row in rows if row["name"] == "xyz_plot").items()


def test_cmd_flags_never_show_passwords(studio):
    import dataclasses

    from app.api.a1111 import cmd_flags

    secret = (("ann", "s3cret"),)
    hidden = {field.name: secret for field in dataclasses.fields(studio.services.config)
              if field.name.endswith("_auth")}  # gradio_auth, api_auth
    services = dataclasses.replace(studio.services, config=dataclasses.replace(studio.services.config, **hidden))
    flags = cmd_flags(services)
    assert "s3cret" not in json.dumps(flags) and flags["gradio_auth"] == "<hidden>"


# -- bad input: a 4xx naming the field, and the next good request still works ----------------------------------

MASK_WRONG_SIZE = {"init_images": [b64(picture())], "mask": b64(Image.new("L", (32, 32), 255)), **TINY}
BAD_REQUESTS = [
    ("txt2img", None, '{"prompt": "unterminated', "body"),
    ("txt2img", [1, 2], None, "body"),
    ("txt2img", {"steps": "many", **{k: v for k, v in TINY.items() if k != "steps"}}, None, "steps"),
    ("txt2img", {"prompt": {"text": "x"}}, None, "prompt"),
    ("txt2img", {**TINY, "sampler_name": "Euler Supreme"}, None, "sampler_name"),
    ("txt2img", {**TINY, "scheduler": "wobbly"}, None, "scheduler"),
    ("txt2img", {**TINY, "width": 65}, None, "width"),
    ("txt2img", {**TINY, "height": 8192}, None, "height"),
    ("txt2img", {**TINY, "steps": 100000}, None, "steps"),  # over this studio's limits: refused, never clamped
    ("txt2img", {**TINY, "cfg_scale": 31}, None, "cfg_scale"),
    ("txt2img", {**TINY, "batch_size": 9}, None, "batch_size"),
    ("txt2img", {**TINY, "styles": ["no such style"]}, None, "styles"),
    ("txt2img", {**TINY, "enable_hr": True, "hr_upscaler": "Magic 8x"}, None, "hr_upscaler"),
    ("txt2img", {**TINY, "override_settings": {"sd_model_checkpoint": "nope.safetensors"}}, None,
     "override_settings.sd_model_checkpoint"),
    ("txt2img", {**TINY, "override_settings": {"CLIP_stop_at_last_layers": "two"}}, None,
     "override_settings.CLIP_stop_at_last_layers"),
    ("txt2img", {**TINY, "override_settings": {"sd_vae": "missing.safetensors"}}, None, "override_settings.sd_vae"),
    ("img2img", {"init_images": ["!!!! not base64 ####"], **TINY}, None, "init_images"),
    ("img2img", {"init_images": [base64.b64encode(b"just some text").decode()], **TINY}, None, "init_images"),
    ("img2img", {"init_images": ["data:image/png,rawbytes"], **TINY}, None, "init_images"),
    ("img2img", {**TINY}, None, "init_images"),
    ("img2img", {**MASK_WRONG_SIZE}, None, "mask"),
    ("img2img", {"init_images": [b64(picture())], "mask": "%%%", **TINY}, None, "mask"),
    ("img2img", {"init_images": [b64(picture())], "denoising_strength": 3, **TINY}, None, "denoising_strength"),
    ("png-info", {"image": "definitely not an image"}, None, "image"),
    ("options", {"sd_model_checkpoint": "nope"}, None, "sd_model_checkpoint"),
    ("options", {"CLIP_stop_at_last_layers": 40}, None, "CLIP_stop_at_last_layers"),
    ("options", {"samples_format": "bmp"}, None, "samples_format"),
    ("options", {"sd_vae": "missing.pt"}, None, "sd_vae"),
    ("options", None, '{"sd_vae": ', "body"),
]


@pytest.mark.parametrize(("route", "payload", "content", "field"), BAD_REQUESTS,
                         ids=[f"{route}-{field}-{i}" for i, (route, _p, _c, field) in enumerate(BAD_REQUESTS)])
def test_bad_input_is_a_4xx_naming_the_field(studio, route, payload, content, field):
    before = studio.services.settings.all()
    response = post(studio, route, payload, content)
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert body["field"] == field, body
    assert body["detail"].startswith(f"{field}:"), body
    assert studio.services.settings.all() == before  # a refused options change saves nothing

    good = post(studio, "txt2img", {"prompt": "fine", "seed": 1, **TINY})
    assert good.status_code == 200 and len(good.json()["images"]) == 1


def test_a_key_can_interrupt_only_its_own_running_job():
    from types import SimpleNamespace

    from app.api.a1111 import interrupt

    stopped: list[str] = []
    queue = SimpleNamespace(current=SimpleNamespace(owner="key:alice"),
                            interrupt_current=lambda: stopped.append("interrupted"))
    services = SimpleNamespace(queue=queue)
    interrupt(services, "key:bob")
    assert stopped == []  # bob's call leaves alice's job running
    interrupt(services, "key:alice")
    interrupt(services, None)  # the local UI / an anonymous local client controls every job
    assert stopped == ["interrupted", "interrupted"]


def test_unload_frees_the_model_and_the_next_request_loads_it_again(studio):
    pipelines = studio.services.engine.pipelines
    payload = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 3}
    first = httpx.post(studio.url("txt2img"), json=payload, timeout=120)
    assert first.status_code == 200 and pipelines.loaded_titles()
    loads = pipelines.load_count
    assert httpx.post(studio.url("unload-checkpoint"), timeout=60).status_code == 200
    assert pipelines.loaded_titles() == []
    again = httpx.post(studio.url("txt2img"), json=payload, timeout=120)
    assert again.status_code == 200 and pipelines.load_count == loads + 1
    assert again.json()["images"] == first.json()["images"]  # the same model from its file: the same pixels
    assert httpx.post(studio.url("reload-checkpoint"), timeout=60).status_code == 200
    assert pipelines.loaded_titles() == []
    assert httpx.post(studio.url("refresh-vae")).status_code == 200
    modules = httpx.get(studio.url("sd-modules")).json()
    assert modules == [{"model_name": v["model_name"], "filename": v["filename"]}
                       for v in httpx.get(studio.url("sd-vae")).json()]
