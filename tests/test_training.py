"""The train kind on the tiny SD 1.x model: LoRA and textual inversion learn from a few pictures and land where
the studio (and A1111) finds them; a stopped run resumes to exactly the weights of an uninterrupted one."""

from __future__ import annotations

import re
import shutil
import threading

import numpy as np
import pytest
from safetensors import safe_open

from modules.errors import RequestError
from modules.training.request import TrainRequest
from tests.helpers import pixels, txt2img
from tests.training_helpers import heart_folder

# The names A1111's Lora extension maps to its own modules (extensions-builtin/Lora/lora_convert.py /
# networks.py: ``lora_unet_{down,up}_blocks_N_attentions_N_*``, ``lora_unet_mid_block_attentions_0_*``,
# ``lora_te_text_model_encoder_layers_N_*``), each with ``.lora_down.weight``, ``.lora_up.weight`` and ``.alpha``.
A1111_UNET = re.compile(r"^lora_unet_(down_blocks_\d+_attentions_\d+|up_blocks_\d+_attentions_\d+|"
                        r"mid_block_attentions_0)_transformer_blocks_\d+_attn[12]_(to_q|to_k|to_v|to_out_0)\.(lora_down\.weight|lora_up\.weight|alpha)$")
A1111_TE = re.compile(r"^lora_te_text_model_encoder_layers_\d+_(self_attn_(q|k|v|out)_proj|mlp_fc[12])"
                      r"\.(lora_down\.weight|lora_up\.weight|alpha)$")


def train_request(folder, **fields) -> TrainRequest:
    base = dict(output_name="hearty", data_dir=str(folder), instance_prompt="a sks on a plain background",
                resolution=64, steps=6, checkpoint_every=2, learning_rate=2e-3, seed=3)
    base.update(fields)
    return TrainRequest(**base)


@pytest.fixture
def hearts(tmp_path):
    return heart_folder(tmp_path / "hearts")


def read_tensors(path):
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
    return load_file(str(path)), metadata


def test_lora_trains_into_a_kohya_file_that_the_lora_path_applies(services, hearts, one_thread):
    result = services.run(train_request(hearts, train_text_encoder=True, sample_every=3,
                                        sample_prompts=("a sks",), sample_steps=2), timeout=600)
    path = services.config.models_dir / "Lora" / "hearty.safetensors"
    assert result.output == path and path.is_file()
    assert len(result.losses) == 6 and all(np.isfinite(result.losses))
    tensors, metadata = read_tensors(path)
    assert metadata["ss_output_name"] == "hearty" and metadata["ss_network_dim"] == "4"
    unet = [key for key in tensors if key.startswith("lora_unet_")]
    text = [key for key in tensors if key.startswith("lora_te_")]
    assert unet and text
    assert [key for key in unet if not A1111_UNET.match(key)] == []
    assert [key for key in text if not A1111_TE.match(key)] == []
    for key in tensors:
        if key.endswith(".lora_down.weight"):
            base = key.removesuffix(".lora_down.weight")
            assert tensors[base + ".lora_up.weight"].shape[1] == tensors[key].shape[0] == 4
            assert float(tensors[base + ".alpha"]) == 4.0
    # the training images are pictures, the samples too; the curve shows the run
    kinds = [artifact.type for artifact in result.artifacts]
    assert kinds.count("file") == 1 and kinds.count("image") == 1 + 2

    plain = services.run(txt2img(prompt="a sks on a plain background", steps=3)).images[0]
    with_lora = services.run(txt2img(prompt="a sks on a plain background <lora:hearty:1>", steps=3)).images[0]
    assert np.abs(pixels(plain.image) - pixels(with_lora.image)).max() > 5
    assert "hearty: " in with_lora.infotext  # Lora hashes: the studio's LoRA path applied it


def test_tensorboard_events_and_the_loss_curve_record_the_run(services, hearts, one_thread):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = services.run(train_request(hearts, output_name="logged", steps=4, tensorboard=True), timeout=600)
    events = EventAccumulator(str(result.run_folder / "tensorboard"))
    events.Reload()
    losses = [event.value for event in events.Scalars("loss")]
    assert [event.step for event in events.Scalars("loss")] == [1, 2, 3, 4]
    assert losses == pytest.approx(result.losses, rel=1e-6)
    with Image.open(result.loss_curve) as curve:
        drawn = np.asarray(curve.convert("RGB"))
    assert curve.size == (480, 240)
    assert (np.abs(drawn.astype(int) - (30, 80, 200)).sum(axis=2) < 30).sum() > 50  # the smoothed line is there
    assert (result.run_folder / "config.json").is_file()


