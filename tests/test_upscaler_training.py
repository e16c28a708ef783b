"""The upscaler trainer reproduces its weights from the seed, resumes exactly, and writes files spandrel loads.

Training runs a few steps of a tiny network on drawn pictures only (no scikit-image / scikit-learn needed), on one
thread. The committed models, when present, are loaded the way the engine loads them: through spandrel.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.upscaler.model import load_with_spandrel, save_model
from tools.upscaler.train import make_config, train

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = {2: ROOT / "models/ESRGAN/sfumato-compact-2x.safetensors",
             4: ROOT / "models/ESRGAN/sfumato-compact-4x.safetensors"}


@pytest.fixture(autouse=True)
def restore_torch_settings():
    """Training pins threads and deterministic kernels process-wide; put them back for the other tests."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def tiny_config(scale: int = 2, steps: int = 4):
    return make_config(scale, seed=3, steps=steps, batch=2, features=8, convs=2, hr_size=16 * scale, warmup=2,
                       pictures=3, picture_size=64, use_photos=False)


def weights(result) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in result.model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def run(config, state: Path, **options):
    return train(config, state, threads=1, checkpoint_every=0, progress=False, **options)


def test_the_seed_decides_the_weights(tmp_path):
    config = tiny_config()
    first = weights(run(config, tmp_path / "a.pt"))
    second = weights(run(config, tmp_path / "b.pt"))
    other_seed = weights(run(dataclasses.replace(config, seed=4), tmp_path / "c.pt"))
    assert same(first, second)
    assert not same(first, other_seed)
    untrained = weights(run(tiny_config(steps=0), tmp_path / "d.pt"))
    assert not same(first, untrained), "the steps changed nothing"


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    config = tiny_config(steps=4)
    uninterrupted = weights(run(config, tmp_path / "whole.pt"))
    state = tmp_path / "stopped.pt"
    stopped = run(config, state, stop_after=2)
    assert not stopped.finished and state.is_file()
    resumed = run(config, state)
    assert resumed.finished and resumed.resumed_from == 2
    assert same(weights(resumed), uninterrupted)


def test_a_checkpoint_of_another_recipe_is_refused(tmp_path):
    state = tmp_path / "state.pt"
    run(tiny_config(steps=2), state, stop_after=1)
    with pytest.raises(SystemExit, match="steps"):
        run(tiny_config(steps=3), state)


@pytest.mark.parametrize("scale", [2, 4])
def test_the_saved_file_is_detected_by_spandrel_at_its_scale(tmp_path, scale):
    result = run(tiny_config(scale=scale, steps=1), tmp_path / "state.pt")
    path = tmp_path / f"tiny-{scale}x.safetensors"
    save_model(result.model, path, half=True, metadata={"sfumato_recipe": result.config.to_json()})
    descriptor = load_with_spandrel(path, expected_scale=scale)
    assert descriptor.architecture.id == "Compact" and descriptor.scale == scale
    pixels = torch.rand(1, 3, 10, 12)
    with torch.inference_mode():
        expected = result.model.float()(pixels)
        assert torch.allclose(descriptor.model(pixels), expected, atol=2e-2)


@pytest.mark.parametrize("scale", [2, 4])
def test_the_committed_model_upscales_through_spandrel(scale):
    path = COMMITTED[scale]
    if not path.is_file():
        pytest.skip(f"{path.name} is not in this checkout")
    assert path.stat().st_size <= 5 * 1024 * 1024
    descriptor = load_with_spandrel(path, expected_scale=scale)
    gradient = np.linspace(0.0, 1.0, 20 * 24 * 3, dtype=np.float32).reshape(1, 3, 20, 24)
    with torch.inference_mode():
        output = descriptor.model.eval()(torch.from_numpy(gradient))
    assert tuple(output.shape) == (1, 3, 20 * scale, 24 * scale)
    assert torch.isfinite(output).all()
    # A smooth input stays close to its smooth enlargement: the model does not invent structure.
    nearest = torch.nn.functional.interpolate(torch.from_numpy(gradient), scale_factor=scale, mode="nearest")
    assert (output - nearest)[..., 4:-4, 4:-4].abs().mean() < 0.05
