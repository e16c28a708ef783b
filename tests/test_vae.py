"""Per-request VAE choice: user VAEs in ``models/VAE`` are found, load offline in every layout, decode only the
request that asks for them, and are named in the infotext as A1111 names them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ckpt_layout import save_vae_file, vae_to_ldm
from PIL import Image

from modules.errors import RequestError
from modules.image.request import GenerationRequest
from modules.models.checkpoints import CheckpointLoadError
from modules.models.registry import ModelRegistry, UnknownModelError, VaeInfo
from tests.helpers import pixels, txt2img
from tools.tiny_model import _vae

VAE_SEED = 7  # the checkpoints' VAE is built from seed 0, so this one decodes the same latents differently
SDXL_SCALING = 0.13025


class Payload:
    """Stands for code hidden in a pickle: unpickling it would create the marker folder."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture(scope="module")
def vae_store(tmp_path_factory) -> Path:
    """One tiny VAE three ways: a diffusers folder (claiming SDXL's scaling factor), a bare-key original-layout
    .safetensors, and a ``first_stage_model.``-prefixed weights-only .pt in a subfolder."""
    root = tmp_path_factory.mktemp("vae-store") / "VAE"
    _vae(VAE_SEED, scaling_factor=SDXL_SCALING).save_pretrained(root / "tiny-vae", safe_serialization=True)
    save_vae_file(_vae(VAE_SEED), root / "tiny-vae-ldm.safetensors")
    save_vae_file(_vae(VAE_SEED), root / "sub" / "tiny-vae-prefixed.pt", prefix="first_stage_model.")
    return root


@pytest.fixture
def models(app_config, vae_store) -> Path:
    shutil.copytree(vae_store, app_config.models_dir / "VAE")
    return app_config.models_dir


@pytest.fixture
def registry(models, tmp_path) -> ModelRegistry:
    return ModelRegistry(models, cache_file=tmp_path / "hashes.json")


@pytest.fixture
def vae_services(models, app_config):
    from modules.runtime.services import build_services

    built = build_services(app_config)
    built.start()
    yield built
    built.stop()






def img2img(**fields) -> GenerationRequest:
    picture = Image.new("RGB", (64, 64), (30, 60, 200))
    return txt2img(task="img2img", init_image=picture, denoising_strength=0.6, **fields)


def test_vaes_are_listed_with_hashes_and_found_by_name_file_or_hash(registry):
    vaes = registry.list_vaes()
    assert [(v.name, v.kind) for v in vaes] == [
        ("sub/tiny-vae-prefixed.pt", "pt"), ("tiny-vae", "diffusers"), ("tiny-vae-ldm.safetensors", "safetensors")
    ]
    assert all(v.sha256 and len(v.short_hash) == 10 for v in vaes)
    prefixed, folder, single = vaes
    for own in (None, "", "Automatic", "None", "automatic"):
        assert registry.find_vae(own) is None
    assert registry.find_vae("tiny-vae-ldm.safetensors") == single
    assert registry.find_vae("tiny-vae-ldm") == single
    assert registry.find_vae("sub/tiny-vae-prefixed.pt") == prefixed
    assert registry.find_vae("tiny-vae-prefixed") == prefixed  # the bare file name, as A1111's dropdown shows it
    assert registry.find_vae("TINY-VAE") == folder
    assert registry.find_vae(single.short_hash) == single
    with pytest.raises(UnknownModelError, match="VAE 'no-such-vae' not found. Available: Automatic, None, sub/"):
        registry.find_vae("no-such-vae")


def test_single_file_vaes_load_offline_with_the_checkpoints_scaling_factor(registry, tmp_path):
    from modules.models.vae import load_vae

    expected = _vae(VAE_SEED).state_dict()
    for info in registry.list_vaes():
        vae = load_vae(info, cache_dir=tmp_path, scaling_factor=0.18215)
        assert vae.config.scaling_factor == 0.18215  # the folder's own 0.13025 is the wrong latent space for SD 1.x
        state = vae.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[key], expected[key]) for key in expected), info.name
    sdxl = load_vae(registry.find_vae("tiny-vae-ldm"), cache_dir=tmp_path, family="sdxl")
    assert sdxl.config.scaling_factor == SDXL_SCALING and sdxl.config.force_upcast  # the family's conventions


