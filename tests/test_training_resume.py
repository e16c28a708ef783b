"""A training run killed with SIGKILL, or cut short by a queue shutdown, resumes from its newest checkpoint and
ends with exactly the weights and loss curve of a run that was never interrupted (the LoRA on the UNet and the text
encoder, and the rare token's embedding trained with them; a textual inversion's vectors)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modules.training.kind import run_config
from modules.training.request import TrainRequest
from tests.training_helpers import heart_folder

ROOT = Path(__file__).resolve().parent.parent
STEPS = 30


def _request(data: Path, name: str = "killed", method: str = "lora") -> TrainRequest:
    common = dict(output_name=name, base_model="tiny-sd1", data_dir=str(data),
                  instance_prompt="a sks on a plain background", resolution=64, steps=STEPS, checkpoint_every=1,
                  checkpoint_limit=2, seed=5)
    if method == "textual_inversion":
        return TrainRequest(method=method, learning_rate=5e-2, ti_vectors=2, **common)
    return TrainRequest(learning_rate=2e-3, train_text_encoder=True, train_token_embedding=True,
                        embedding_learning_rate=1e-2, **common)  # pivotal: the token's vector too


def _trained(models: Path, method: str) -> dict:
    """The run's result file as tensors by name: the LoRA's, or the embedding's vectors."""
    if method == "textual_inversion":
        data = torch.load(models / "embeddings" / "killed.pt", weights_only=False)
        return {"string_to_param": data["string_to_param"]["*"], "step": torch.tensor(data["step"])}
    return load_file(str(models / "Lora" / "killed.safetensors"))


def _train(config: Path, models: Path, data: Path, log: Path, resume: bool = False) -> subprocess.Popen:
    args = [sys.executable, "-m", "tools.train", "--config", str(config), "--models-dir", str(models),
            "--data-dir", str(data), "--threads", "1", *(["--resume"] if resume else [])]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    with open(log, "ab") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, log: Path) -> dict:
    assert process.wait(600) == 0, log.read_text(errors="replace")
    return json.loads(log.read_text(errors="replace").strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "textual_inversion"])
def test_a_run_killed_with_sigkill_resumes_to_the_same_weights_and_losses(tmp_path, tiny_model_store, method):
    hearts = heart_folder(tmp_path / "hearts")
    roots = {}
    for name in ("whole", "killed"):
        roots[name] = tmp_path / name
        shutil.copytree(tiny_model_store / "Stable-diffusion", roots[name] / "models" / "Stable-diffusion")
    config = tmp_path / "run" / "config.json"
    config.parent.mkdir()
    request = _request(hearts, method=method)
    config.write_text(json.dumps(run_config(request, config.parent / "inputs", None)), encoding="utf-8")

    whole = _train(config, roots["whole"] / "models", roots["whole"] / "data", tmp_path / "whole.log")
    killed_log = tmp_path / "killed.log"
    victim = _train(config, roots["killed"] / "models", roots["killed"] / "data", killed_log)
    checkpoints = roots["killed"] / "data" / "training" / "killed" / "checkpoints"
    deadline = time.monotonic() + 600
    while not (checkpoints.is_dir() and any(p.name >= "checkpoint-0000004.pt" for p in checkpoints.iterdir())):
        assert victim.poll() is None, killed_log.read_text(errors="replace")
        assert time.monotonic() < deadline
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(60) == -signal.SIGKILL
    left = sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("checkpoint-"))
    assert left and left[-1] < f"checkpoint-{STEPS:07d}.pt", "the run ended before it was killed"
    models = roots["killed"] / "models"
    assert not [path for folder in ("Lora", "embeddings") for path in (models / folder).glob("killed.*")]

    resumed = _finish(_train(config, roots["killed"] / "models", roots["killed"] / "data", killed_log, resume=True),
                      killed_log)
    reference = _finish(whole, tmp_path / "whole.log")
    assert resumed["step"] == reference["step"] == STEPS
    assert resumed["resumed_from"] == int(left[-1][len("checkpoint-"):-3]) and reference["resumed_from"] == 0
    assert resumed["losses"] == reference["losses"]
    a, b = _trained(roots["killed"] / "models", method), _trained(roots["whole"] / "models", method)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    if method == "lora":
        assert "bundle_emb.sks.string_to_param.*" in a  # the trained token vector resumed with the LoRA
    else:
        assert a["string_to_param"].shape == (2, 64) and int(a["step"]) == STEPS
    # the limit held: only the newest two checkpoints are kept
    assert len([p for p in checkpoints.iterdir() if p.name.startswith("checkpoint-")]) == 2


def test_a_queue_restart_resumes_a_train_job_from_its_checkpoint(app_config, tmp_path, one_thread):
    from modules.runtime.services import build_services

    hearts = heart_folder(tmp_path / "hearts")
    request = _request(hearts, "restarted").replace(steps=10)
    first = build_services(app_config)
    first.start()
    reference = first.run(request.replace(output_name="reference"), timeout=600)
    job = first.queue.submit(request)
    deadline = time.monotonic() + 600
    while job.progress.step < 3:
        assert time.monotonic() < deadline and not job.done_event.is_set()
        time.sleep(0.01)
    first.stop()  # a shutdown mid-run: the job goes back to the queue with its checkpoint
    assert not (app_config.models_dir / "Lora" / "restarted.safetensors").exists()

    second = build_services(app_config)
    second.start()
    try:
        again = second.queue.get(job.id)
        assert again is not None
        assert again.done_event.wait(600) and again.state == "done", again.error
        assert again.result.resumed_from >= 3  # continued, not started over
        assert again.result.losses == reference.losses
        a = load_file(str(app_config.models_dir / "Lora" / "restarted.safetensors"))
        b = load_file(str(app_config.models_dir / "Lora" / "reference.safetensors"))
        assert all(torch.equal(a[key], b[key]) for key in b)
    finally:
        second.stop()
