"""The checkpoints (and VAEs) a user has, found in an A1111-style models folder.

Users move whole model collections between A1111, Forge and Sfumato, so we read the same folder layout
(``Stable-diffusion``, ``VAE``, ...) and name models the way A1111 does: ``name`` is the path under the checkpoint
folder without extension and ``title`` is ``"<relative filename> [<first 10 hex of sha256>]"``, which is what
infotext, the API and saved settings refer to. Hashing multi-gigabyte files is slow, so hashes are cached in a
JSON file keyed by absolute path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modules.runtime.files import atomic_write

CHECKPOINT_DIR = "Stable-diffusion"
VAE_DIR = "VAE"
LORA_DIR = "Lora"
ESRGAN_DIR = "ESRGAN"
CONTROLNET_DIR = "ControlNet"
EMBEDDINGS_DIR = "embeddings"

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".gguf")  # .gguf: quantized SD3 / Flux transformers
VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt")
# The VAE choices that mean "the checkpoint's own VAE" (A1111's dropdown offers both; we do not apply sidecars).
OWN_VAE_CHOICES = ("automatic", "none")
# A1111 keeps "<model>.vae.safetensors" sidecars next to checkpoints; they are VAEs, not checkpoints.
SIDECAR_VAE_SUFFIXES = (".vae.safetensors", ".vae.ckpt", ".vae.pt")
# What makes up a diffusers folder's identity: its weights, not its JSON (configs get reformatted harmlessly).
FOLDER_WEIGHT_SUFFIXES = (".safetensors", ".bin")
CHUNK = 1024 * 1024
SHORT_HASH_LEN = 10
CACHE_VERSION = 1
logger = logging.getLogger(__name__)

Kind = Literal["diffusers", "safetensors", "ckpt", "gguf"]


class UnknownModelError(ValueError):
    """No checkpoint matches what was asked for; the message lists what is available."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint as the UI and API show it."""

    name: str
    title: str
    path: Path
    kind: Kind
    sha256: str | None
    short_hash: str | None
    family: str | None

    @property
    def filename(self) -> str:
        """The path relative to its checkpoint folder, with extension (the title without its hash)."""
        return self.title.split(" [", 1)[0]


