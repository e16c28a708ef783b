"""The registry finds checkpoints the way A1111 names them, and hashes each file only once."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from modules.models import registry as model_registry
from modules.models.registry import ModelRegistry, UnknownModelError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sd1_safetensors(path: Path) -> bytes:
    """A few tensors with SD 1.x key names: enough for the family to be read from the header."""
    import torch
    from safetensors.torch import save

    data = save({
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(10, 4),
    })
    write(path, data)
    return data


@pytest.fixture
def models(tmp_path) -> Path:
    """An A1111 models folder: files at the top and in a subfolder, a diffusers folder, and things to ignore."""
    root = tmp_path / "models"
    ckpts = root / "Stable-diffusion"
    sd1_safetensors(ckpts / "sub" / "model.safetensors")
    write(ckpts / "old.ckpt", b"ckpt bytes")
    write(ckpts / "old.vae.safetensors", b"a VAE sidecar, not a checkpoint")
    write(ckpts / "notes.txt", b"ignored")
    write(ckpts / ".hidden" / "secret.safetensors", b"ignored")
    folder = ckpts / "tiny-folder"
    write(folder / "model_index.json", json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["x", "y"]})
          .encode())
    write(folder / "unet" / "diffusion_pytorch_model.safetensors", b"unet weights")
    write(folder / "vae" / "diffusion_pytorch_model.safetensors", b"vae weights")
    write(folder / "unet" / "config.json", b"{}")
    write(root / "VAE" / "kl-f8.safetensors", b"vae")
    write(root / "VAE" / "old.pt", b"vae")
    write(root / "VAE" / "readme.txt", b"no")
    write(root / "VAE" / "sdxl-vae" / "config.json", b"{}")
    write(root / "VAE" / "sdxl-vae" / "diffusion_pytorch_model.safetensors", b"vae")
    return root


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for rel in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        digest.update(rel.encode() + b"\0" + (folder / rel).read_bytes())
    return digest.hexdigest()


def test_lists_files_and_folders_with_a1111_names_titles_and_hashes(models, tmp_path):
    extra = write(tmp_path / "elsewhere" / "deep" / "extra.safetensors", b"extra")
    registry = ModelRegistry(models, ckpt_dirs=[tmp_path / "elsewhere"], cache_file=tmp_path / "cache.json")
    listed = registry.list()
    model_bytes = (models / "Stable-diffusion" / "sub" / "model.safetensors").read_bytes()
    expected = {
        "sub/model": ("safetensors", f"sub/model.safetensors [{sha(model_bytes)[:10]}]", "sd1"),
        "old": ("ckpt", f"old.ckpt [{sha(b'ckpt bytes')[:10]}]", None),
        "tiny-folder": ("diffusers", f"tiny-folder [{folder_digest(models / 'Stable-diffusion' / 'tiny-folder')[:10]}]",
                        "sd1"),
        "deep/extra": ("safetensors", f"deep/extra.safetensors [{sha(b'extra')[:10]}]", None),
    }
    assert {c.name: (c.kind, c.title, c.family) for c in listed} == expected
    assert [c.title for c in listed] == sorted((c.title for c in listed), key=str.lower)
    extra_info = registry.find("deep/extra")
    assert extra_info.path == extra and extra_info.sha256 == sha(b"extra")
    assert extra_info.short_hash == sha(b"extra")[:10]


def test_hashes_are_cached_and_redone_only_for_changed_files(models, tmp_path, monkeypatch):
    calls: list[Path] = []
    real_hash = model_registry.hash_path

    def counting(path: Path) -> str:
        calls.append(path)
        return real_hash(path)

    monkeypatch.setattr(model_registry, "hash_path", counting)
    cache = tmp_path / "cache.json"
    ModelRegistry(models, cache_file=cache)
    assert len(calls) == 3
    assert json.loads(cache.read_text())["version"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hashes-")]  # no temp file left behind

    calls.clear()
    registry = ModelRegistry(models, cache_file=cache)  # a new process: everything comes from the cache file
    registry.refresh()
    assert calls == []

    changed = models / "Stable-diffusion" / "old.ckpt"
    changed.write_bytes(b"new ckpt bytes!")
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    weights = models / "Stable-diffusion" / "tiny-folder" / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"other vae weights")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    registry.refresh()
    assert sorted(p.name for p in calls) == ["old.ckpt", "tiny-folder"]
    assert registry.find("old").sha256 == sha(b"new ckpt bytes!")
    assert registry.find("tiny-folder").sha256 == folder_digest(models / "Stable-diffusion" / "tiny-folder")


def test_find_accepts_title_name_filename_and_hashes(models, tmp_path):
    registry = ModelRegistry(models, cache_file=tmp_path / "cache.json")
    model = registry.find("sub/model")
    for query in (model.title, "sub/model", "sub/model.safetensors", "model.safetensors", "model",
                  model.short_hash, model.sha256, model.short_hash.upper(), "sub\\model.safetensors",
                  "sub/model.safetensors [0123456789]"):
        assert registry.find(query) == model, query
    assert registry.find("tiny-folder").kind == "diffusers"


def test_unknown_and_ambiguous_models_raise_with_what_is_available(models, tmp_path):
    registry = ModelRegistry(models, cache_file=tmp_path / "cache.json")
    with pytest.raises(UnknownModelError) as caught:
        registry.find("nope.safetensors")
    assert isinstance(caught.value, ValueError)
    for info in registry.list():
        assert info.title in str(caught.value)

    write(models / "Stable-diffusion" / "other" / "model.safetensors", b"same name, other folder")
    registry.refresh()
    with pytest.raises(UnknownModelError, match="ambiguous"):
        registry.find("model.safetensors")
    assert registry.find("other/model").filename == "other/model.safetensors"

    empty = ModelRegistry(tmp_path / "empty", cache_file=tmp_path / "empty.json")
    with pytest.raises(UnknownModelError, match="Stable-diffusion"):
        empty.find("anything")


def test_hashing_can_wait_until_needed(models, tmp_path):
    registry = ModelRegistry(models, cache_file=tmp_path / "cache.json", compute_hashes=False)
    old = registry.find("old.ckpt")
    assert old.sha256 is None and old.title == "old.ckpt"
    hashed = registry.ensure_hash(old)
    assert hashed.title == f"old.ckpt [{sha(b'ckpt bytes')[:10]}]"
    assert registry.find(hashed.short_hash) == hashed
    assert ModelRegistry(models, cache_file=tmp_path / "cache.json", compute_hashes=False).find("old").sha256


def test_vaes_are_files_and_diffusers_folders(models, tmp_path):
    registry = ModelRegistry(models, cache_file=tmp_path / "cache.json")
    assert [(v.name, v.kind) for v in registry.list_vaes()] == [
        ("kl-f8.safetensors", "safetensors"), ("old.pt", "pt"), ("sdxl-vae", "diffusers")
    ]
