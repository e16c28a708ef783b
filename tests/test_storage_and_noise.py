"""Output files (atomic, numbered, confined to the output folder) and seeds/noise."""

from __future__ import annotations

import numpy as np
from PIL import Image

from modules.image.noise import batch_seeds, initial_latents, resolve_seed
from modules.runtime.outputs import OutputStore, prompt_slug


def test_files_are_numbered_readable_and_complete(tmp_path):
    store = OutputStore(tmp_path)
    first = store.save(Image.new("RGB", (8, 8)), "txt2img", "a cat\nSteps: 1, Sampler: Euler, CFG scale: 7, Seed: 5, "
                       "Size: 8x8", seed=5, prompt="a cat, ../../etc/passwd")
    second = store.save(Image.new("RGB", (8, 8)), "txt2img", "x", seed=6, prompt="")
    assert first.name.startswith("00000-5-a-cat") and second.name.startswith("00001-6-image")
    assert first.parent == second.parent and str(first.parent).startswith(str(tmp_path))
    assert sorted(path.name for path in first.parent.iterdir()) == [first.name, second.name]  # no temp files left
    assert prompt_slug("a/b\\c:d") == "a-b-c-d"


def test_seeds_and_noise_are_reproducible_and_device_independent():
    import torch

    assert resolve_seed(42) == 42
    assert 0 <= resolve_seed(-1) <= 4294967294
    assert batch_seeds(4294967294, 3) == [4294967294, 0, 1]
    one = initial_latents([1, 2], (4, 8, 8), device="cpu", dtype=torch.float32)
    two = initial_latents([1, 2], (4, 8, 8), device="cpu", dtype=torch.float32)
    single = initial_latents([2], (4, 8, 8), device="cpu", dtype=torch.float32)
    assert torch.equal(one, two) and torch.equal(one[1], single[0])
    blended = initial_latents([1], (4, 8, 8), "cpu", torch.float32, subseeds=[2], subseed_strength=1.0)
    assert np.allclose(blended[0].numpy(), single[0].numpy(), atol=1e-5)
    assert abs(float(initial_latents([1], (4, 32, 32), "cpu", torch.float32, [2], 0.5).std()) - 1.0) < 0.1


def test_two_stores_on_one_folder_never_overwrite_each_other(tmp_path):
    # Two studios (or two processes) writing to the same outputs folder: each keeps its own file.
    first, second = OutputStore(tmp_path), OutputStore(tmp_path)
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    paths = [first.save(red, "txt2img", "a", 1, "same prompt"), second.save(blue, "txt2img", "b", 1, "same prompt")]
    second._next_number = lambda folder: 0  # as if it had listed the folder before the other one wrote
    paths.append(second.save(blue, "txt2img", "c", 1, "same prompt"))
    assert len(set(paths)) == 3
    colours = [Image.open(path).convert("RGB").getpixel((0, 0)) for path in paths]
    assert colours == [(255, 0, 0), (0, 0, 255), (0, 0, 255)]
    assert not [p for p in paths[0].parent.iterdir() if p.name.startswith(".")]
    assert all(path.stat().st_mode & 0o644 == 0o644 for path in paths)  # readable like any saved file
