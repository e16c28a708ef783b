"""Training over HTTP: native jobs of kind ``train`` (uploaded images, progress with the loss curve as preview,
the LoRA in the result) and A1111's ``/sdapi/v1/create/embedding`` + ``/sdapi/v1/train/embedding``."""

from __future__ import annotations

import time

import httpx
import pytest
import torch

from tests.api_studio import b64, running_studio
from tests.training_helpers import COLOURS, heart, heart_folder


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_store):
    with running_studio(tmp_path_factory.mktemp("train-api"), tiny_model_store) as running:
        yield running


def wait_ended(client: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/api/v1/jobs/{job_id}").json()
        if view["state"] in ("done", "failed", "cancelled") and view["finished"]:
            return view
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


def test_a_native_train_job_from_uploads_makes_a_lora(studio, one_thread):
    images = [b64(heart(64, shape, background)) for shape, background in COLOURS[:3]]
    with httpx.Client(base_url=studio.url, timeout=120) as client:
        answer = client.post("/api/v1/jobs", json={
            "kind": "train", "output_name": "apiheart", "images": images, "captions": ["a sks", "", "a sks shape"],
            "instance_prompt": "a sks on a plain background", "resolution": 64, "steps": 4, "checkpoint_every": 2,
            "learning_rate": 0.002})
        assert answer.status_code == 202, answer.text
        view = wait_ended(client, answer.json()["id"])
        assert view["kind"] == "train" and view["state"] == "done", view
        result = view["result"]
        assert result["output"].endswith("models/Lora/apiheart.safetensors") and len(result["losses"]) == 4
        types = [artifact["type"] for artifact in result["artifacts"]]
        assert types == ["file", "image"]  # the LoRA, then its loss curve
        curve = client.get(result["artifacts"][1]["url"])
        assert curve.status_code == 200 and curve.headers["content-type"] == "image/png"
        lora = client.get("/sdapi/v1/loras").json()
        assert "apiheart" in [item["name"] for item in lora]


def test_a_bad_train_job_is_refused_naming_the_field(studio):
    with httpx.Client(base_url=studio.url, timeout=60) as client:
        answer = client.post("/api/v1/jobs", json={"kind": "train", "output_name": "x", "images": [],
                                                   "instance_prompt": "a sks"})
        assert answer.status_code == 422
        assert "images" in answer.text and "no training images" in answer.text


def test_a1111_creates_and_trains_an_embedding(studio, tmp_path, one_thread):
    folder = heart_folder(tmp_path / "hearts", captions=False)
    models = studio.services.config.models_dir
    with httpx.Client(base_url=studio.url, timeout=300) as client:
        created = client.post("/sdapi/v1/create/embedding",
                              json={"name": "apiemb", "num_vectors_per_token": 2, "init_text": "heart"})
        assert created.status_code == 200, created.text
        assert created.json() == {"info": f"create embedding filename: {models / 'embeddings' / 'apiemb.pt'}"}
        start = torch.load(models / "embeddings" / "apiemb.pt", weights_only=False)
        assert start["step"] == 0 and start["string_to_param"]["*"].shape == (2, 64)
        again = client.post("/sdapi/v1/create/embedding", json={"name": "apiemb"})
        assert again.status_code == 409 and "already exists" in again.text

        trained = client.post("/sdapi/v1/train/embedding", json={
            "embedding_name": "apiemb", "learn_rate": "0.05:2, 0.01", "data_root": str(folder),
            "training_width": 64, "training_height": 64, "steps": 3, "save_embedding_every": 2,
            "create_image_every": 0, "log_directory": "textual_inversion", "template_filename": "subject.txt"})
        assert trained.status_code == 200, trained.text
        path = models / "embeddings" / "apiemb.pt"
        assert trained.json() == {"info": f"train embedding complete: filename: {path} error: None"}
        end = torch.load(path, weights_only=False)
        assert end["step"] == 3 and not torch.equal(end["string_to_param"]["*"], start["string_to_param"]["*"])
        missing = client.post("/sdapi/v1/train/embedding", json={"embedding_name": "nope", "data_root": str(folder)})
        assert missing.status_code == 422 and "create it first" in missing.text