def test_bf16_mixed_precision_runs_after_a_full_precision_run_in_the_same_process(services, hearts, one_thread):
    first = services.run(train_request(hearts, output_name="full", steps=2), timeout=600)
    mixed = services.run(train_request(hearts, output_name="mixed", steps=2, mixed_precision="bf16",
                                       gradient_accumulation=2), timeout=600)
    assert first.output is not None and mixed.output is not None
    assert all(np.isfinite(mixed.losses)) and mixed.losses != first.losses  # bf16 rounds differently
    tensors, _ = read_tensors(mixed.output)
    assert {str(value.dtype) for value in tensors.values()} == {"torch.float32"}  # saved in full precision


def test_textual_inversion_trains_an_a1111_embedding_the_prompt_uses(services, hearts, one_thread):
    import torch

    prompt = "a heartemb on a plain background"
    before = services.run(txt2img(prompt=prompt, steps=3)).images[0]  # a word the tokenizer splits, no embedding
    result = services.run(train_request(hearts, method="textual_inversion", output_name="heartemb", ti_vectors=2,
                                        learning_rate=5e-2), timeout=600)
    path = services.config.models_dir / "embeddings" / "heartemb.pt"
    assert result.output == path
    data = torch.load(path, weights_only=False)
    assert data["string_to_param"]["*"].shape == (2, 64) and data["step"] == 6 and data["name"] == "heartemb"
    after = services.run(txt2img(prompt=prompt, steps=3)).images[0]  # the folder is scanned per job: used at once
    assert "TI hashes" in after.infotext and "heartemb: " in after.infotext
    assert np.abs(pixels(before.image) - pixels(after.image)).max() > 5


def _lora_tensors(services, name="hearty"):
    return read_tensors(services.config.models_dir / "Lora" / f"{name}.safetensors")[0]


def test_a_cancelled_run_resumes_to_the_weights_of_an_uninterrupted_one(services, hearts, one_thread):
    request = train_request(hearts, steps=8, checkpoint_every=1)
    whole = services.run(request.replace(output_name="whole"), timeout=600)
    reference = _lora_tensors(services, "whole")

    job = services.queue.submit(request.replace(output_name="split"))
    stopped = threading.Event()

    def stop_after_three(_job_id):
        if job.progress.step >= 3 and not stopped.is_set():
            stopped.set()
            services.queue.cancel(job.id)

    while not job.done_event.wait(0.02):
        stop_after_three(job.id)
    first = job.result
    assert first.stopped and first.output is None and 3 <= first.step < 8
    assert not (services.config.models_dir / "Lora" / "split.safetensors").exists()
    checkpoints = services.queue.kinds.get("train").run.__self__.run_folder(request.replace(output_name="split"))
    assert checkpoints.latest_checkpoint()[0] == first.step  # the stop kept where it got to

    again = services.run(request.replace(output_name="split"), timeout=600)
    assert again.resumed_from == first.step
    assert again.losses == whole.losses
    resumed = _lora_tensors(services, "split")
    assert resumed.keys() == reference.keys()
    assert all(torch_equal(resumed[key], reference[key]) for key in reference)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


