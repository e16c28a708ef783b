"""Quantized SD3 / Flux.1 transformers and Flux.1 Kontext, as a user meets them: a ``*-Q8_0.gguf`` file dropped into
the checkpoint folder is listed, runs with its family folder's other components and stays quantized in memory; a
broken download fails naming the file; a Kontext folder is its own variant that edits the init image. Tiny models
and GGUF files are built here (the GGUF with the ``gguf`` package's writer), no network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.image.request import GenerationRequest
from tests.helpers import pixels

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture(scope="module")
def quantized_models(tmp_path_factory) -> Path:
    """Tiny Flux.1-dev, Flux.1 Kontext and SD3 folders; Q8_0 GGUF files of the Flux and SD3 transformers (the
    folders' own weights) and a truncated copy of the Flux one."""
    from diffusers import FluxKontextPipeline

    from tools.tiny_gguf import save_gguf
    from tools.tiny_lora import save_tiny_lora
    from tools.tiny_model import build_tiny_pipeline

    root = tmp_path_factory.mktemp("quantized-models")
    checkpoints = root / "Stable-diffusion"
    for family, name in (("flux", "tiny-flux"), ("sd3", "tiny-sd3")):
        pipe = build_tiny_pipeline(family, seed=0)
        pipe.save_pretrained(checkpoints / name, safe_serialization=True)
        stored = save_gguf(pipe.transformer.state_dict(), checkpoints / f"{name}-Q8_0.gguf", arch=family)
        assert "Q8_0" in stored.values() and {"F32", "F16"} & set(stored.values())  # a mix, as published
        if family == "flux":
            save_tiny_lora(pipe, root / "Lora" / "flux-style.safetensors")
            # Kontext: the same components saved with its pipeline class (what tiny_model's "flux-kontext" builds)
            FluxKontextPipeline(**pipe.components).save_pretrained(checkpoints / "tiny-flux-kontext")
    whole = (checkpoints / "tiny-flux-Q8_0.gguf").read_bytes()
    (checkpoints / "tiny-flux-kontext-Q8_0.gguf").write_bytes(whole)  # a Kontext GGUF: told by its name only
    (checkpoints / "broken-Q8_0.gguf").write_bytes(whole[: len(whole) * 2 // 3])
    return root


@pytest.fixture(scope="module")
def studio(quantized_models, tmp_path_factory):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    work = tmp_path_factory.mktemp("quantized-studio")
    built = build_services(AppConfig(models_dir=quantized_models, outdir=work / "outputs", data_dir=work / "data",
                                     default_ckpt="tiny-flux", max_loaded_models=6))
    built.start()
    yield built
    built.stop()


def request(model: str, **fields) -> GenerationRequest:
    base = {"prompt": "a red circle on a blue background", "model": model, "seed": 1234, "steps": 3}
    base.update(fields)
    return GenerationRequest(**base)


def test_gguf_files_are_listed_like_other_checkpoints(studio):
    listed = {info.name: info for info in studio.engine.registry.list()}
    assert listed["tiny-flux-Q8_0"].family == "flux" and listed["tiny-flux-Q8_0"].kind == "gguf"
    assert listed["tiny-sd3-Q8_0"].family == "sd3"
    assert listed["tiny-flux-Q8_0"].title.startswith("tiny-flux-Q8_0.gguf [")
    assert listed["tiny-flux-kontext"].family == "flux"


@pytest.mark.parametrize(("gguf", "folder"), [("tiny-flux-Q8_0", "tiny-flux"),
                                             pytest.param("tiny-sd3-Q8_0", "tiny-sd3", marks=pytest.mark.slow)])
def test_a_gguf_transformer_generates_close_to_its_unquantized_weights(studio, gguf, folder):
    quantized = studio.run(request(gguf)).images[0]
    again = studio.run(request(gguf)).images[0]
    other_seed = studio.run(request(gguf, seed=99)).images[0]
    full = studio.run(request(folder)).images[0]
    assert np.array_equal(pixels(quantized.image), pixels(again.image))
    assert np.abs(pixels(quantized.image) - pixels(other_seed.image)).mean() > 1.0
    difference = np.abs(pixels(quantized.image) - pixels(full.image))
    assert difference.mean() < 2.0 and difference.max() <= 24, "Q8_0 should stay close to the float weights"
    assert f"Model: {gguf}," in quantized.infotext


def test_the_gguf_weights_stay_quantized_in_memory(studio):
    loaded = studio.engine.pipelines.get(studio.engine.registry.find("tiny-flux-Q8_0"))
    types = {getattr(p.quant_type, "name", None) for p in loaded.base.transformer.parameters()
             if hasattr(p, "quant_type")}
    assert types == {"Q8_0"}
    layer = loaded.base.transformer.transformer_blocks[0].attn.to_q
    assert layer.weight.dtype.is_floating_point is False  # packed blocks, dequantized as each layer runs
    assert type(loaded.base).__name__ == "FluxPipeline"
    report = studio.engine.pipelines.memory_report()[loaded.info.title]  # what Settings shows per loaded model
    assert any(line.startswith("transformer weights: GGUF (Q8_0 x") for line in report), report
    full = studio.engine.pipelines.get(studio.engine.registry.find("tiny-flux"))
    assert not any("weights:" in line for line in full.memory_report)


def test_a_gguf_takes_img2img_and_the_models_defaults(studio):
    red = Image.new("RGB", (64, 48), (220, 30, 30))
    result = studio.run(GenerationRequest(prompt="a red circle", model="tiny-flux-Q8_0", seed=3, task="img2img",
                                          init_image=red, denoising_strength=0.5))
    assert (result.summary.steps, result.summary.cfg_scale) == (28, 3.5)  # Flux.1-dev's, told from the file
    assert result.images[0].image.size == (64, 48)


def test_a_lora_applies_to_a_gguf_transformer_for_its_job_only(studio):
    before = pixels(studio.run(request("tiny-flux-Q8_0")).images[0].image)
    styled = pixels(studio.run(request("tiny-flux-Q8_0", prompt="a red circle <lora:flux-style:1>")).images[0].image)
    after = pixels(studio.run(request("tiny-flux-Q8_0")).images[0].image)
    assert np.abs(styled - before).max() > 10
    assert np.array_equal(after, before)


def test_a_comfyui_unet_folder_given_as_a_checkpoint_folder_lists_its_gguf_files(quantized_models, tmp_path):
    import shutil

    from modules.models.registry import ModelRegistry

    unet = tmp_path / "ComfyUI" / "models" / "unet"
    unet.mkdir(parents=True)
    shutil.copy(quantized_models / "Stable-diffusion" / "tiny-flux-Q8_0.gguf", unet / "flux1-dev-Q8_0.gguf")
    registry = ModelRegistry(tmp_path / "models", ckpt_dirs=[unet], cache_file=tmp_path / "hashes.json")
    (found,) = registry.list()
    assert (found.name, found.kind, found.family) == ("flux1-dev-Q8_0", "gguf", "flux")


def test_a_truncated_gguf_fails_naming_the_file_and_the_next_job_runs(studio):
    with pytest.raises(RuntimeError, match=r"broken-Q8_0\.gguf is not a readable GGUF file"):
        studio.run(request("broken-Q8_0"))
    assert studio.run(request("tiny-flux-Q8_0")).images[0].image.size == (64, 64)


def test_a_gguf_of_another_family_is_refused_naming_it(tmp_path, quantized_models):
    import torch

    from modules.models.checkpoints import CheckpointLoadError, load_pipeline
    from modules.models.registry import CheckpointInfo
    from tools.tiny_gguf import save_gguf

    path = tmp_path / "llm-Q8_0.gguf"
    save_gguf({"blk.0.attn_q.weight": torch.zeros(32, 32)}, path, arch="llama")
    with pytest.raises(CheckpointLoadError, match=r"llm-Q8_0\.gguf is a GGUF file but not of an SD3 or Flux"):
        load_pipeline(CheckpointInfo("llm", "llm", path, "gguf", None, None, None))


def test_a_kontext_folder_is_its_own_variant_with_its_defaults(studio):
    from modules.models.families import checkpoint_defaults

    info = studio.engine.registry.find("tiny-flux-kontext")
    assert checkpoint_defaults(info.family, info.path).variant == "flux-kontext"
    result = studio.run(GenerationRequest(prompt="a red circle", model="tiny-flux-kontext", seed=3))
    assert (result.summary.steps, result.summary.cfg_scale) == (28, 2.5)
    loaded = studio.engine.pipelines.get(info)
    assert type(loaded.base).__name__ == "FluxKontextPipeline" and loaded.edits_images


def test_kontext_txt2img_draws_as_plain_flux(studio):
    # Same transformer, VAE and encoders as tiny-flux (both built from seed 0): without an image, at the same
    # guidance, the same picture.
    kontext = studio.run(request("tiny-flux-kontext", cfg_scale=3.5)).images[0]
    flux = studio.run(request("tiny-flux", cfg_scale=3.5)).images[0]
    assert kontext.image.size == (64, 64)  # the asked size, not rescaled to Kontext's ~1 MP
    assert np.abs(pixels(kontext.image) - pixels(flux.image)).max() <= 1


def test_kontext_img2img_edits_the_init_image_through_its_pipeline(studio):
    red, blue = Image.new("RGB", (64, 48), (220, 30, 30)), Image.new("RGB", (64, 48), (30, 30, 220))

    def edit(image: Image.Image, **fields) -> Image.Image:
        return studio.run(request("tiny-flux-kontext", task="img2img", init_image=image, **fields)).images[0].image

    on_red, again, on_blue = edit(red), edit(red), edit(blue)
    infotext = studio.run(request("tiny-flux-kontext", task="img2img", init_image=red)).images[0].infotext
    assert "Denoising strength" not in infotext and "CFG scale: 2.5," in infotext
    assert on_red.size == (64, 48)
    assert np.array_equal(pixels(on_red), pixels(again))
    assert not np.array_equal(pixels(on_red), pixels(on_blue)), "the edit must see the input image"
    # Every step runs (an edit is drawn from noise with the image as context), whatever the denoising strength;
    # the Flux img2img pipeline would have started from the image itself.
    low = edit(red, denoising_strength=0.2)
    assert np.array_equal(pixels(low), pixels(on_red))
    flux_img2img = studio.run(request("tiny-flux", task="img2img", init_image=red)).images[0].image
    assert not np.array_equal(pixels(flux_img2img), pixels(on_red))


def test_a_kontext_gguf_runs_as_kontext_with_the_kontext_folders_components(studio):
    result = studio.run(GenerationRequest(prompt="a red circle", model="tiny-flux-kontext-Q8_0", seed=3,
                                          task="img2img", init_image=Image.new("RGB", (64, 48), (220, 30, 30))))
    assert (result.summary.steps, result.summary.cfg_scale) == (28, 2.5)
    loaded = studio.engine.pipelines.get(studio.engine.registry.find("tiny-flux-kontext-Q8_0"))
    assert loaded.edits_images and result.images[0].image.size == (64, 48)


def test_a_controlnet_unit_on_a_kontext_edit_is_refused_before_queueing(studio):
    from modules.controlnet.units import ControlNetUnit
    from modules.errors import RequestError

    red = Image.new("RGB", (64, 48), (220, 30, 30))
    with pytest.raises(RequestError) as refused:
        studio.queue.submit(request("tiny-flux-kontext", task="img2img", init_image=red,
                                    controlnet=(ControlNetUnit(model="any-flux-controlnet"),)))
    assert refused.value.field == "controlnet" and "Kontext" in refused.value.message
