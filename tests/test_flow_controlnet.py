"""ControlNet units on Flux.1 and SD3, through the queue, on tiny models and tiny ControlNets built here.

What a user checks: a Flux ControlNet (both layouts diffusers reads: InstantX's, which reads the control image's
latents, and XLabs', which reads its pixels) steers txt2img and img2img, an SD3 one steers txt2img; at weight 0
the picture is the unit-less one and the next request without the unit is that picture again; a ControlNet for
another family is refused naming the file and both families before any step, and the same request without it
works; what these pipelines cannot do (other control modes, SD3 img2img) is refused naming the field.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.controlnet.units import ControlNetUnit
from modules.errors import RequestError
from modules.image.infotext import parse_infotext
from modules.image.request import GenerationRequest
from tests.helpers import pixels

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture(scope="module")
def flow_cn_models(tmp_path_factory):
    """Tiny Flux.1-dev, SD3 and SD 1.x checkpoints with ControlNets for each (and some that fit none)."""
    from safetensors.torch import save_file

    from tools.tiny_controlnet import build_tiny_flux_controlnet, build_tiny_sd3_controlnet, save_tiny_controlnet
    from tools.tiny_model import build_tiny_pipeline

    root = tmp_path_factory.mktemp("flow-cn-models")
    controlnets = root / "ControlNet"
    flux, sd3, sd1 = (build_tiny_pipeline(family, seed=0) for family in ("flux", "sd3", "sd1"))
    for family, pipe in (("flux", flux), ("sd3", sd3), ("sd1", sd1)):
        pipe.save_pretrained(root / "Stable-diffusion" / f"tiny-{family}", safe_serialization=True)
    build_tiny_flux_controlnet(flux, seed=1).save_pretrained(controlnets / "flux-cn")
    build_tiny_flux_controlnet(flux, seed=2, style="xlabs").save_pretrained(controlnets / "flux-xlabs-cn")
    build_tiny_sd3_controlnet(sd3, seed=3).save_pretrained(controlnets / "sd3-cn")
    save_tiny_controlnet(sd1, controlnets / "sd1-cn", seed=4)
    build_tiny_flux_controlnet(flux, seed=5, num_mode=7).save_pretrained(controlnets / "flux-union-cn")
    state = build_tiny_flux_controlnet(flux, seed=1).state_dict()
    save_file({key: value.contiguous() for key, value in state.items()}, controlnets / "flux-cn-file.safetensors")
    return root


@pytest.fixture(scope="module")
def studio(flow_cn_models, tmp_path_factory):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    work = tmp_path_factory.mktemp("flow-cn-studio")
    built = build_services(AppConfig(models_dir=flow_cn_models, outdir=work / "outputs", data_dir=work / "data",
                                     default_ckpt="tiny-flux", max_loaded_models=3))
    built.start()
    yield built
    built.stop()


def outline() -> Image.Image:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).ellipse((8, 8, 40, 40), outline="white", width=3)
    return image


def unit(model: str, **fields) -> ControlNetUnit:
    fields.setdefault("image", outline())
    return ControlNetUnit(model=model, **fields)


def run(services, model: str = "tiny-flux", **fields):
    base = dict(prompt="a red circle", model=model, seed=7, steps=2, width=64, height=64)
    base.update(fields)
    return services.run(GenerationRequest(**base)).images[0]


def difference(a, b) -> float:
    return float(np.abs(pixels(a.image) - pixels(b.image)).max())


@pytest.mark.parametrize("controlnet", ["flux-cn", "flux-xlabs-cn"])
def test_a_flux_unit_steers_txt2img_and_leaves_nothing_behind(studio, controlnet):
    plain = run(studio)
    off = run(studio, controlnet=(unit(controlnet, weight=0.0),))
    steered = run(studio, controlnet=(unit(controlnet),))
    after = run(studio)
    assert difference(plain, off) == 0  # the seed's own noise, the unit's residuals scaled to nothing
    assert difference(plain, steered) > 10
    assert difference(plain, after) == 0
    other_image = run(studio, controlnet=(unit(controlnet, image=Image.new("RGB", (64, 64), "white")),))
    assert difference(steered, other_image) > 5  # the control image decides, not only the model
    title = studio.engine.controlnets.find(controlnet).title
    assert parse_infotext(steered.infotext)["ControlNet 0"].startswith(f"Module: none, Model: {title}, Weight: 1")


def test_weight_fractions_resize_mode_and_preprocessor_apply_on_flux(studio):
    full = run(studio, controlnet=(unit("flux-cn"),))
    changed = {
        "weight": dict(weight=0.5),
        "guidance_end": dict(guidance_end=0.5),
        "guidance_start": dict(guidance_start=0.5),
        "resize_mode": dict(image=outline().resize((96, 64)), resize_mode="Resize and Fill"),
        "module": dict(module="invert"),
    }
    for name, fields in changed.items():
        other = run(studio, controlnet=(unit("flux-cn", **fields),))
        assert difference(full, other) > 0, name
    # a unit acting on no step of the two (start at the second, end before it) leaves the plain picture
    idle = run(studio, controlnet=(unit("flux-cn", guidance_start=0.6, guidance_end=0.9),))
    assert difference(run(studio), idle) == 0


def test_several_flux_units_and_img2img(studio):
    plain = run(studio)
    both = run(studio, controlnet=(unit("flux-cn"), unit("flux-cn", image=Image.new("RGB", (64, 64), "white"),
                                                          weight=0.5)))
    one = run(studio, controlnet=(unit("flux-cn"),))
    assert difference(both, one) > 0 and difference(both, plain) > 0
    img2img = dict(task="img2img", init_image=plain.image, denoising_strength=0.75)
    base = run(studio, **img2img)
    steered = run(studio, controlnet=(unit("flux-xlabs-cn"),), **img2img)
    off = run(studio, controlnet=(unit("flux-xlabs-cn", weight=0.0),), **img2img)
    assert difference(base, steered) > 10 and difference(base, off) == 0
    several = run(studio, controlnet=(unit("flux-cn"), unit("flux-cn", guidance_end=0.5)), **img2img)
    assert difference(base, several) > 10
    fallback = run(studio, controlnet=(unit("flux-xlabs-cn", image=None),), **img2img)  # reads the input image
    assert difference(base, fallback) > 0
    assert difference(run(studio, **img2img), base) == 0


def test_an_sd3_unit_steers_txt2img_and_img2img_is_refused(studio):
    plain = run(studio, "tiny-sd3")
    off = run(studio, "tiny-sd3", controlnet=(unit("sd3-cn", weight=0.0),))
    steered = run(studio, "tiny-sd3", controlnet=(unit("sd3-cn"),))
    two = run(studio, "tiny-sd3", controlnet=(unit("sd3-cn"), unit("sd3-cn", guidance_end=0.5)))
    assert difference(plain, off) == 0
    assert difference(plain, steered) > 10 and difference(steered, two) > 0
    assert difference(plain, run(studio, "tiny-sd3")) == 0
    with pytest.raises(RequestError) as caught:
        run(studio, "tiny-sd3", task="img2img", init_image=plain.image, controlnet=(unit("sd3-cn"),))
    assert caught.value.field == "controlnet" and "txt2img" in caught.value.message


@pytest.mark.parametrize("mode", ["My prompt is more important", "ControlNet is more important"])
def test_control_modes_other_than_balanced_are_refused_with_the_reason(studio, mode):
    for model, controlnet in (("tiny-flux", "flux-cn"), ("tiny-sd3", "sd3-cn")):
        with pytest.raises(RequestError) as caught:
            run(studio, model, controlnet=(unit(controlnet, control_mode=mode),))
        assert caught.value.field == "controlnet[0].control_mode" and "Balanced" in caught.value.message


SD = "an SD 1.x / 2.x / XL model"


@pytest.mark.parametrize(("model", "controlnet", "words"), [
    ("tiny-sd1", "flux-cn", ("flux-cn", "is for Flux.1", f"checkpoint is {SD}")),
    ("tiny-sd1", "sd3-cn", ("sd3-cn", "is for Stable Diffusion 3", f"checkpoint is {SD}")),
    ("tiny-sd1", "flux-cn-file", ("flux-cn-file.safetensors", "is for Flux.1", f"checkpoint is {SD}")),
    ("tiny-flux", "sd1-cn", ("sd1-cn", f"is for {SD}", "checkpoint is Flux.1")),
    ("tiny-flux", "sd3-cn", ("sd3-cn", "is for Stable Diffusion 3", "checkpoint is Flux.1")),
    ("tiny-sd3", "flux-cn", ("flux-cn", "is for Flux.1", "checkpoint is Stable Diffusion 3")),
])
def test_a_controlnet_for_another_family_is_refused_at_submission_naming_the_file_and_both_families(
        studio, model, controlnet, words):
    request = GenerationRequest(prompt="a red circle", model=model, steps=2, width=64, height=64,
                                controlnet=(unit(controlnet),))
    with pytest.raises(RequestError) as caught:
        studio.queue.submit(request)  # told from its config.json / tensor names: nothing is queued
    assert caught.value.field == "controlnet[0].model"
    assert all(word in caught.value.message for word in words), caught.value.message
    assert run(studio, model).image.size == (64, 64)  # the same request without the unit still works


@pytest.mark.parametrize(("model", "controlnet", "words"), [
    ("tiny-sd1", "flux-cn", ("flux-cn", "is for Flux.1", "checkpoint is a model with 64-wide text conditioning")),
    ("tiny-flux", "sd1-cn", ("sd1-cn", "is for a model with 64-wide text conditioning", "checkpoint is Flux.1")),
    ("tiny-flux", "sd3-cn", ("sd3-cn", "is for Stable Diffusion 3", "checkpoint is Flux.1")),
    ("tiny-sd3", "flux-cn-file", ("flux-cn-file.safetensors", "is for Flux.1", "checkpoint is Stable Diffusion 3")),
])
def test_the_worker_checks_the_family_again_before_reading_weights(studio, model, controlnet, words):
    """What the worker does when a file changed after submission (the SD family is named by its text
    conditioning's width: 768 SD 1.x, 2048 SDXL; the tiny SD 1.x's is 64)."""
    from modules.controlnet.loading import ControlNetLoadError, load_controlnet
    from modules.models.families import denoiser

    engine = studio.engine
    loaded = engine.pipelines.get(engine.resolve_model(model))
    with pytest.raises(ControlNetLoadError) as caught:
        load_controlnet(engine.controlnets.find(controlnet), denoiser(loaded.base))
    assert all(word in str(caught.value) for word in words), str(caught.value)


@pytest.mark.parametrize(("controlnet", "words"), [
    ("flux-union-cn", ("flux-union-cn", "ControlNet-Union")),
    ("flux-cn-file", ("flux-cn-file.safetensors", "folder")),
])
def test_what_diffusers_cannot_run_on_flux_is_refused_saying_why(studio, controlnet, words):
    with pytest.raises(RequestError) as caught:
        run(studio, controlnet=(unit(controlnet),))
    assert caught.value.field == "controlnet[0].model"
    assert all(word in caught.value.message for word in words), caught.value.message
    with pytest.raises(RequestError) as caught:
        run(studio, controlnet=(unit("flux-cn"), unit("flux-xlabs-cn")))
    assert caught.value.field == "controlnet[1].model" and "flux-cn" in caught.value.message


def test_flux_and_sd3_controlnets_are_listed_like_the_others(studio):
    from app.api.controlnet_units import model_list
    from app.ui.controlnet_panel import model_choices

    titles = model_list(studio)["model_list"]
    names = [title.split(" [")[0] for title in titles]
    assert {"flux-cn", "flux-xlabs-cn", "sd3-cn", "sd1-cn"} <= set(names)
    assert model_choices(studio)[1:] == titles


def test_stabilitys_control_routes_pick_a_controlnet_of_the_default_checkpoints_family(studio):
    from app.api.stability import control_model

    words = ("scribble", "sketch")
    assert control_model(studio, words).startswith("flux-cn [")  # tiny-flux is the default: first by name
    try:
        for checkpoint, expected in (("tiny-sd3", "sd3-cn ["), ("tiny-sd1", "sd1-cn [")):
            studio.settings.set("sd_model_checkpoint", checkpoint)
            assert control_model(studio, words).startswith(expected)
    finally:
        studio.settings.set("sd_model_checkpoint", "tiny-flux")