@dataclass(frozen=True)
class VaeInfo:
    """A VAE the user can pick instead of the checkpoint's own.

    ``name`` is the path under the VAE folder (with extension for files); ``kind`` "pt" covers .pt and .ckpt,
    both pickles that are only ever read weights-only.
    """

    name: str
    path: Path
    kind: Literal["diffusers", "safetensors", "pt"]
    sha256: str | None = None

    @property
    def short_hash(self) -> str | None:
        """The first 10 hex digits of the hash, which A1111 writes as ``VAE hash`` in infotexts."""
        return self.sha256[:SHORT_HASH_LEN] if self.sha256 else None

    @property
    def filename(self) -> str:
        """The file (or folder) name without its folders: what A1111 writes as ``VAE`` and lists in its dropdown."""
        return self.name.rsplit("/", 1)[-1]


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks so a 7 GB checkpoint never sits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_weight_files(folder: Path) -> list[Path]:
    """A diffusers folder's weight files, in a stable (sorted, relative-path) order."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.name.endswith(FOLDER_WEIGHT_SUFFIXES)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def sha256_folder(folder: Path) -> str:
    """A stable digest of a diffusers folder: SHA-256 over each weight file's relative path and contents.

    Paths are included so that swapping two components' files changes the digest.
    """
    digest = hashlib.sha256()
    for path in folder_weight_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def hash_path(path: Path) -> str:
    """SHA-256 of a checkpoint file, or the folder digest of a diffusers folder (the one place hashing happens)."""
    return sha256_folder(path) if path.is_dir() else sha256_file(path)


def _stamp(path: Path) -> dict[str, int]:
    """Size and mtime that tell whether a cached hash still holds; a folder sums its weight files' sizes and takes
    the newest mtime, and counts them so that adding or removing a file is noticed too."""
    if not path.is_dir():
        stat = path.stat()
        return {"size": stat.st_size, "mtime": stat.st_mtime_ns}
    stats = [file.stat() for file in folder_weight_files(path)]
    return {
        "size": sum(stat.st_size for stat in stats),
        "mtime": max((stat.st_mtime_ns for stat in stats), default=0),
        "files": len(stats),
    }


class HashCache:
    """Hashes on disk, keyed by absolute path and valid while size and mtime are unchanged."""

    def __init__(self, cache_file: Path):
        self.cache_file = Path(cache_file)
        self._entries: dict[str, dict] = self._read()
        self._dirty = False

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    def get(self, path: Path, stamp: dict[str, int]) -> str | None:
        """The cached hash, or None when absent or stale (``stamp`` is what ``_stamp`` says now)."""
        entry = self._entries.get(str(path.absolute()))
        if not isinstance(entry, dict) or any(entry.get(key) != value for key, value in stamp.items()):
            return None
        return entry.get("sha256")

    def put(self, path: Path, stamp: dict[str, int], sha256: str) -> None:
        """Remember a hash under the stamp taken *before* hashing, so a file changed meanwhile is hashed again."""
        self._entries[str(path.absolute())] = {**stamp, "sha256": sha256}
        self._dirty = True

    def save(self) -> None:
        """Write atomically (temp file + os.replace) so a crash never leaves a half-written cache.

        A cache that cannot be written (read-only models folder) only costs re-hashing next time.
        """
        if not self._dirty:
            return
        try:
            self._write()
        except OSError as error:
            logger.warning("Could not save model hashes to %s: %s", self.cache_file, error)

    def _write(self) -> None:
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.cache_file) as handle:
            json.dump({"version": CACHE_VERSION, "entries": self._entries}, handle, indent=1, sort_keys=True)
        self._dirty = False


def _walk(root: Path) -> Iterator[Path]:
    """Files and diffusers folders under root, following symlinked folders once each, skipping hidden ones."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            children = sorted(folder.iterdir())
        except OSError:
            continue
        for child in children:
            if child.name.startswith("."):
                continue
            if child.is_dir():
                if (child / "model_index.json").is_file():
                    yield child
                else:
                    stack.append(child)
            elif child.is_file():
                yield child


def _checkpoint_kind(path: Path) -> Kind | None:
    if path.is_dir():
        return "diffusers"
    name = path.name.lower()
    if name.endswith(SIDECAR_VAE_SUFFIXES):
        return None
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(".ckpt"):
        return "ckpt"
    if name.endswith(".gguf"):
        return "gguf"
    return None


def _family(path: Path, kind: Kind) -> str | None:
    """The model family where it is cheap to tell (safetensors header, diffusers configs); None for .ckpt."""
    from modules.models import checkpoints as checkpoint_loading

    try:
        if kind == "diffusers":
            return checkpoint_loading.diffusers_folder_family(path)
        if kind == "safetensors":
            from modules.models.families import single_file_family

            shapes = read_safetensors_shapes(path)
            layout = checkpoint_loading.detect_layout(shapes)
            return layout.family if layout else single_file_family(shapes)
        if kind == "gguf":
            from modules.models.families import single_file_family
            from modules.models.gguf_files import read_gguf_shapes

            return single_file_family(read_gguf_shapes(path))
    except (OSError, ValueError, KeyError):
        return None
    return None


def read_safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header, without reading (or importing anything for) the weights."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > 100 * CHUNK:
            raise ValueError(f"{path} has an implausible safetensors header ({length} bytes)")
        header = json.loads(handle.read(length))
    return {key: tuple(value["shape"]) for key, value in header.items() if key != "__metadata__"}


