"""Pivotal tuning on the tiny SD 1.x model: the rare token's embedding trains with the LoRA, travels inside the
LoRA file as A1111 and kohya bundle it (``bundle_emb.<token>.string_to_param.*``), and a prompt that uses the LoRA
gets the token with it, for that job only."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from modules.errors import RequestError
from modules.training.request import TrainRequest
from tests.helpers import pixels, txt2img
from tests.training_helpers import heart_folder

BUNDLE = "bundle_emb.sks.string_to_param.*"  # the key A1111's Lora extension reads as the embedding "sks"
PROMPT = "a sks on a plain background"


def pivotal_request(folder, **fields) -> TrainRequest:
    base = dict(output_name="pivot", data_dir=str(folder), instance_prompt=PROMPT, resolution=64, steps=6,
                checkpoint_every=2, learning_rate=2e-3, seed=3, train_token_embedding=True,
                embedding_learning_rate=5e-2)
    base.update(fields)
    return TrainRequest(**base)


@pytest.fixture
def hearts(tmp_path):
    return heart_folder(tmp_path / "hearts")


def run(services, prompt: str):
    return services.run(txt2img(prompt=prompt, steps=3)).images[0]


def differs(a, b) -> float:
    return float(np.abs(pixels(a.image) - pixels(b.image)).max())


def token_row(services, word: str) -> torch.Tensor:
    """The base model's input embedding of ``word`` (one token)."""
    loaded = services.engine.pipelines.get(services.engine.resolve_model(None)).base
    ids = loaded.tokenizer(word, add_special_tokens=False).input_ids
    assert len(ids) == 1
    return loaded.text_encoder.get_input_embeddings().weight[ids[0]].detach().float()


def test_the_token_trains_with_the_lora_and_comes_with_it_into_a_job(services, hearts, one_thread):
    before = run(services, PROMPT)
    vocabulary = len(services.engine.pipelines.get(services.engine.resolve_model(None)).base.tokenizer)
    result = services.run(pivotal_request(hearts, token_init_text="shape"), timeout=600)
    path = services.config.models_dir / "Lora" / "pivot.safetensors"
    assert result.output == path
    tensors = load_file(str(path))
    bundled = tensors[BUNDLE]
    assert bundled.shape == (1, 64)
    start = token_row(services, "shape")
    assert not torch.allclose(bundled[0], start), "the embedding did not train"
    assert float((bundled[0] - start).norm()) < float(start.norm()) * 10  # trained from "shape", not from noise
    assert all(key.startswith(("lora_unet_", "bundle_emb.")) for key in tensors)

    # the same LoRA without its bundled embedding, to see what the embedding does on its own
    save_file({key: value for key, value in tensors.items() if key != BUNDLE},
              str(path.with_name("pivot-bare.safetensors")), metadata={"ss_output_name": "pivot-bare"})
    with_token = run(services, f"{PROMPT} <lora:pivot:1>")
    bare = run(services, f"{PROMPT} <lora:pivot-bare:1>")
    assert differs(with_token, bare) > 5, "the bundled embedding was not used"
    # a prompt without the token: the bundle changes nothing
    assert differs(run(services, "a circle <lora:pivot:1>"), run(services, "a circle <lora:pivot-bare:1>")) == 0
    # the next job without the LoRA: "sks" is the base model's word again, nothing added to the tokenizer
    after = run(services, PROMPT)
    assert differs(after, before) == 0, "the bundled embedding leaked into the next job"
    assert len(services.engine.pipelines.get(services.engine.resolve_model(None)).base.tokenizer) == vocabulary
    assert "pivot: " in with_token.infotext and "TI hashes" not in with_token.infotext  # recorded with its LoRA


def test_a_bundled_embedding_from_another_trainer_loads_and_a_file_of_the_same_name_yields(lora_free_studio):
    """A kohya-style file written by hand: an SDXL pair under ``clip_l``/``clip_g`` is refused on SD 1.x naming
    the LoRA, and the bundled "sks" wins over an embedding file called sks.pt while the LoRA is in the job."""
    services, models = lora_free_studio
    generator = torch.Generator().manual_seed(0)
    save_file({"bundle_emb.sks.string_to_param.*": torch.randn(1, 64, generator=generator) * 0.5},
              str(models / "Lora" / "onlytoken.safetensors"))
    save_file({"bundle_emb.xltok.clip_l": torch.randn(1, 64, generator=generator),
               "bundle_emb.xltok.clip_g": torch.randn(1, 64, generator=generator)},
              str(models / "Lora" / "xltoken.safetensors"))
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(1, 64, generator=generator)}},
               str(models / "embeddings" / "sks.pt"))
    from modules.models.networks import NetworkFile, read_bundled_embeddings

    pair = read_bundled_embeddings(NetworkFile("xltoken", models / "Lora" / "xltoken.safetensors", "xltoken"))
    assert set(pair) == {"xltok"} and set(pair["xltok"]) == {"clip_l", "clip_g"}
    with pytest.raises(RequestError, match="xltok bundled in xltoken.safetensors"):
        run(services, "a xltok <lora:xltoken:1>")

    file_only = run(services, PROMPT)  # sks.pt applies as an ordinary embedding
    bundled = run(services, f"{PROMPT} <lora:onlytoken:1>")
    assert "TI hashes" in file_only.infotext and "TI hashes" not in bundled.infotext
    assert differs(bundled, file_only) > 5


