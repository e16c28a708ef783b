"""The Gradio studio's handlers, driven with form values by name on the real engine and a tiny model (no browser).

One set of services serves the whole module (building the UI and loading the model once keeps it fast); every
test asserts what a user would see: the gallery, the saved files and their infotext, the error next to the field,
the pixels outside a mask.
"""

from __future__ import annotations

import logging
import shutil
import threading

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.ui import build_layout
from app.ui.form import INFO, WARNING
from app.ui.generate import generation_events, interrupt
from app.ui.paste import paste_prompt
from app.ui.pnginfo import read_png_info
from app.ui.request_form import request_from_form
from app.ui.results import reuse_seed, select_image
from app.ui.send import send_image, send_parameters
from app.ui.settings_tab import save_settings
from modules.errors import RequestError
from modules.runtime.settings import SettingsStore

BASE = {"prompt": "a red circle on a blue background", "negative_prompt": "blurry", "steps": 3, "width": 64,
        "height": 64, "seed": 1234, "sampler_name": "Euler", "scheduler": "Automatic", "cfg_scale": 7.0,
        "batch_size": 1, "n_iter": 1, "styles": []}


@pytest.fixture(scope="module")
def services(tmp_path_factory, tiny_model_store):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    root = tmp_path_factory.mktemp("ui")
    shutil.copytree(tiny_model_store, root / "models")
    config = AppConfig(models_dir=root / "models", outdir=root / "outputs", data_dir=root / "data",
                       default_ckpt="tiny-sd1", preview_interval=1)
    built = build_services(config)
    built.start()
    yield built
    built.stop()


@pytest.fixture(scope="module")
def ui(services):
    return build_layout(services)


def run(services, **values):
    """All updates of one Generate click, and the final one."""
    updates = list(generation_events(services, {**BASE, "task": "txt2img", **values}, poll=0.02))
    return updates, updates[-1]


def pixels(image) -> np.ndarray:
    if not isinstance(image, Image.Image):
        image = Image.open(image)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def square(size: int = 64, mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, (size, size), (30, 60, 200, 255)[: len(mode)])
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(220, 40, 40, 255)[: len(mode)])
    return image


def test_ui_builds_with_every_tab_and_names_its_controls(ui):
    assert set(ui.generation) == {"txt2img", "img2img", "inpaint"}
    for tab in ui.generation.values():
        assert {"prompt", "seed", "sampler_name", "scheduler", "steps", "model"} <= set(tab.inputs)
        assert "generate" not in tab.inputs and "gallery" in tab.form
    assert "enable_hr" in ui.generation["txt2img"].inputs
    assert {"inpaint_editor", "mask_upload", "outpaint_mode", "inpainting_fill"} <= set(ui.generation["inpaint"].inputs)
    model = ui.generation["txt2img"].form["model"]
    assert any(choice[0].startswith("tiny-sd1") for choice in model.choices)


def test_request_from_form_maps_names_to_request_fields():
    request = request_from_form({**BASE, "task": "txt2img", "seed": 7.0, "styles": ["a"], "enable_hr": True,
                                 "hr_scale": 1.5, "hr_upscaler": "Lanczos", "hr_second_pass_steps": 2,
                                 "denoising_strength": 0.4, "model": "", "n_iter": 3.0})
    assert (request.seed, request.n_iter, request.styles, request.model) == (7, 3, ("a",), None)
    assert request.hires.scale == 1.5 and request.hires.upscaler == "Lanczos" and request.hires.steps == 2
    assert request.hires.denoising_strength == 0.4

    image = square()
    mask = Image.new("L", (64, 64), 0)
    request = request_from_form({**BASE, "task": "inpaint", "init_image": image, "mask_upload": mask.copy(),
                                 "inpaint_editor": None, "mask_mode": "Inpaint not masked",
                                 "inpainting_fill": "Latent noise", "inpaint_area": "Only masked",
                                 "resize_mode": "Crop and resize", "seed": -5})
    assert request.task == "inpaint" and request.inpainting_mask_invert and request.inpaint_full_res
    assert (request.inpainting_fill, request.resize_mode, request.seed) == (2, 1, -1)

    outpaint = request_from_form({**BASE, "task": "inpaint", "outpaint_mode": True, "outpaint_left": 16,
                                  "inpaint_editor": {"background": image, "layers": [], "composite": image}})
    assert outpaint.task == "outpaint" and outpaint.outpaint.left == 16


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        ({"task": "img2img", "init_image": None}, "init_image", "needs an input image"),
        ({"task": "inpaint", "init_image": square(), "mask_upload": Image.new("L", (32, 32))}, "mask", "must match"),
        ({"task": "inpaint", "init_image": square()}, "mask", "draw a mask"),
        ({"task": "txt2img", "steps": "many"}, "steps", "not a valid value"),
    ],
)
def test_request_from_form_names_the_bad_field(values, field, words):
    with pytest.raises(RequestError) as caught:
        request_from_form({**BASE, **values})
    assert caught.value.field == field and words in caught.value.message