@pytest.mark.parametrize("fields, field, words", [
    (dict(data_dir=None), "images", "no training images"),
    (dict(resolution=32), "resolution", "between"),
    (dict(resolution=70), "resolution", "multiple of 8"),
    (dict(lora_rank=0), "lora_rank", "between"),
    (dict(lora_rank=1000), "lora_rank", "between"),
    (dict(rare_token="sfumato", instance_prompt="a sfumato"), "rare_token", "e.g. 'sks'"),
    (dict(instance_prompt="a heart"), "instance_prompt", "sks"),
    (dict(output_name="../escape"), "output_name", "name"),
    (dict(prior_preservation=True), "class_prompt", "class prompt"),
    (dict(class_data_dir="/tmp"), "class_data_dir", "prior preservation"),
    (dict(prior_preservation=True, class_prompt="a shape", prior_target="model"), "prior_target", "base_model"),
    (dict(prior_preservation=True, class_prompt="a shape", prior_target="base_model", method="dreambooth"),
     "prior_target", "LoRA"),
    (dict(prior_preservation=True, class_data_dir="/no/such/folder"), "class_data_dir", "does not exist"),
    (dict(base_model="nothing-like-this"), "base_model", "nothing-like-this"),
    (dict(data_dir="/no/such/folder"), "data_dir", "does not exist"),
    (dict(mixed_precision="fp16"), "mixed_precision", "CUDA"),
])
def test_bad_requests_are_refused_naming_the_field_and_nothing_is_queued(services, hearts, fields, field, words):
    with pytest.raises(RequestError) as caught:
        services.queue.submit(train_request(hearts, **fields))
    assert caught.value.field == field and words in caught.value.message
    assert services.queue.jobs() == []


def test_unreadable_images_and_other_families_are_refused(services, hearts):
    (hearts / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(RequestError, match="broken.png cannot be read") as caught:
        services.queue.submit(train_request(hearts))
    assert caught.value.field == "data_dir"
    (hearts / "broken.png").unlink()
    from tools.tiny_model import save_tiny_model

    save_tiny_model(services.config.models_dir / "Stable-diffusion" / "tiny-sd3", family="sd3")
    services.engine.registry.refresh()
    with pytest.raises(RequestError, match="sd3 model") as caught:
        services.queue.submit(train_request(hearts, base_model="tiny-sd3"))
    assert caught.value.field == "base_model"


def test_a_failed_write_leaves_no_file_in_models(services, hearts, one_thread):
    blocker = services.config.models_dir / "Lora" / "hearty.safetensors"
    blocker.mkdir(parents=True)  # a directory where the file should go: the final rename fails
    job = services.queue.submit(train_request(hearts, steps=2))
    job.done_event.wait(600)
    assert job.state == "failed" and "Nothing half-written was left there" in job.error
    assert sorted(path.name for path in blocker.parent.iterdir()) == ["hearty.safetensors"]
    assert blocker.is_dir() and not any(blocker.iterdir())
    shutil.rmtree(blocker)
    # the worker goes on, and the same request finishes from the checkpoint the failed run kept
    again = services.run(train_request(hearts, steps=2), timeout=600)
    assert again.output == blocker and blocker.is_file()


def test_prior_preservation_class_images_come_from_the_generation_path_and_are_reused(services, hearts, one_thread):
    from modules.image.request import GenerationRequest

    # two class prompts, one per line: the class images cycle through them
    request = train_request(hearts, output_name="prior", steps=2, prior_preservation=True,
                            class_prompt="a shape\n a red circle \n", num_class_images=2, class_steps=2, seed=11)
    first = services.run(request, timeout=600)
    assert first.output is not None
    caches = [path for path in (services.config.data_dir / "training" / "class-images").iterdir() if path.is_dir()]
    assert len(caches) == 1
    made = sorted(caches[0].glob("*.png"))
    assert [path.name for path in made] == ["00000.png", "00001.png"]
    stamps = [path.stat().st_mtime_ns for path in made]
    # the same pictures an ordinary txt2img job makes with each line of the class prompt and the cache's seeds
    title = services.engine.registry.find("tiny-sd1").title
    for index, (path, prompt) in enumerate(zip(made, ["a shape", "a red circle"], strict=True)):
        ordinary = services.run(GenerationRequest(prompt=prompt, model=title, width=64, height=64, steps=2,
                                                  seed=11 + index)).images[0]
        from PIL import Image

        with Image.open(path) as cached:
            assert np.array_equal(pixels(cached), pixels(ordinary.image))
    second = services.run(request.replace(output_name="prior-again", seed=11), timeout=600)
    assert second.output is not None
    assert [path.stat().st_mtime_ns for path in made] == stamps  # reused, not made again
    assert second.losses == first.losses  # the same run under another name


def class_folder_of(folder, colours: list[tuple[int, int, int]], captioned: bool = True):
    """A folder of plain class pictures, one per colour, each captioned "a shape" (or not)."""
    from PIL import Image

    folder.mkdir(parents=True)
    for index, colour in enumerate(colours):
        Image.new("RGB", (64, 64), colour).save(folder / f"class-{index}.png")
        if captioned:
            (folder / f"class-{index}.txt").write_text("a shape", encoding="utf-8")
    return folder


def test_own_class_images_are_trained_on_and_topped_up_with_generated_ones(services, hearts, tmp_path, one_thread):
    cache_root = services.config.data_dir / "training" / "class-images"
    red = class_folder_of(tmp_path / "red", [(200, 30, 30), (180, 20, 20)])
    blue = class_folder_of(tmp_path / "blue", [(30, 30, 200), (20, 20, 180)])
    request = train_request(hearts, output_name="own-prior", steps=2, prior_preservation=True,
                            class_data_dir=str(red), num_class_images=2, class_steps=2)
    on_red = services.run(request, timeout=600)
    on_blue = services.run(request.replace(class_data_dir=str(blue)), timeout=600)
    assert on_red.output is not None and on_blue.output is not None
    assert on_red.losses != on_blue.losses  # the folder's pictures are what the prior loss sees
    assert not cache_root.exists()  # enough pictures of its own: nothing generated
    # with a class prompt and fewer pictures than asked, only the missing ones are made by the model
    services.run(request.replace(class_prompt="a shape", num_class_images=3), timeout=600)
    made = [path.name for cache in cache_root.iterdir() for path in cache.glob("*.png")]
    assert made == ["00000.png"]


def test_with_the_base_models_output_as_prior_target_the_untrained_lora_owes_the_prior_nothing(
        services, hearts, tmp_path, one_thread):
    # At step 1 the LoRA's up-projections are still zero, so the model is the base: its prediction on the class
    # pictures is exactly the base model's, and the prior half's loss is 0 whatever its weight. With the class
    # pictures' own noise as the target (DreamBooth's prior) it is not.
    class_dir = class_folder_of(tmp_path / "class", [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)])
    request = train_request(hearts, steps=1, checkpoint_every=1, prior_preservation=True,
                            class_data_dir=str(class_dir))
    first = {}
    for target in ("images", "base_model"):
        for weight in (0.0, 100.0):
            result = services.run(request.replace(output_name=f"p-{target}-{weight:g}", prior_target=target,
                                                  prior_loss_weight=weight), timeout=600)
            first[target, weight] = result.losses[0]
    assert first["base_model", 100.0] == pytest.approx(first["base_model", 0.0], rel=1e-6)
    assert first["images", 100.0] > 2 * first["images", 0.0]