@pytest.fixture
def lora_free_studio(app_config, one_thread):
    from modules.runtime.services import build_services

    for folder in ("Lora", "embeddings"):
        (app_config.models_dir / folder).mkdir(parents=True, exist_ok=True)
    built = build_services(app_config)
    built.start()
    yield built, app_config.models_dir
    built.stop()


def test_a_cancelled_pivotal_run_resumes_to_the_same_lora_and_embedding(services, hearts, one_thread):
    request = pivotal_request(hearts, steps=6, checkpoint_every=1)
    whole = services.run(request.replace(output_name="whole"), timeout=600)
    again_whole = services.run(request.replace(output_name="again", resume=False), timeout=600)
    assert again_whole.losses == whole.losses  # seeded: the same run twice is the same run

    job = services.queue.submit(request.replace(output_name="split"))
    stopped = threading.Event()
    while not job.done_event.wait(0.02):
        if job.progress.step >= 2 and not stopped.is_set():
            stopped.set()
            services.queue.cancel(job.id)
    assert job.result.stopped and job.result.step < 6
    resumed = services.run(request.replace(output_name="split"), timeout=600)
    assert resumed.resumed_from == job.result.step and resumed.losses == whole.losses
    a = load_file(str(services.config.models_dir / "Lora" / "split.safetensors"))
    b = load_file(str(services.config.models_dir / "Lora" / "whole.safetensors"))
    assert BUNDLE in a and a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("fields, field, words", [
    (dict(method="textual_inversion"), "train_token_embedding", "LoRA option"),
    (dict(method="dreambooth"), "train_token_embedding", "LoRA option"),
    (dict(embedding_learning_rate=0.0), "embedding_learning_rate", "above 0"),
    (dict(embedding_learning_rate=float("nan")), "embedding_learning_rate", "above 0"),
])
def test_bad_pivotal_requests_are_refused_naming_the_field(services, hearts, fields, field, words):
    with pytest.raises(RequestError) as caught:
        services.queue.submit(pivotal_request(hearts, **fields))
    assert caught.value.field == field and words in caught.value.message
    assert services.queue.jobs() == []


def test_the_train_tab_and_the_native_api_ask_for_it():
    from app.api.training import TrainJobBody, to_train_request
    from app.ui.train_tab import request_from_values

    numbers = dict(prior_loss_weight=1, num_class_images=5, resolution=64, steps=2, batch_size=1,
                   gradient_accumulation=1, learning_rate=1e-4, lr_warmup_steps=0, seed=0, lora_rank=4, lora_alpha=4,
                   ti_vectors=1, checkpoint_every=1, checkpoint_limit=1, sample_every=0)
    tab = request_from_values({**numbers, "method": "LoRA", "output_name": "x", "data_dir": "/data",
                               "instance_prompt": "a sks", "rare_token": "sks", "train_token_embedding": True,
                               "embedding_learning_rate": 0.02, "token_init_text": " circle "})
    wire = to_train_request(TrainJobBody(kind="train", output_name="x", data_dir="/data", train_token_embedding=True,
                                         embedding_learning_rate=0.02, token_init_text="circle"))
    for request in (tab, wire):
        assert (request.train_token_embedding, request.embedding_learning_rate, request.token_init_text) == (
            True, 0.02, "circle")
    assert not request_from_values({**numbers, "output_name": "x", "embedding_learning_rate": 5e-3}
                                   ).train_token_embedding


def test_a_run_saved_before_the_pivotal_fields_existed_is_still_the_same_run(tmp_path):
    from modules.training.kind import run_config
    from modules.training.run_folder import identity

    config = run_config(pivotal_request(tmp_path, train_token_embedding=False, embedding_learning_rate=5e-3),
                        tmp_path / "inputs", None)
    older = {key: value for key, value in config.items()
             if key not in ("train_token_embedding", "embedding_learning_rate", "token_init_text")}
    assert identity(older) == identity(config)
    assert identity(older) != identity({**config, "train_token_embedding": True})
