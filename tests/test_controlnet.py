"""ControlNet units through the queue, on the tiny SD 1.x model and tiny ControlNets the tests build.

What a user checks: a unit at weight 0 gives the plain image, at weight 1 another one, and the next request
without it is the plain image again; the three file layouts users download load to the same weights; a
ControlNet for another family, a truncated file or an unknown name is refused naming the unit's field and the
file, and the studio goes on working.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.controlnet.units import ControlNetUnit
from modules.errors import RequestError
from modules.image.infotext import parse_infotext
from tests.helpers import pixels, txt2img


@pytest.fixture(scope="module")
def controlnet_files(tmp_path_factory):
    from tools.tiny_controlnet import save_tiny_controlnet
    from tools.tiny_model import build_tiny_pipeline

    root = tmp_path_factory.mktemp("controlnets")
    sd1 = build_tiny_pipeline("sd1", seed=0)  # the same weights as the store's tiny-sd1
    save_tiny_controlnet(sd1, root / "tiny-cn", "diffusers", seed=1)
    save_tiny_controlnet(sd1, root / "tiny-cn-file.safetensors", "file", seed=1)
    save_tiny_controlnet(sd1, root / "sub" / "tiny-cn-original.pth", "original", seed=2)
    save_tiny_controlnet(build_tiny_pipeline("sdxl", seed=0), root / "tiny-xl-cn.safetensors", "file", seed=3)
    broken = root / "broken-cn.safetensors"
    data = (root / "tiny-cn-file.safetensors").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    return root


@pytest.fixture(scope="module")
def cn_services(tmp_path_factory, tiny_model_store, controlnet_files, one_thread):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    root = tmp_path_factory.mktemp("cn-studio")
    shutil.copytree(tiny_model_store, root / "models")
    shutil.copytree(controlnet_files, root / "models" / "ControlNet")
    built = build_services(AppConfig(models_dir=root / "models", outdir=root / "outputs", data_dir=root / "data",
                                     default_ckpt="tiny-sd1"))
    built.start()
    yield built
    built.stop()


def scribble(box=(8, 8, 40, 40), size=64) -> Image.Image:
    image = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(image).ellipse(box, outline="white", width=2)
    return image


def unit(**fields) -> ControlNetUnit:
    fields.setdefault("model", "tiny-cn")
    fields.setdefault("image", scribble())
    return ControlNetUnit(**fields)


def run(services, **fields):
    fields.setdefault("prompt", "a red circle")
    return services.run(txt2img(steps=4, width=64, height=64, seed=7, **fields)).images[0]


def difference(a, b) -> float:
    return float(np.abs(pixels(a.image) - pixels(b.image)).max())


def test_a_unit_changes_the_image_and_leaves_nothing_behind(cn_services):
    plain = run(cn_services)
    off = run(cn_services, controlnet=(unit(weight=0.0),))
    steered = run(cn_services, controlnet=(unit(),))
    after = run(cn_services)
    assert difference(plain, off) == 0
    assert difference(plain, steered) > 10
    assert difference(plain, after) == 0
    blank = run(cn_services, controlnet=(unit(image=Image.new("RGB", (64, 64), "white")),))
    assert difference(steered, blank) > 5  # the control image decides, not only the model


def test_the_three_layouts_users_download_load_the_same_way(cn_services):
    folder = run(cn_services, controlnet=(unit(model="tiny-cn"),))
    single = run(cn_services, controlnet=(unit(model="tiny-cn-file.safetensors"),))
    assert difference(folder, single) == 0
    original = run(cn_services, controlnet=(unit(model="tiny-cn-original"),))  # control_model.* keys, a .pth
    assert difference(folder, original) > 0


def test_infotext_names_each_unit_as_the_extension_does(cn_services):
    title = cn_services.engine.controlnets.find("tiny-cn").title
    image = run(cn_services, controlnet=(unit(weight=0.5, guidance_end=0.8), unit(model="tiny-cn-original")))
    params = parse_infotext(image.infotext)
    assert params["ControlNet 0"].startswith(f"Module: none, Model: {title}, Weight: 0.5")
    assert "Guidance End: 0.8" in params["ControlNet 0"]
    assert "Model: tiny-cn-original [" in params["ControlNet 1"]


def test_weight_range_and_control_modes_each_change_the_image(cn_services):
    balanced = run(cn_services, controlnet=(unit(),))
    prompt_first = run(cn_services, controlnet=(unit(control_mode="My prompt is more important"),))
    control_first = run(cn_services, controlnet=(unit(control_mode="ControlNet is more important"),))
    late = run(cn_services, controlnet=(unit(guidance_start=0.5),))
    assert min(difference(balanced, prompt_first), difference(balanced, control_first),
               difference(prompt_first, control_first), difference(balanced, late)) > 0


def test_img2img_and_inpaint_take_units_and_fall_back_on_the_input_image(cn_services):
    source = Image.new("RGB", (64, 64), (40, 90, 200))
    ImageDraw.Draw(source).rectangle((16, 16, 48, 48), fill=(230, 40, 40))
    from tests.helpers import txt2img as request

    base = dict(task="img2img", init_image=source, denoising_strength=0.8)
    plain = cn_services.run(request(steps=4, seed=3, **base)).images[0]
    steered = cn_services.run(request(steps=4, seed=3, controlnet=(unit(image=None),), **base)).images[0]
    assert difference(plain, steered) > 5
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 40, 40), fill=255)
    inpaint = dict(task="inpaint", init_image=source, mask=mask, inpaint_full_res=True)
    plain = cn_services.run(request(steps=4, seed=3, **inpaint)).images[0]
    steered = cn_services.run(request(steps=4, seed=3, controlnet=(unit(),), **inpaint)).images[0]
    assert difference(plain, steered) > 5
    outside = pixels(steered.image)[56:, 56:]
    assert np.abs(outside - pixels(source)[56:, 56:]).max() <= 2  # unmasked pixels stay


def test_hires_fix_steers_both_passes_unless_told_otherwise(cn_services):
    from modules.image.request import HiresFix

    hires = HiresFix(scale=1.5, steps=2, denoising_strength=0.6)
    both = run(cn_services, hires=hires, controlnet=(unit(),))
    low_only = run(cn_services, hires=hires, controlnet=(unit(hr_option="Low res only"),))
    assert both.image.size == (96, 96)
    assert difference(both, low_only) > 0
    assert "Hr Option: Low res only" in parse_infotext(low_only.infotext)["ControlNet 0"]


@pytest.mark.parametrize(("model", "expected"), [
    ("nope", "not found"),
    ("tiny-xl-cn", "tiny-xl-cn.safetensors"),
    ("broken-cn", "broken-cn.safetensors"),
])
def test_bad_controlnets_are_refused_naming_the_field_and_file(cn_services, model, expected):
    with pytest.raises(RequestError) as caught:
        run(cn_services, controlnet=(unit(model=model),))
    assert caught.value.field == "controlnet[0].model"
    assert expected in caught.value.message
    assert run(cn_services).image.size == (64, 64)  # the same request without it still works


def test_bad_unit_settings_are_refused_at_submission(cn_services):
    for fields, field in ((dict(weight=3.0), "controlnet[0].weight"),
                          (dict(guidance_start=0.6, guidance_end=0.4), "controlnet[0].guidance_end"),
                          (dict(control_mode="Loud"), "controlnet[0].control_mode"),
                          (dict(image=None), "controlnet[0].image")):
        with pytest.raises(RequestError) as caught:
            cn_services.queue.submit(txt2img(controlnet=(unit(**fields),)))
        assert caught.value.field == field


def test_a_queued_unit_survives_the_job_record(cn_services, tmp_path):
    from modules.image.codec import request_from_dict, request_to_dict

    request = txt2img(controlnet=(unit(weight=0.7, control_mode="My prompt is more important"),))
    back = request_from_dict(request_to_dict(request, tmp_path), tmp_path)
    assert back.controlnet[0].weight == 0.7 and back.controlnet[0].control_mode == "My prompt is more important"
    assert np.array_equal(pixels(back.controlnet[0].image), pixels(request.controlnet[0].image))


def test_an_sdxl_checkpoint_takes_an_sdxl_controlnet_and_refuses_an_sd1_one(tmp_path, controlnet_files, one_thread):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services
    from tools.tiny_controlnet import save_tiny_controlnet
    from tools.tiny_model import build_tiny_pipeline, save_tiny_model

    models = tmp_path / "models"
    save_tiny_model(models / "Stable-diffusion" / "tiny-xl", family="sdxl", seed=0)
    save_tiny_controlnet(build_tiny_pipeline("sdxl", seed=0), models / "ControlNet" / "xl-cn", seed=4)
    shutil.copytree(controlnet_files / "tiny-cn", models / "ControlNet" / "tiny-cn")
    services = build_services(AppConfig(models_dir=models, outdir=tmp_path / "out", data_dir=tmp_path / "data",
                                        default_ckpt="tiny-xl"))
    services.start()
    try:
        plain = run(services)
        steered = run(services, controlnet=(unit(model="xl-cn"),))
        assert difference(plain, steered) > 5
        with pytest.raises(RequestError) as caught:
            run(services, controlnet=(unit(model="tiny-cn"),))
        assert caught.value.field == "controlnet[0].model" and "tiny-cn" in caught.value.message
    finally:
        services.stop()


def test_units_run_with_prompt_editing_and_composable_and(cn_services):
    plain = run(cn_services, controlnet=(unit(),))
    for prompt in ("a [red:blue:0.5] circle", "a red circle AND a blue square :0.5"):
        steered = run(cn_services, prompt=prompt, controlnet=(unit(control_mode="ControlNet is more important"),))
        assert steered.image.size == (64, 64) and difference(plain, steered) > 0