def test_own_class_images_without_captions_need_a_class_prompt(services, hearts, tmp_path):
    bare = class_folder_of(tmp_path / "bare", [(200, 30, 30)], captioned=False)
    request = train_request(hearts, prior_preservation=True, class_data_dir=str(bare))
    with pytest.raises(RequestError, match="class-0.png") as caught:
        services.queue.submit(request)
    assert caught.value.field == "class_prompt"
    (bare / "broken.png").write_bytes(b"not a png")
    with pytest.raises(RequestError, match="broken.png cannot be read") as caught:
        services.queue.submit(request.replace(class_prompt="a shape"))
    assert caught.value.field == "class_data_dir"
    assert services.queue.jobs() == []


def test_dreambooth_writes_a_model_the_checkpoint_list_loads(services, hearts, one_thread):
    result = services.run(train_request(hearts, method="dreambooth", output_name="dreamheart", steps=2,
                                        learning_rate=1e-3), timeout=600)
    assert result.output == services.config.models_dir / "Stable-diffusion" / "dreamheart.safetensors"
    info = services.engine.registry.find("dreamheart")
    assert info.family == "sd1" and info.kind == "safetensors"  # one file in the original (A1111) layout
    base = services.run(txt2img(prompt="a sks on a plain background", steps=3)).images[0]
    tuned = services.run(txt2img(prompt="a sks on a plain background", steps=3, model="dreamheart")).images[0]
    assert np.abs(pixels(base.image) - pixels(tuned.image)).max() > 5
    assert not [path for path in result.output.parent.iterdir() if path.name.startswith(".")]