class ModelRegistry:
    """Scans checkpoint folders and answers "which model is this?" for titles, names, filenames and hashes."""

    def __init__(
        self,
        models_dir: Path,
        ckpt_dirs: list[Path] | None = None,
        cache_file: Path | None = None,
        compute_hashes: bool = True,
    ):
        """``compute_hashes=False`` only uses cached hashes (fast startup); ``ensure_hash`` fills one in later."""
        self.models_dir = Path(models_dir)
        self.ckpt_dirs = [Path(p) for p in (ckpt_dirs or [])]
        self.cache = HashCache(Path(cache_file) if cache_file else self.models_dir / ".sfumato-hashes.json")
        self.compute_hashes = compute_hashes
        self._checkpoints: list[CheckpointInfo] = []
        self.refresh()

    @property
    def checkpoint_roots(self) -> list[Path]:
        return [self.models_dir / CHECKPOINT_DIR, *self.ckpt_dirs]

    def refresh(self) -> list[CheckpointInfo]:
        """Rescan all checkpoint folders (hashing only new or changed files) and return the sorted list."""
        found: dict[str, CheckpointInfo] = {}
        for root in self.checkpoint_roots:
            if not root.is_dir():
                continue
            for path in _walk(root):
                kind = _checkpoint_kind(path)
                real = os.path.realpath(path)
                if kind is None or real in found:
                    continue
                found[real] = self._describe(root, path, kind, self.compute_hashes)
        self.cache.save()
        self._checkpoints = sorted(found.values(), key=lambda info: info.title.lower())
        return list(self._checkpoints)

    def _describe(self, root: Path, path: Path, kind: Kind, compute: bool) -> CheckpointInfo:
        relative = path.relative_to(root).as_posix()
        name = relative if kind == "diffusers" else relative.rsplit(".", 1)[0]
        sha256 = self._hash(path, compute)
        short = sha256[:SHORT_HASH_LEN] if sha256 else None
        title = f"{relative} [{short}]" if short else relative
        return CheckpointInfo(name, title, path, kind, sha256, short, _family(path, kind))

    def _hash(self, path: Path, compute: bool) -> str | None:
        """The cached hash of a file or folder, computed (and cached) when missing or stale if ``compute``."""
        stamp = _stamp(path)
        sha256 = self.cache.get(path, stamp)
        if sha256 is None and compute:
            sha256 = hash_path(path)
            self.cache.put(path, stamp, sha256)
        return sha256

    def list(self) -> list[CheckpointInfo]:
        """All checkpoints, sorted by title (as the A1111 API's /sdapi/v1/sd-models lists them)."""
        return list(self._checkpoints)

    def ensure_hash(self, info: CheckpointInfo) -> CheckpointInfo:
        """The same checkpoint with its hash computed (and cached); used when scanning skipped hashing."""
        if info.sha256:
            return info
        root = next((r for r in self.checkpoint_roots if info.path.is_relative_to(r)), info.path.parent)
        hashed = self._describe(root, info.path, info.kind, compute=True)
        self.cache.save()
        self._checkpoints = sorted(
            [hashed if c.path == info.path else c for c in self._checkpoints], key=lambda c: c.title.lower()
        )
        return hashed

    def find(self, query: str) -> CheckpointInfo:
        """Resolve a title, name, relative or bare filename, short or full hash, or name without extension.

        Tried from most to least specific, so an exact title always wins; a bare filename that several folders
        share is refused as ambiguous rather than guessed.
        """
        wanted = query.strip().replace("\\", "/")
        lowered = wanted.lower()
        checks = (
            lambda c: c.title == wanted,
            lambda c: c.name == wanted or c.filename == wanted,
            lambda c: c.sha256 is not None and lowered in (c.short_hash, c.sha256),
            # A title whose hash part is stale (the file changed since it was written down).
            lambda c: " [" in wanted and c.filename == wanted.split(" [", 1)[0],
            lambda c: c.filename.rsplit("/", 1)[-1] == wanted or c.name.rsplit("/", 1)[-1] == wanted,
            lambda c: c.title.lower() == lowered or c.name.lower() == lowered or c.filename.lower() == lowered,
        )
        for check in checks:
            matches = [c for c in self._checkpoints if check(c)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise UnknownModelError(
                    f"Checkpoint {query!r} is ambiguous; it matches: " + ", ".join(c.title for c in matches)
                )
        available = ", ".join(c.title for c in self._checkpoints) or "none (put models in "
        if not self._checkpoints:
            available += f"{self.models_dir / CHECKPOINT_DIR})"
        raise UnknownModelError(f"Checkpoint {query!r} not found. Available: {available}")

    def list_vaes(self) -> list[VaeInfo]:
        """VAE files (.safetensors, .pt, .ckpt) and diffusers VAE folders under ``VAE``, sorted by name.

        The folder is scanned on every call (it is small, and users drop VAEs in while the app runs); hashes come
        from the shared cache, and are computed here only when the registry computes hashes at all.
        """
        root = self.models_dir / VAE_DIR
        found: list[VaeInfo] = []
        if not root.is_dir():
            return found
        for folder, dirnames, filenames in os.walk(root, followlinks=True):
            here = Path(folder)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if here != root and (here / "config.json").is_file() and _has_diffusers_weights(here):
                found.append(self._vae_info(root, here, "diffusers", self.compute_hashes))
                dirnames[:] = []
                continue
            for filename in filenames:
                lowered = filename.lower()
                if lowered.endswith(VAE_SUFFIXES) and not filename.startswith("."):
                    kind = "safetensors" if lowered.endswith(".safetensors") else "pt"
                    found.append(self._vae_info(root, here / filename, kind, self.compute_hashes))
        self.cache.save()
        return sorted(found, key=lambda v: v.name.lower())

    def _vae_info(self, root: Path, path: Path, kind: Literal["diffusers", "safetensors", "pt"],
                  compute: bool) -> VaeInfo:
        try:
            sha256 = self._hash(path, compute)
        except OSError as error:  # unreadable now; it still shows up, and loading it will say why
            logger.warning("Could not hash the VAE %s: %s", path, error)
            sha256 = None
        return VaeInfo(path.relative_to(root).as_posix(), path, kind, sha256)

    def find_vae(self, query: str | None) -> VaeInfo | None:
        """The VAE a request names, or None for the checkpoint's own ("Automatic", "None" or nothing).

        Accepts the name under the VAE folder, the bare file name, either without extension, or a short or full
        hash, so that both A1111's dropdown values and an infotext's ``VAE``/``VAE hash`` resolve. The match is
        hashed if it was not yet, since the infotext records its hash.
        """
        wanted = (query or "").strip().replace("\\", "/")
        if not wanted or wanted.lower() in OWN_VAE_CHOICES:
            return None
        vaes = self.list_vaes()
        lowered = wanted.lower()

        def stem(name: str) -> str:
            return name.rsplit(".", 1)[0] if name.lower().endswith(VAE_SUFFIXES) else name

        checks = (
            lambda v: v.name == wanted,
            lambda v: stem(v.name) == wanted,
            lambda v: v.sha256 is not None and lowered in (v.short_hash, v.sha256),
            lambda v: v.filename == wanted or stem(v.filename) == wanted,
            lambda v: lowered in (v.name.lower(), stem(v.name).lower(), v.filename.lower(), stem(v.filename).lower()),
        )
        for check in checks:
            matches = [v for v in vaes if check(v)]
            if len(matches) > 1:
                choices = ", ".join(v.name for v in matches)
                raise UnknownModelError(f"VAE {query!r} is ambiguous; it matches: {choices}")
            if matches:
                found = matches[0]
                if found.sha256 is None:
                    found = self._vae_info(self.models_dir / VAE_DIR, found.path, found.kind, compute=True)
                    self.cache.save()
                return found
        names = ", ".join(["Automatic", "None", *(v.name for v in vaes)])
        hint = "" if vaes else f" (put VAEs in {self.models_dir / VAE_DIR})"
        raise UnknownModelError(f"VAE {query!r} not found. Available: {names}{hint}")


def _has_diffusers_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("diffusion_pytorch_model.safetensors",
                                                       "diffusion_pytorch_model.bin"))
