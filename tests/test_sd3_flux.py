"""SD3 and Flux.1 (dev, schnell) as a user meets them: dropped into the models folder, recognised as their own
family (an SD3 folder is never SDXL), and generating through the queue at their own defaults, reproducibly,
txt2img and img2img, with what they cannot run refused by field. Tiny models built here, no network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.errors import RequestError
from modules.image.request import GenerationRequest, HiresFix
from tests.helpers import pixels

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest

FAMILIES = {"tiny-sd3": "sd3", "tiny-sd3-no-t5": "sd3", "tiny-flux": "flux", "tiny-flux-schnell": "flux",
            "tiny-sd1": "sd1"}


@pytest.fixture(scope="module")
def flow_models(tmp_path_factory) -> Path:
    """A models folder with tiny SD3 (with and without T5), Flux.1-dev, Flux.1-schnell and SD 1.x folders, and
    two SD3 / Flux single files."""
    from safetensors.torch import save_file

    from tools.tiny_model import build_tiny_pipeline, save_tiny_model

    root = tmp_path_factory.mktemp("flow-models")
    checkpoints = root / "Stable-diffusion"
    save_tiny_model(checkpoints / "tiny-sd3", "sd3", seed=0)
    save_tiny_model(checkpoints / "tiny-sd3-no-t5", "sd3", seed=0, with_t5=False)
    save_tiny_model(checkpoints / "tiny-flux", "flux", seed=0)
    save_tiny_model(checkpoints / "tiny-flux-schnell", "flux-schnell", seed=0)
    save_tiny_model(checkpoints / "tiny-sd1", "sd1", seed=0)
    # Single files: Flux transformers (dev, schnell) in diffusers' layout, the same weights as the folders', and
    # a stub in Stability's SD3 layout that fits no installed SD3 folder.
    for family, name in (("flux", "flux-transformer"), ("flux-schnell", "flux-schnell-transformer")):
        weights = build_tiny_pipeline(family, seed=0).transformer.state_dict()
        save_file({key: value.contiguous() for key, value in weights.items()}, checkpoints / f"{name}.safetensors")
    sd3 = {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": np.zeros((96, 32), np.float32),
           "model.diffusion_model.x_embedder.proj.weight": np.zeros((32, 16, 2, 2), np.float32)}
    import torch

    save_file({key: torch.from_numpy(value) for key, value in sd3.items()}, checkpoints / "sd3-single.safetensors")
    # LoRAs made with PEFT on each family's own layers (diffusers keys), and one for SD 1.x
    from tools.tiny_lora import save_tiny_lora

    for family, name in (("flux", "flux-style"), ("sd3", "sd3-style"), ("sd1", "sd1-style")):
        save_tiny_lora(build_tiny_pipeline(family, seed=0), root / "Lora" / f"{name}.safetensors")
    return root


@pytest.fixture(scope="module")
def studio(flow_models, tmp_path_factory):
    """Running services over the flow models (all kept loaded, so tests do not reload them)."""
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    work = tmp_path_factory.mktemp("flow-studio")
    built = build_services(AppConfig(models_dir=flow_models, outdir=work / "outputs", data_dir=work / "data",
                                     default_ckpt="tiny-sd3", max_loaded_models=5))
    built.start()
    yield built
    built.stop()


def request(model: str, **fields) -> GenerationRequest:
    base = {"prompt": "a red circle on a blue background", "model": model, "seed": 1234, "steps": 2}
    base.update(fields)
    return GenerationRequest(**base)


def test_each_folder_and_single_file_is_listed_as_its_own_family(studio):
    families = {info.name: info.family for info in studio.engine.registry.list()}
    assert {name: families[name] for name in FAMILIES} == FAMILIES
    assert families["flux-transformer"] == families["flux-schnell-transformer"] == "flux"
    assert families["sd3-single"] == "sd3"


def test_an_sd3_folder_is_never_taken_for_sdxl(flow_models, tmp_path):
    from modules.models.checkpoints import diffusers_folder_family, load_pipeline
    from modules.models.pipelines import _family_of
    from modules.models.registry import CheckpointInfo

    # Even without the pipeline class name in model_index.json, its transformer says SD3, not its text_encoder_2.
    folder = tmp_path / "renamed-sd3"
    shutil.copytree(flow_models / "Stable-diffusion" / "tiny-sd3", folder)
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("_class_name")
    (folder / "model_index.json").write_text(json.dumps(index))
    assert diffusers_folder_family(folder) == "sd3"

    pipe = load_pipeline(CheckpointInfo("tiny-sd3", "tiny-sd3", flow_models / "Stable-diffusion" / "tiny-sd3",
                                        "diffusers", None, None, "sd3"))
    assert pipe.text_encoder_2 is not None  # what used to make it "SDXL"
    assert type(pipe).__name__ == "StableDiffusion3Pipeline" and _family_of(pipe) == "sd3"


@pytest.mark.parametrize(("single", "folder", "steps"), [("flux-transformer", "tiny-flux", 28),
                                                         ("flux-schnell-transformer", "tiny-flux-schnell", 4)])
def test_a_transformer_single_file_runs_with_its_family_folders_other_components(studio, single, folder, steps):
    from_file = studio.run(GenerationRequest(prompt="a red circle", model=single, seed=3))
    from_folder = studio.run(GenerationRequest(prompt="a red circle", model=folder, seed=3))
    assert from_file.summary.steps == steps  # dev or schnell, told from the file's tensor names
    # The same transformer weights with the variant's own folder (VAE, text encoders): the same picture.
    assert np.array_equal(pixels(from_file.images[0].image), pixels(from_folder.images[0].image))
    assert f"Model: {single}," in from_file.images[0].infotext


def test_a_single_file_without_a_fitting_folder_is_refused_saying_what_to_add(flow_models):
    from modules.models.checkpoints import CheckpointLoadError, load_pipeline
    from modules.models.registry import CheckpointInfo

    checkpoints = flow_models / "Stable-diffusion"
    folders = [path for path in checkpoints.iterdir() if path.is_dir()]
    flux = checkpoints / "flux-transformer.safetensors"
    with pytest.raises(CheckpointLoadError, match="Flux.1 single file.*there is none"):
        load_pipeline(CheckpointInfo("f", "f", flux, "safetensors", None, None, None), base_folders=[])
    sd3 = checkpoints / "sd3-single.safetensors"
    with pytest.raises(CheckpointLoadError, match="fits none of the installed Stable Diffusion 3 folders"):
        load_pipeline(CheckpointInfo("s", "s", sd3, "safetensors", None, None, None), base_folders=folders)


@pytest.mark.parametrize(("model", "steps", "cfg"), [("tiny-sd3", 28, 7.0), ("tiny-flux", 28, 3.5),
                                                     ("tiny-flux-schnell", 4, 1.0)])
def test_a_request_that_leaves_steps_and_cfg_unset_runs_at_the_models_defaults(studio, model, steps, cfg):
    result = studio.run(GenerationRequest(prompt="a red circle", model=model, seed=3))
    summary, item = result.summary, result.images[0]
    assert (summary.steps, summary.cfg_scale, summary.sampler_name) == (steps, cfg, "Euler")
    assert item.image.size == (64, 64)  # the tiny model's own size (1024 for the published ones)
    assert f"Steps: {steps}," in item.infotext and f"CFG scale: {cfg:g}," in item.infotext
    assert f"Model: {model}," in item.infotext


def test_sd_models_keep_their_defaults_beside_flow_models(studio):
    job = studio.queue.submit(GenerationRequest(prompt="a red circle", model="tiny-sd1", seed=3, width=64, height=64))
    assert (job.request.steps, job.request.cfg_scale) == (20, 7.0)
    studio.queue.wait(job, 120)
    assert studio.queue.submit(GenerationRequest(model="tiny-flux")).request.cfg_scale == 3.5


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-sd3-no-t5", "tiny-flux", "tiny-flux-schnell"])
def test_the_same_seed_reproduces_and_another_differs(studio, model):
    first = studio.run(request(model)).images[0]
    again = studio.run(request(model)).images[0]
    other = studio.run(request(model, seed=99)).images[0]
    assert np.array_equal(pixels(first.image), pixels(again.image))
    assert np.abs(pixels(first.image) - pixels(other.image)).mean() > 1.0


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux"])
def test_img2img_starts_from_the_input_image(studio, model):
    red, blue = Image.new("RGB", (64, 48), (220, 30, 30)), Image.new("RGB", (64, 48), (30, 30, 220))
    on_red = studio.run(request(model, task="img2img", init_image=red, denoising_strength=0.5, steps=3)).images[0]
    again = studio.run(request(model, task="img2img", init_image=red, denoising_strength=0.5, steps=3)).images[0]
    on_blue = studio.run(request(model, task="img2img", init_image=blue, denoising_strength=0.5, steps=3)).images[0]
    assert on_red.image.size == (64, 48)  # the input's size, not the family's 1024 px
    assert np.array_equal(pixels(on_red.image), pixels(again.image))
    assert not np.array_equal(pixels(on_red.image), pixels(on_blue.image))
    assert "Denoising strength: 0.5" in on_red.infotext


def test_the_checkpoints_own_vae_may_be_named(studio):
    result = studio.run(request("tiny-flux", vae="Automatic"))
    assert result.images[0].image.size == (64, 64)


def test_sd3_takes_a_negative_prompt_and_flux_refuses_one(studio):
    plain = studio.run(request("tiny-sd3")).images[0]
    negative = studio.run(request("tiny-sd3", negative_prompt="green squares")).images[0]
    assert not np.array_equal(pixels(plain.image), pixels(negative.image))
    with pytest.raises(RequestError) as refused:
        studio.queue.submit(request("tiny-flux", negative_prompt="green squares"))
    assert refused.value.field == "negative_prompt"


def test_a1111_weights_are_removed_from_flow_prompts(studio):
    from modules.image.flow import plain_prompt

    assert plain_prompt("a (red:1.3) [circle] BREAK on \\(blue\\)") == "a red circle on (blue)"
    weighted = studio.run(request("tiny-flux", prompt="a (red:1.3) circle")).images[0]
    plain = studio.run(request("tiny-flux", prompt="a red circle")).images[0]
    assert np.array_equal(pixels(weighted.image), pixels(plain.image))
    assert weighted.infotext.startswith("a (red:1.3) circle\n")  # the prompt as written


@pytest.mark.parametrize(("fields", "field"), [
    ({"sampler_name": "DPM++ 2M"}, "sampler_name"),
    ({"scheduler": "Karras"}, "scheduler"),
    ({"hires": HiresFix(scale=2.0)}, "hires"),
    ({"prompt": "a [circle:square:0.5]"}, "prompt"),
    ({"prompt": "a circle AND a square"}, "prompt"),
    ({"clip_skip": 2}, "clip_skip"),
    ({"vae": "some-user-vae.safetensors"}, "vae"),
    ({"task": "inpaint", "init_image": Image.new("RGB", (64, 64)), "mask": Image.new("L", (64, 64), 255)}, "task"),
])
def test_what_flow_models_cannot_run_is_refused_naming_the_field(studio, fields, field):
    with pytest.raises(RequestError) as refused:
        studio.queue.submit(request("tiny-sd3", **fields))
    assert refused.value.field == field and "Stable Diffusion 3" in refused.value.message


def test_the_ui_starts_a_flow_model_at_its_family_defaults(studio):
    from app.ui.choices import form_default, model_recommendation

    assert model_recommendation(studio, "tiny-flux") == {"sampler": "Euler", "steps": 28, "guidance": 3.5}
    assert model_recommendation(studio, "tiny-flux-schnell")["steps"] == 4
    assert model_recommendation(studio, "tiny-sd1") == {}
    assert form_default(studio, "steps") == 28  # the studio's default model is tiny-sd3


def first_pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image, dtype=np.int16)


@pytest.mark.parametrize(("model", "lora"), [("tiny-flux", "flux-style"), ("tiny-sd3", "sd3-style")])
def test_a_lora_changes_a_flow_model_for_its_own_request_only(studio, model, lora):
    before = first_pixels(studio.run(request(model)))
    zero = first_pixels(studio.run(request(model, prompt=f"a red circle on a blue background <lora:{lora}:0>")))
    full = studio.run(request(model, prompt=f"a red circle on a blue background <lora:{lora}:1>"))
    after = first_pixels(studio.run(request(model)))
    assert np.abs(zero - before).max() <= 1, "a LoRA at weight 0 must give the same pixels as none"
    assert np.abs(first_pixels(full) - before).max() > 10, "a LoRA at weight 1 must change the picture"
    assert np.abs(after - before).max() == 0, "the LoRA leaked into the next job"
    assert f'Lora hashes: "{lora}: ' in full.images[0].infotext


def test_an_sd1_lora_on_flux_fails_naming_the_file_and_the_next_job_works(studio):
    before = first_pixels(studio.run(request("tiny-flux")))
    with pytest.raises(RequestError) as caught:
        studio.run(request("tiny-flux", prompt="a red circle <lora:sd1-style:1>"))
    assert "sd1-style.safetensors" in caught.value.message and "Flux.1" in caught.value.message
    assert np.abs(first_pixels(studio.run(request("tiny-flux"))) - before).max() == 0