def test_an_sdxl_lora_trains_in_kohya_sdxl_names_and_applies(services, hearts, one_thread):
    from tools.tiny_model import save_tiny_model

    save_tiny_model(services.config.models_dir / "Stable-diffusion" / "tiny-xl", family="sdxl")
    services.engine.registry.refresh()
    result = services.run(train_request(hearts, base_model="tiny-xl", output_name="xlheart", steps=3,
                                        train_text_encoder=True, learning_rate=1e-2), timeout=600)
    tensors, metadata = read_tensors(result.output)
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    unet = [key for key in tensors if key.startswith("lora_unet_")]
    sgm = re.compile(r"^lora_unet_(input_blocks_\d+_1|output_blocks_\d+_1|middle_block_1)_transformer_blocks_\d+_")
    assert unet and [key for key in unet if not sgm.match(key)] == []
    assert any(key.startswith("lora_te1_text_model_encoder_layers_") for key in tensors)
    assert any(key.startswith("lora_te2_text_model_encoder_layers_") for key in tensors)
    request = txt2img(prompt="a sks on a plain background", steps=3, model="tiny-xl")
    plain = services.run(request).images[0]
    tuned = services.run(request.replace(prompt=request.prompt + " <lora:xlheart:1>")).images[0]
    assert np.abs(pixels(plain.image) - pixels(tuned.image)).max() > 5  # a LoRA fresh from PEFT would change nothing
    assert "xlheart: " in tuned.infotext
    with pytest.raises(RequestError, match="on SDXL use LoRA"):
        services.queue.submit(train_request(hearts, base_model="tiny-xl", method="textual_inversion"))


def test_a_model_file_left_half_written_by_a_kill_is_removed_at_start(app_config):
    import os

    from modules.runtime.services import build_services

    lora = app_config.models_dir / "Lora"
    lora.mkdir(parents=True, exist_ok=True)
    stale = lora / ".hearty.safetensors.k3j_x9a2.tmp"  # atomic_write's temporary name, as a kill leaves it
    stale.write_bytes(b"half a LoRA")
    os.utime(stale, (1, 1))
    built = build_services(app_config)
    built.start()
    built.stop()
    assert not stale.exists()


def test_buckets_group_images_by_aspect_and_the_order_follows_seed_and_step():
    from modules.training.data import batch_at, bucket_sizes, epoch_batches, nearest_bucket

    sizes = bucket_sizes(512, True)
    assert {(512, 512), (384, 640), (640, 384), (256, 512), (512, 256)} <= set(sizes)
    assert set(bucket_sizes(128, True)) == {(64, 128), (128, 128), (128, 64)}
    assert all(w % 64 == 0 and h % 64 == 0 and 256 * 512 <= w * h <= 512 * 512 and 0.5 <= w / h <= 2
               for w, h in sizes)
    assert nearest_bucket((600, 1000), sizes) == (384, 640) and nearest_bucket((1000, 990), sizes) == (512, 512)
    assert bucket_sizes(512, False) == [(512, 512)]
    buckets = [(512, 512)] * 5 + [(384, 640)] * 3
    batches = epoch_batches(buckets, 2, seed=4, epoch=0)
    assert sorted(index for batch in batches for index in batch) == list(range(8))
    assert all(len({buckets[index] for index in batch}) == 1 for batch in batches)
    assert epoch_batches(buckets, 2, seed=4, epoch=1) != batches  # a new shuffle each epoch...
    assert [batch_at(micro, buckets, 2, seed=4) for micro in range(len(batches))] == batches  # ...fixed by the seed


def test_every_option_together_trains(services, tmp_path, one_thread):
    from PIL import Image

    folder = heart_folder(tmp_path / "mixed")
    Image.open(folder / "heart-0.png").resize((64, 128)).save(folder / "tall.png")  # the 64 x 128 bucket
    result = services.run(train_request(folder, output_name="options", resolution=128, steps=3, batch_size=2,
                                        gradient_accumulation=2, flip=True, random_crop=True, ema=True,
                                        gradient_checkpointing=True, lr_schedule="cosine", lr_warmup_steps=1,
                                        sample_every=3, sample_prompts=("a sks",), sample_steps=2), timeout=600)
    assert result.output is not None and len(result.losses) == 3 and all(np.isfinite(result.losses))
    assert len(result.samples) == 1
