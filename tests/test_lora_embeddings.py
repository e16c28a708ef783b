"""LoRAs (``<lora:name:w>``) and textual-inversion embeddings through the queue, on the tiny SD 1.x model.

The LoRA files are made with PEFT on the tiny model's own UNet and text encoder (random, non-zero ``lora_B``) and
saved in both key layouts users download (diffusers/PEFT and kohya/A1111); what is checked is what a user sees:
the pixels change with the LoRA and its weight, nothing of it is left in the next job, and the infotext records
the hashes.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from modules.errors import RequestError
from modules.image.extra_networks import LoraUse, extract_loras
from modules.image.infotext import parse_infotext
from tests.helpers import pixels, txt2img


def _services(root, models):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    return build_services(AppConfig(models_dir=models, outdir=root / "outputs", data_dir=root / "data",
                                    default_ckpt="tiny-sd1"))


@pytest.fixture(scope="module")
def lora_services(tmp_path_factory, tiny_model_store, network_files, one_thread):
    """One studio for the module (the model loads once) whose models folder holds the test LoRAs and embeddings."""
    root = tmp_path_factory.mktemp("lora-studio")
    shutil.copytree(tiny_model_store, root / "models")
    for folder in ("Lora", "embeddings"):
        shutil.copytree(network_files / folder, root / "models" / folder)
    built = _services(root, root / "models")
    built.start()
    yield built
    built.stop()


def run(services, **fields):
    return services.run(txt2img(steps=3, **fields)).images[0]


def differs(a, b) -> float:
    return float(np.abs(pixels(a.image) - pixels(b.image)).max())


def test_prompt_tags_parse_like_a1111():
    prompt, negative, loras = extract_loras("a cat <lora:one:0.5>, <lora:two>", "blurry <LORA:one:0.25:1>")
    assert (prompt, negative) == ("a cat , ", "blurry ")
    assert loras == (LoraUse("one", 0.75, 1.5), LoraUse("two", 1.0, 1.0))
    with pytest.raises(RequestError, match="hypernet"):
        extract_loras("<hypernet:x:1>", "")
    with pytest.raises(RequestError, match="not a number"):
        extract_loras("<lora:x:strong>", "")


def test_lora_weight_changes_pixels_and_nothing_leaks_into_the_next_job(lora_services):
    before = run(lora_services)
    zero = run(lora_services, prompt="a red circle on a blue background <lora:peftstyle:0>")
    full = run(lora_services, prompt="a red circle on a blue background <lora:peftstyle:1>")
    after = run(lora_services)
    assert differs(zero, before) == 0
    assert differs(full, before) > 10
    assert differs(after, before) == 0, "the LoRA leaked into the next job"
    assert "<lora:peftstyle:1>" in full.infotext.splitlines()[0]  # the prompt as written, as A1111 keeps it
    short = lora_services.engine.networks.short_hash(lora_services.config.models_dir / "Lora" / "peftstyle.safetensors")
    assert f'Lora hashes: "peftstyle: {short}"' in full.infotext
    assert "Lora hashes" not in after.infotext
    parsed = parse_infotext(full.infotext)  # pasted back (PNG info, "Read parameters"), it asks for the LoRA again
    assert parsed["Lora hashes"] == f"peftstyle: {short}"
    assert parsed["Prompt"] == "a red circle on a blue background <lora:peftstyle:1>"


def test_kohya_and_peft_files_of_the_same_lora_give_the_same_pixels(lora_services):
    peft = run(lora_services, prompt="a red circle <lora:peftstyle:0.8>")
    kohya = run(lora_services, prompt="a red circle <lora:kohyastyle:0.8>")
    assert differs(peft, kohya) <= 1


def test_two_loras_with_their_own_weights_and_one_in_the_negative_prompt(lora_services):
    one = run(lora_services, prompt="a star <lora:peftstyle:0.7>")
    both = run(lora_services, prompt="a star <lora:peftstyle:0.7> <lora:other:0.4>")
    heavier = run(lora_services, prompt="a star <lora:peftstyle:0.7> <lora:other:1.2>")
    negative = run(lora_services, prompt="a star <lora:peftstyle:0.7>", negative_prompt="<lora:other:0.4>")
    assert differs(both, one) > 0 and differs(heavier, both) > 0
    assert differs(negative, both) <= 1  # A1111 applies a LoRA written in the negative prompt to the model too
    assert "peftstyle: " in both.infotext and "other: " in both.infotext


def test_unknown_lora_is_refused_at_submit_naming_it(lora_services):
    with pytest.raises(RequestError) as caught:
        lora_services.queue.submit(txt2img(prompt="a cat <lora:nope:1>"))
    assert caught.value.field == "prompt" and "nope" in caught.value.message and "peftstyle" in caught.value.message
    with pytest.raises(RequestError) as caught:
        lora_services.queue.submit(txt2img(negative_prompt="<lora:nope2:1>"))
    assert caught.value.field == "negative_prompt"
    assert not lora_services.queue.pending()


@pytest.mark.parametrize(("name", "words"), [("broken", ("broken.safetensors", "truncated")),
                                             ("xl-only", ("xl-only.safetensors", "another architecture"))])
def test_a_bad_lora_fails_its_job_naming_the_file_and_the_next_job_works(lora_services, name, words):
    before = run(lora_services)
    with pytest.raises(RequestError) as caught:
        run(lora_services, prompt=f"a red circle on a blue background <lora:{name}:1>")
    for word in words:
        assert word in caught.value.message
    assert differs(run(lora_services), before) == 0


def test_embedding_names_change_the_pixels_and_are_recorded(lora_services):
    before = run(lora_services)
    shiny = run(lora_services, prompt="a red circle on a blue background, shinyemb")
    glossy = run(lora_services, prompt="a red circle on a blue background", negative_prompt="glossyemb")
    after = run(lora_services)
    assert differs(shiny, before) > 0 and differs(glossy, before) > 0
    assert differs(after, before) == 0, "the embedding's tokens leaked into the next job"
    short = lora_services.engine.networks.short_hash(lora_services.config.models_dir / "embeddings" / "shinyemb.pt")
    assert f"TI hashes: \"shinyemb: {short}\"" in shiny.infotext
    assert "TI hashes" not in after.infotext
    again = run(lora_services, prompt="a red circle on a blue background, shinyemb")
    assert differs(again, shiny) == 0  # loaded, removed, loaded again: the same tokens, the same picture


def test_an_embedding_for_another_architecture_is_named_in_the_error(lora_services):
    with pytest.raises(RequestError, match="xlemb.safetensors"):
        run(lora_services, prompt="a cat, xlemb")
    run(lora_services, prompt="a cat")


def test_sdxl_lora_in_both_layouts_and_an_sdxl_embedding(tmp_path, one_thread):
    """SDXL: kohya keys for two text encoders (``lora_te1_``/``lora_te2_``), with diffusers' or the original
    (``input_blocks_3_1``) UNet block names, and a ``clip_l``/``clip_g`` embedding."""
    from tools.tiny_lora import save_tiny_embedding, save_tiny_lora
    from tools.tiny_model import build_tiny_pipeline

    models = tmp_path / "models"
    pipe = build_tiny_pipeline("sdxl", seed=0)
    pipe.save_pretrained(models / "Stable-diffusion" / "tiny-sdxl", safe_serialization=True)
    save_tiny_lora(pipe, models / "Lora" / "xlpeft.safetensors", "peft", seed=1)
    save_tiny_lora(pipe, models / "Lora" / "xlkohya.safetensors", "kohya", seed=1)
    save_tiny_lora(pipe, models / "Lora" / "xlsgm.safetensors", "kohya-sgm", seed=1)  # kohya's SDXL block names
    save_tiny_embedding(models / "embeddings" / "cat.safetensors", vectors=2, seed=2, sdxl_dim=64)  # "cat": a word
    services = _services(tmp_path, models)
    services.start()
    try:
        before = run(services, model="tiny-sdxl")
        peft = run(services, model="tiny-sdxl", prompt="a red circle <lora:xlpeft:1>")
        kohya = run(services, model="tiny-sdxl", prompt="a red circle <lora:xlkohya:1>")
        sgm = run(services, model="tiny-sdxl", prompt="a red circle <lora:xlsgm:1>")
        assert differs(peft, before) > 10 and differs(kohya, peft) <= 1 and differs(sgm, peft) <= 1
        assert differs(run(services, model="tiny-sdxl"), before) == 0
        with_cat = run(services, model="tiny-sdxl", prompt="a red circle on a blue background, Cat")
        assert differs(with_cat, before) > 0 and "TI hashes: \"cat: " in with_cat.infotext
        assert differs(run(services, model="tiny-sdxl"), before) == 0
    finally:
        services.stop()


def test_a_bad_second_lora_takes_the_first_one_out_too(lora_services):
    before = run(lora_services)
    with pytest.raises(RequestError, match="broken.safetensors"):
        run(lora_services, prompt="a red circle on a blue background <lora:peftstyle:1> <lora:broken:1>")
    assert differs(run(lora_services), before) == 0