def test_a_corrupt_upload_is_reported_against_its_field(services, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    updates, last = run(services, task="img2img", init_image=str(broken))
    assert len(updates) == 1
    assert "init_image" in last["status"] and "not a readable image" in last["status"]
    assert "init_image" in last[WARNING]


def test_txt2img_yields_progress_then_the_grid_and_saved_images(services):
    updates, last = run(services, batch_size=2, n_iter=2, seed=500, steps=12)
    assert updates[0]["job"] and "progress" in updates[0]
    assert any("step " in update.get("progress", "") for update in updates[1:-1])
    assert any(update.get("preview") is not None for update in updates[:-1])  # preview_interval=1
    gallery = last["gallery"]
    assert len(gallery) == 2 * 2 + 1  # the grid first, then batch_size x n_iter images
    grid, images = Image.open(gallery[0]), gallery[1:]
    assert grid.size == (128, 128)
    outdir = services.config.outdir.resolve()
    infotexts = [Image.open(path).info["parameters"] for path in images]
    for path, infotext, seed in zip(images, infotexts, (500, 501, 502, 503), strict=True):
        assert str(path).startswith(str(outdir)) and f"Seed: {seed}," in infotext
        assert Image.open(path).size == (64, 64)
    assert last["infotext"] == infotexts[0]  # the first image is selected, not the grid
    assert "Negative prompt: blurry" in last["infotext"] and "seeds 500–503" in last["status"]
    assert last["result"]["selected"] == 1 and last["job"] is None

    chosen = select_image({"result": last["result"]}, 3)
    assert chosen["infotext"] == infotexts[2]
    assert reuse_seed({"result": chosen["result"]}) == {"seed": 502}


def test_same_seed_gives_the_same_pixels(services):
    _, first = run(services, seed=77)
    _, again = run(services, seed=77)
    _, other = run(services, seed=78)
    assert np.array_equal(pixels(first["gallery"][0]), pixels(again["gallery"][0]))
    assert not np.array_equal(pixels(first["gallery"][0]), pixels(other["gallery"][0]))


def test_an_invalid_request_shows_its_error_and_the_next_one_works(services):
    updates, bad = run(services, width=100)
    assert len(updates) == 1 and "gallery" not in bad
    assert "<b>width</b>" in bad["status"] and "multiple of 8" in bad["status"]
    assert bad[WARNING].startswith("width: must be a multiple of 8")

    _, failed = run(services, sampler_name="No Such Sampler")  # passes the form, fails in the worker
    assert "sampler_name" in failed["status"] and "gallery" not in failed

    _, good = run(services)
    assert len(good["gallery"]) == 1 and "sf-error" not in good["status"]


def test_img2img_returns_images_of_the_input_size(services):
    init = square().resize((64, 48))
    _, last = run(services, task="img2img", init_image=init, width=0, height=0, denoising_strength=0.5,
                  resize_mode="Just resize", batch_size=2)
    assert len(last["gallery"]) == 3
    grid, *images = (Image.open(path) for path in last["gallery"])
    assert grid.size == (128, 48) and [image.size for image in images] == [(64, 48), (64, 48)]
    assert "Denoising strength: 0.5" in last["infotext"]


def test_inpaint_with_a_painted_mask_keeps_unmasked_pixels(services):
    image = square(mode="RGBA")
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle((8, 8, 31, 31), fill=(255, 255, 255, 255))
    editor = {"background": image, "layers": [layer], "composite": image}
    _, last = run(services, task="inpaint", inpaint_editor=editor, mask_blur=0, inpainting_fill="Latent noise",
                  denoising_strength=1.0, width=0, height=0)
    assert "gallery" in last, last["status"]
    result = pixels(last["gallery"][0])
    assert result.shape == (64, 64, 3)
    painted = np.zeros((64, 64), bool)
    painted[8:32, 8:32] = True
    original = pixels(image)
    assert np.array_equal(result[~painted], original[~painted])
    assert np.abs(result[painted] - original[painted]).mean() > 1.0


def test_inpaint_uses_transparency_when_no_mask_is_given_and_outpaint_grows_the_canvas(services):
    image = square(mode="RGBA")
    ImageDraw.Draw(image).rectangle((40, 0, 63, 63), fill=(0, 0, 0, 0))
    _, last = run(services, task="inpaint", inpaint_editor={"background": image, "layers": [], "composite": image},
                  mask_blur=0, width=0, height=0)
    result = pixels(last["gallery"][0])
    assert np.array_equal(result[:, :40], pixels(image)[:, :40])

    _, grown = run(services, task="inpaint", outpaint_mode=True, outpaint_left=16, outpaint_bottom=8,
                   inpaint_editor={"background": square(), "layers": [], "composite": square()}, width=0, height=0)
    assert Image.open(grown["gallery"][0]).size == (80, 72)


def test_pasting_an_infotext_fills_the_fields(services, ui):
    _, last = run(services, seed=4242)
    text = last["infotext"].replace("Sampler: Euler", "Sampler: DPM++ 2M Karras").replace("Steps: 3", "Steps: 9")
    names = ui.generation["txt2img"].inputs
    updates = paste_prompt(services, {"prompt": text}, names)
    assert updates["prompt"] == BASE["prompt"] and updates["negative_prompt"] == "blurry"
    assert (updates["steps"], updates["seed"], updates["width"], updates["height"]) == (9, 4242, 64, 64)
    assert (updates["sampler_name"], updates["scheduler"], updates["cfg_scale"]) == ("DPM++ 2M", "Karras", 7.0)
    assert updates["model"].startswith("tiny-sd1") and updates["enable_hr"] is False and INFO in updates
    assert set(updates) - {INFO} <= set(names)

    nothing = paste_prompt(services, {"prompt": "just a prompt"}, names)
    assert set(nothing) == {WARNING}


def test_png_info_reads_a_saved_image_and_sends_it(services, ui):
    _, last = run(services, seed=31)
    path = last["gallery"][0]
    info = read_png_info({"image": path})
    assert info["infotext"] == last["infotext"] and info["parameters"]["Seed"] == "31"

    sent = send_parameters(services, {"pnginfo.infotext": info["infotext"], "pnginfo.image": path}, "img2img",
                           ui.generation["img2img"].inputs)
    assert sent["tabs"]["selected"] == "img2img" and sent["img2img.init_image"] == path
    assert sent["img2img.seed"] == 31 and sent["img2img.prompt"] == BASE["prompt"]
    names = [name for name in ui.generation["inpaint"].inputs if name not in ("inpaint_editor", "mask_upload")]
    to_inpaint = send_parameters(services, {"pnginfo.infotext": info["infotext"], "pnginfo.image": path},
                                 "inpaint", names)
    assert to_inpaint["tabs"]["selected"] == "inpaint" and to_inpaint["inpaint.seed"] == 31
    assert to_inpaint["inpaint.inpaint_editor"]["value"] == {"background": path, "layers": [], "composite": path}
    assert to_inpaint["inpaint.inpaint_editor"]["brush"].default_size == 3  # the brush follows the 64 px image
    assert "send_inpaint" in ui.pnginfo

    plain = Image.new("RGB", (8, 8))
    assert read_png_info({"image": plain})["infotext"] == ""


def test_send_to_inpaint_moves_the_selected_image_and_prompt(services):
    _, last = run(services)
    values = {"txt2img.result": last["result"], "txt2img.prompt": "p", "txt2img.negative_prompt": "n",
              "txt2img.styles": []}
    sent = send_image(values, source="txt2img", target="inpaint")
    assert sent["tabs"]["selected"] == "inpaint"
    assert sent["inpaint.inpaint_editor"]["value"]["background"] == last["gallery"][0]
    assert (sent["inpaint.prompt"], sent["inpaint.negative_prompt"]) == ("p", "n")
    assert WARNING in send_image({"txt2img.result": None}, source="txt2img", target="img2img")


def test_generate_through_the_registered_gradio_handler(services, ui):
    """The real wiring: component-keyed dict in (Gradio's set inputs), component-keyed updates out."""
    tab = ui.generation["txt2img"]
    block_fn = next(fn for fn in ui.blocks.fns.values() if fn.api_name == "txt2img_generate")
    values = {**{name: None for name in tab.inputs}, **{k: v for k, v in BASE.items() if k in tab.inputs}}
    values.update(enable_hr=False, subseed=-1, subseed_strength=0, clip_skip=1, seed=9)
    data = {tab.form[name]: value for name, value in values.items()}
    assert set(data) == set(block_fn.inputs)
    *_, last = list(block_fn.fn(data))
    gallery = last[tab.form["gallery"]]
    assert len(gallery) == 1 and "Seed: 9," in last[tab.form["infotext"]]


def test_interrupt_stops_a_long_job_early(services):
    events = generation_events(services, {**BASE, "task": "txt2img", "steps": 150}, poll=0.02)
    first = next(events)
    job = services.queue.get(first["job"])
    started = threading.Event()

    def stop_after_first_step() -> None:
        while job.progress.step < 1 and not job.done_event.is_set():
            job.done_event.wait(0.01)
        started.set()
        interrupt(services, {"job": job.id})

    stopper = threading.Thread(target=stop_after_first_step)
    stopper.start()
    *_, last = list(events)
    stopper.join()
    assert started.is_set()
    assert "interrupted" in last["status"]
    assert job.progress.step < 150


def test_settings_save_persists_and_a_new_store_reads_them(tmp_path, caplog):
    path = tmp_path / "settings.json"
    store = SettingsStore(path)
    assert store.get("steps") == 20 and store.get("sd_model_checkpoint") is None
    update = save_settings(store, {"steps": 33.0, "cfg_scale": 5, "sampler": "Euler a", "width": 512,
                                   "height": 0, "output_format": "webp", "save_images": False, "make_grid": True,
                                   "preview_interval": 0, "sd_model_checkpoint": "tiny-sd1"})
    assert INFO in update and "Saved" in update["status"]
    again = SettingsStore(path)
    assert (again.get("steps"), again.get("cfg_scale"), again.get("sampler")) == (33, 5.0, "Euler a")
    assert again.get("save_images") is False and again.get("output_format") == "webp"
    assert again.all()["batch_size"] == 1  # an unsaved key keeps its default

    refused = save_settings(again, {"width": 100})
    assert WARNING in refused and SettingsStore(path).get("width") == 512

    path.write_text("{ not json", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="modules.runtime.settings"):
        broken = SettingsStore(path)
    assert broken.get("steps") == 20 and "corrupt" in caplog.text


def test_settings_writes_are_atomic_and_thread_safe(tmp_path):
    store = SettingsStore(tmp_path / "s.json")
    threads = [threading.Thread(target=store.set, args=(f"key{i}", i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {f"key{i}": i for i in range(8)}.items() <= SettingsStore(tmp_path / "s.json").all().items()
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary file left behind
    with pytest.raises(ValueError, match="cannot be saved"):
        store.set("bad", object())


def test_share_needs_a_login_and_a_failed_link_keeps_serving_locally(capsys, monkeypatch):
    import gradio as gr
    from gradio import networking

    from app.server import check_share, open_share_link
    from modules.runtime.config import AppConfig

    assert check_share(AppConfig()) is False
    with pytest.raises(SystemExit, match="without a login"):
        check_share(AppConfig(share=True))
    assert check_share(AppConfig(share=True, gradio_auth=(("u", "p"),)))
    assert check_share(AppConfig(share=True, share_without_auth=True))

    asked = []

    def no_network(**where):  # stands in for Gradio's share server: the subject is the fallback, not the network
        asked.append(where)
        raise RuntimeError("Could not get share link from Gradio API Server.")

    monkeypatch.setattr(networking, "setup_tunnel", no_network)
    with gr.Blocks() as blocks:
        gr.Textbox()
    config = AppConfig(share=True, share_without_auth=True, port=7861)
    assert open_share_link(blocks, config, "http://127.0.0.1:7861/") is None
    assert asked == [{"local_host": "127.0.0.1", "local_port": 7861, "share_token": blocks.share_token,
                      "share_server_address": None, "share_server_tls_certificate": None}]
    assert "Still serving locally at http://127.0.0.1:7861/" in capsys.readouterr().out
    monkeypatch.setattr(networking, "setup_tunnel", lambda **where: "https://abc.gradio.live")
    assert open_share_link(blocks, config, "http://127.0.0.1:7861/") == "https://abc.gradio.live"
    assert blocks.share_url == "https://abc.gradio.live"
    assert "* Running on public URL: https://abc.gradio.live" in capsys.readouterr().out


def test_vae_dropdown_lists_models_vae_and_a_pasted_vae_is_selected(services, ui, tmp_path):
    from app.ui.controls import refresh_models
    from tools.tiny_model import _vae

    vae_dir = services.config.models_dir / "VAE" / "tiny-vae"
    _vae(seed=42).save_pretrained(vae_dir, safe_serialization=True)
    updates = refresh_models(services, {"model": None, "vae": "Automatic"})
    assert updates["vae"]["choices"][0] in ("Automatic", ("Automatic", "Automatic"))
    names = [choice[0] if isinstance(choice, tuple) else choice for choice in updates["vae"]["choices"]]
    assert "tiny-vae" in names

    _, own = run(services)
    _, swapped = run(services, vae="tiny-vae")
    own_image, swapped_image = own["gallery"][0], swapped["gallery"][0]
    assert not np.array_equal(pixels(own_image), pixels(swapped_image))
    assert "VAE: tiny-vae" in swapped["infotext"]

    names = list(ui.generation["txt2img"].inputs)
    filled = paste_prompt(services, {"prompt": swapped["infotext"]}, names)
    assert filled["vae"] == "tiny-vae"
    assert paste_prompt(services, {"prompt": own["infotext"]}, names)["vae"] == "Automatic"


def test_interrupt_without_a_job_of_this_tab_leaves_other_jobs_alone(services):
    from app.ui.generate import skip

    job = services.queue.submit(request_from_form({**BASE, "task": "txt2img", "steps": 150}))
    interrupt(services, {"job": None})
    skip(services, {"job": None})
    assert not job.control.interrupted.is_set() and not job.control.skipped.is_set()
    assert services.queue.cancel(job.id)
    assert job.done_event.wait(60)


def test_pasting_an_inpaint_infotext_restores_area_padding_and_outpaint(services):
    from app.ui.paste import parameters_from_infotext

    text = ("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Mask blur: 8, "
            "Inpaint area: Only masked, Masked area padding: 48, Outpaint: \"0,64,8,0\"")
    names = ["prompt", "steps", "mask_blur", "inpaint_area", "inpaint_full_res_padding", "outpaint_mode",
             "outpaint_left", "outpaint_right", "outpaint_top", "outpaint_bottom"]
    updates = parameters_from_infotext(services, text, names)
    assert updates["inpaint_area"] == "Only masked" and updates["inpaint_full_res_padding"] == 48
    assert updates["mask_blur"] == 8 and updates["outpaint_mode"] is True
    assert (updates["outpaint_right"], updates["outpaint_top"]) == (64, 8)


def test_settings_save_writes_only_what_the_user_changed(tmp_path, tiny_model_store):
    """The Settings tab shows the model's recommended CFG; saving without touching it keeps following the model."""
    import json

    from app.ui.settings_tab import shown_settings
    from tests.helpers import studio_services

    models = tmp_path / "models"
    shutil.copytree(tiny_model_store, models)
    folder = next((models / "Stable-diffusion").iterdir())
    (folder / "training_config.json").write_text(json.dumps({"recommended": {"guidance": 4.5, "steps": 20}}))
    services = studio_services(tmp_path, models_dir=models, default_ckpt=folder.name)
    shown = shown_settings(services, {"cfg_scale": None, "steps": None, "sampler": None, "sd_model_checkpoint": None})
    assert shown["cfg_scale"] == 4.5 and shown["sd_model_checkpoint"].startswith(folder.name)
    update = save_settings(services.settings, {**shown, "steps": 30}, shown=shown)
    assert "Saved 1 settings" in update["status"]
    assert services.settings.has("steps") and not services.settings.has("cfg_scale")
    assert not services.settings.has("sd_model_checkpoint")


def test_a_tab_follows_its_newest_job_and_the_older_one_still_ends(services):
    """A second Generate in the same tab and browser session takes the page: the first job's handler stops
    updating it (its steps would hide the "waiting in queue" line) while the job itself runs to its end."""
    from app.ui.controls import run_tab
    from app.ui.following import TabFollowers
    from app.ui.form import SESSION

    followers = TabFollowers()
    first_events = run_tab(services, "txt2img", followers, {**BASE, "steps": 40, SESSION: "browser-1"})
    first = next(first_events)
    assert first["interrupt"]["visible"] is True  # Interrupt and Skip appear with the job
    older = services.queue.get(first["job"])
    while older.state == "queued":
        older.done_event.wait(0.01)
    second_events = run_tab(services, "txt2img", followers, {**BASE, SESSION: "browser-1"})
    second = next(second_events)
    assert second["job"] != older.id and "waiting in queue · 1 ahead" in second["progress"]
    other_session = run_tab(services, "txt2img", followers, {**BASE, SESSION: "browser-2"})
    other = next(other_session)
    assert list(first_events) == []  # nothing more for the page once the newer job was submitted
    older.done_event.wait(60)
    assert older.state == "done" and len(older.result.images) == 1
    *_, last = list(second_events)
    assert "1 image in" in last["status"] and last["interrupt"]["visible"] is False
    *_, last_other = list(other_session)  # another browser's job is followed to its end as before
    assert other["job"] != second["job"] and "1 image in" in last_other["status"]


def test_pasting_values_over_the_studio_limits_clamps_them_and_says_which(services):
    """An A1111 infotext may hold 500 steps or CFG 50: the form takes the nearest value its sliders allow and the
    toast names each field with its old and new value (instead of Gradio's unnamed error on the next Generate)."""
    from app.ui.paste import parameters_from_infotext

    limits = services.config.limits
    text = "a cat\nSteps: 500, Sampler: Euler, CFG scale: 50, Seed: 1, Size: 64x64"
    updates = parameters_from_infotext(services, text, ["prompt", "steps", "cfg_scale", "width", "height"])
    assert (updates["steps"], updates["cfg_scale"], updates["width"]) == (limits.max_steps, limits.max_cfg, 64)
    assert isinstance(updates["steps"], int)
    assert f"Sampling steps 500 is over this studio's limit of {limits.max_steps}: set to {limits.max_steps}." \
        in updates[WARNING]
    assert f"CFG scale 50 is over this studio's limit of {limits.max_cfg:g}" in updates[WARNING]
    assert INFO not in updates

    fine = parameters_from_infotext(services, text.replace("500", "20").replace("CFG scale: 50", "CFG scale: 5"),
                                    ["steps", "cfg_scale"])
    assert (fine["steps"], fine["cfg_scale"]) == (20, 5.0) and WARNING not in fine


def test_the_inpaint_brush_follows_the_image_size(tmp_path, ui):
    """Gradio's fixed 25 px brush covers a third of a small image and a speck of a large one: it is a share of the
    image's shorter side instead, set when the editor's image changes size (measured in the page)."""
    from app.ui.inpaint import SIDE_JS, brush_for, follow_side, image_size

    assert brush_for((512, 768)).default_size == 26 and brush_for((64, 64)).default_size == 3
    assert brush_for((2048, 1024)).default_size == 51 and brush_for((8, 8)).default_size == 1
    assert brush_for(None).default_size == 25 and brush_for((64, 64)).color_mode == "fixed"
    assert follow_side({"inpaint_side": 1000})["inpaint_editor"]["brush"].default_size == 50
    assert "value" not in follow_side({"inpaint_side": 1000})["inpaint_editor"]  # the drawing is kept
    assert follow_side({"inpaint_side": 0}) == {}
    path = tmp_path / "big.png"
    Image.new("RGB", (1024, 640)).save(path)
    assert image_size(str(path)) == (1024, 640) and image_size({"background": Image.new("L", (5, 7))}) == (5, 7)
    assert image_size(str(tmp_path / "missing.png")) is None and image_size(None) is None

    tab = ui.generation["inpaint"]
    config = ui.blocks.get_config_file()
    editor, side = tab.form["inpaint_editor"]._id, tab.form["inpaint_side"]._id
    measure = [dep for dep in config["dependencies"] if [editor, "change"] in [list(t) for t in dep["targets"]]]
    assert len(measure) == 1 and measure[0]["js"] == SIDE_JS and not measure[0]["backend_fn"]
    assert measure[0]["inputs"] == [side] and measure[0]["outputs"] == [side]  # no canvas upload per stroke
    assert "inpaint_side" not in tab.inputs