def test_a_diffusers_layout_single_file_loads_too(models, tmp_path):
    from safetensors.torch import save_file

    from modules.models.vae import load_vae

    original = _vae(VAE_SEED)
    path = models / "VAE" / "diffusers-layout.safetensors"
    save_file({key: value.contiguous() for key, value in original.state_dict().items()}, str(path))
    vae = load_vae(VaeInfo(path.name, path, "safetensors"), cache_dir=tmp_path)
    assert all(torch.equal(vae.state_dict()[key], value) for key, value in original.state_dict().items())


def test_a_vae_changes_only_the_request_that_asks_for_it(vae_services, registry):
    run = vae_services.run
    default = run(txt2img()).images[0]
    chosen = run(txt2img(vae="tiny-vae-ldm"))
    assert np.abs(pixels(default.image) - pixels(chosen.images[0].image)).mean() > 1.0
    # The same weights in the other two layouts decode to the same picture.
    for other in ("tiny-vae", "tiny-vae-prefixed.pt"):
        assert np.array_equal(pixels(run(txt2img(vae=other)).images[0].image), pixels(chosen.images[0].image))
    again = run(txt2img(vae="Automatic")).images[0]
    assert np.array_equal(pixels(again.image), pixels(default.image))

    # img2img has its own pipeline object sharing the components: no leak there either.
    plain = run(img2img()).images[0]
    assert not np.array_equal(pixels(run(img2img(vae="tiny-vae-ldm")).images[0].image), pixels(plain.image))
    assert np.array_equal(pixels(run(img2img()).images[0].image), pixels(plain.image))
    assert np.array_equal(pixels(run(txt2img()).images[0].image), pixels(default.image))

    short = registry.find_vae("tiny-vae-ldm").short_hash
    assert f"Model: tiny-sd1, VAE hash: {short}, VAE: tiny-vae-ldm.safetensors, " in chosen.images[0].infotext
    assert "VAE" not in default.infotext
    assert chosen.summary.sd_vae_name == "tiny-vae-ldm.safetensors" and chosen.summary.sd_vae_hash == short


def test_loaded_vaes_are_kept_and_use_the_checkpoints_scaling_factor(vae_services, registry):
    engine = vae_services.engine
    loaded = engine.pipelines.get(engine.resolve_model(None))
    folder = registry.find_vae("tiny-vae")
    vae = engine.pipelines.vae(loaded, folder)
    assert vae.config.scaling_factor == loaded.own_vae.config.scaling_factor == 0.18215
    assert engine.pipelines.vae(loaded, folder) is vae


def test_unknown_vae_is_a_request_error_and_the_worker_goes_on(vae_services):
    with pytest.raises(RequestError) as caught:  # refused at submission: nothing is queued
        vae_services.queue.submit(txt2img(vae="no-such-vae"))
    assert caught.value.field == "vae" and "tiny-vae-ldm.safetensors" in str(caught.value)
    assert vae_services.run(txt2img(vae="tiny-vae"), timeout=60).images[0].image.size == (64, 64)


def test_a_pt_vae_with_pickled_objects_is_refused_unopened(vae_services, models, tmp_path):
    from modules.models.vae import load_vae

    marker = tmp_path / "payload-ran"
    path = models / "VAE" / "evil.pt"
    torch.save({"state_dict": {key.removeprefix("first_stage_model."): value
                               for key, value in vae_to_ldm(_vae(VAE_SEED)).items()},
                "extra": Payload(marker)}, path)
    with pytest.raises(CheckpointLoadError, match="evil.pt was refused: besides tensors it holds pickled Python"):
        load_vae(VaeInfo("evil.pt", path, "pt"), cache_dir=tmp_path)
    with pytest.raises(RequestError, match="refused") as caught:
        vae_services.run(txt2img(vae="evil"), timeout=60)
    assert caught.value.field == "vae"
    assert not marker.exists()
    assert vae_services.run(txt2img(), timeout=60).images[0].image.size == (64, 64)
