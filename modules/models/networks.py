"""LoRAs (``models/Lora``) and textual-inversion embeddings (``models/embeddings``): finding, hashing, applying.

A LoRA is part of one request (``<lora:name:w>`` in its prompt); ``applied_networks`` injects it into the loaded
pipeline's shared UNet and text encoders for that job only and removes every adapter in a ``finally``, so nothing
leaks into the next job whatever happens meanwhile (an interrupt, a failing step, a bad second file). Files are
read fresh for each job: a LoRA is small next to a checkpoint and users overwrite them while the studio runs.

Both key formats load: kohya/A1111 (``lora_unet_*``/``lora_te*_`` with ``lora_down``/``lora_up``/``alpha``),
converted by diffusers' ``lora_state_dict``, and diffusers/PEFT (``unet.*.lora_A``). Before any layer is touched
every targeted module is looked up and its shape compared, so a LoRA for another architecture (an SDXL LoRA on SD
1.x) is refused naming the file, instead of diffusers' warning and a silently unchanged picture. The UNet goes
through diffusers' ``load_lora_into_unet``; the text encoders are injected with PEFT directly, as transformers'
``load_adapter`` would, because that one demands a PEFT newer than the one diffusers needs. SD3 and Flux.1
LoRAs go through diffusers' ``load_lora_weights``, which knows their many formats.

A LoRA file may bundle embeddings (A1111's and kohya's ``bundle_emb.<name>.string_to_param.*``, SDXL's
``bundle_emb.<name>.clip_l`` / ``.clip_g``), e.g. the rare token a pivotal-tuning run trained with the LoRA: while
the LoRA is in a job, ``<name>`` in its prompts is that embedding, as if it were a file in ``models/embeddings``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.errors import RequestError
from modules.image.extra_networks import LoraUse
from modules.models.registry import EMBEDDINGS_DIR, LORA_DIR

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
SHORT_HASH_LEN = 12  # A1111's "Lora hashes" / "TI hashes" use 12 hex digits
ADAPTER_PREFIX = "sfumato_lora_"
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
BUNDLE_PREFIX = "bundle_emb."  # embeddings bundled in a LoRA file (A1111, kohya)


class NetworkLoadError(RuntimeError):
    """A LoRA or embedding file that cannot be read or does not fit the model; the message names the file."""


@dataclass(frozen=True)
class NetworkFile:
    """A LoRA or embedding file: ``name`` is its stem (what a prompt writes), ``alias`` the LoRA's training name
    from its metadata (``ss_output_name``), also accepted in a prompt as A1111 does."""

    name: str
    path: Path
    alias: str

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass
class NetworkRegistry:
    """The LoRA and embedding folders of a models folder, scanned on each call (they are small, and users drop
    files in while the studio runs). Hashes are remembered by path, size and mtime for this registry's lifetime."""

    models_dir: Path
    _cache: dict[tuple[str, str, int, int], Any] = field(default_factory=dict, repr=False)

    @property
    def lora_root(self) -> Path:
        return Path(self.models_dir) / LORA_DIR

    @property
    def embeddings_root(self) -> Path:
        return Path(self.models_dir) / EMBEDDINGS_DIR

    def loras(self) -> list[NetworkFile]:
        """Every LoRA file, sorted by name; the alias comes from the safetensors metadata when it has one."""
        found = [NetworkFile(_stem(path), path, str(self.metadata(path).get("ss_output_name") or _stem(path)))
                 for path in _files(self.lora_root, LORA_SUFFIXES)]
        return sorted(found, key=lambda item: item.name.lower())

    def metadata(self, path: Path) -> dict[str, Any]:
        """``read_metadata``, remembered by path, size and mtime: kohya metadata holds tag counts worth 100 KB a
        file, and a folder of hundreds of LoRAs is listed at every submit."""
        try:
            stat = path.stat()
        except OSError:
            return {}
        key = ("metadata", str(path.absolute()), stat.st_size, stat.st_mtime_ns)
        if key not in self._cache:
            self._cache[key] = read_metadata(path)
        return self._cache[key]

    def embeddings(self) -> list[NetworkFile]:
        return sorted((NetworkFile(_stem(path), path, _stem(path))
                       for path in _files(self.embeddings_root, EMBEDDING_SUFFIXES)),
                      key=lambda item: item.name.lower())

    def find_lora(self, name: str, field_name: str = "prompt") -> NetworkFile:
        """The LoRA a prompt names (stem, then alias, then either ignoring case); a RequestError listing what
        exists when there is none. Stems are tried before any metadata is read."""
        paths = _files(self.lora_root, LORA_SUFFIXES)
        exact = [path for path in paths if _stem(path) == name]
        if exact:
            path = exact[0]
            return NetworkFile(name, path, str(self.metadata(path).get("ss_output_name") or name))
        loras = self.loras()
        for check in (lambda item: item.alias == name,
                      lambda item: name.lower() in (item.name.lower(), item.alias.lower())):
            matches = [item for item in loras if check(item)]
            if matches:
                return matches[0]
        available = ", ".join(item.name for item in loras) or f"none (put LoRAs in {self.lora_root})"
        raise RequestError(field_name, f"<lora:{name}>: no LoRA named {name!r}. Available: {available}")

    def mentioned_embeddings(self, *texts: str) -> list[NetworkFile]:
        """The embeddings whose name appears as a word in any of ``texts`` (how A1111 users invoke them; as there,
        regardless of case, since CLIP lowercases the prompt)."""
        return [item for item in self.embeddings() if any(_mention(item.name).search(text) for text in texts)]

    def short_hash(self, path: Path) -> str:
        """A1111's short hash of a network file: AutoV3 (SHA-256 of a safetensors file's tensor data, so editing
        its metadata keeps the hash) for .safetensors, SHA-256 of the whole file otherwise; 12 hex digits."""
        stat = path.stat()
        key = ("sha256", str(path.absolute()), stat.st_size, stat.st_mtime_ns)
        if key not in self._cache:
            self._cache[key] = _network_hash(path)
        return self._cache[key][:SHORT_HASH_LEN]


def _mention(name: str) -> re.Pattern:
    return re.compile(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", re.IGNORECASE)


def _stem(path: Path) -> str:
    return path.name.rsplit(".", 1)[0]


def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not root.is_dir():
        return []
    found = []
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(folder) / name for name in filenames
                  if name.lower().endswith(suffixes) and not name.startswith(".")]
    return sorted(found)


def _network_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if path.name.lower().endswith(".safetensors"):
            head = handle.read(8)
            if len(head) == 8:
                (length,) = struct.unpack("<Q", head)
                handle.seek(8 + length)
            else:
                handle.seek(0)
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def read_metadata(path: Path) -> dict[str, Any]:
    """A safetensors file's ``__metadata__`` (JSON-looking values parsed, as A1111's /sdapi/v1/loras shows
    them); {} for other files or an unreadable header (listing must not fail on one bad file)."""
    if not path.name.lower().endswith(".safetensors"):
        return {}
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100 * 1024 * 1024:
                return {}
            metadata = json.loads(handle.read(length)).get("__metadata__") or {}
    except (OSError, ValueError, struct.error):
        return {}
    parsed = {}
    for key, value in metadata.items():
        if isinstance(value, str) and value[:1] in "{[":
            with contextlib.suppress(ValueError):  # kohya writes JSON in some values; others stay text
                value = json.loads(value)
        parsed[key] = value
    return parsed


def read_state_dict(path: Path, what: str) -> dict[str, Any]:
    """Tensors of a .safetensors file, or of a pickle read weights-only (no code in a downloaded file runs)."""
    import torch

    try:
        if path.name.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path))
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a tensor file, a pickle with code in it
        raise NetworkLoadError(f"{what} {path.name} could not be read ({path}): {error}. The file may be "
                               f"truncated or not a {what}; download it again") from None
    if not isinstance(data, dict):
        raise NetworkLoadError(f"{what} {path.name} holds no tensors by name ({path})")
    return data


# -- LoRA ------------------------------------------------------------------------------------------------------


def _lora_state_dict(pipe: Any, info: NetworkFile) -> tuple[dict[str, Any], dict[str, float] | None]:
    """The file in diffusers/PEFT keys (``unet.…lora_A.weight``), kohya files converted, with network alphas;
    ({}, None) for a file that holds nothing but bundled embeddings."""
    from diffusers.utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
    )

    whole = read_state_dict(info.path, "LoRA")
    raw = {key: value for key, value in whole.items() if not key.startswith(BUNDLE_PREFIX)}
    if whole and not raw:  # only bundled embeddings, which are applied as embeddings
        return {}, None
    try:
        state, alphas = type(pipe).lora_state_dict(raw, unet_config=pipe.unet.config)
        unet = convert_unet_state_dict_to_peft({k: v for k, v in state.items() if k.startswith("unet.")})
        others = {k: v for k, v in state.items() if not k.startswith("unet.")}
        state = {**unet, **(convert_state_dict_to_peft(convert_state_dict_to_diffusers(others)) if others else {})}
    except Exception as error:  # diffusers' converters raise anything on keys they do not know
        raise NetworkLoadError(f"LoRA {info.filename} is not in a LoRA format this studio reads (kohya/A1111 or "
                               f"diffusers/PEFT): {error}") from None
    if not any(key.endswith("lora_A.weight") for key in state):
        raise NetworkLoadError(f"LoRA {info.filename} holds no LoRA weights (lora_down/lora_A); LyCORIS "
                               f"LoHa/LoKr files are not supported")
    return state, alphas


def _component_module(pipe: Any, key: str) -> tuple[str, Any]:
    """(component, module) a PEFT key ``<component>.<module path>.lora_A.weight`` targets; module None if absent."""
    component, _, rest = key.partition(".")
    model = getattr(pipe, component, None)
    path = rest.rsplit(".lora_", 1)[0]
    if model is None:
        return component, None
    if component in TEXT_ENCODERS and not hasattr(model, "text_model"):
        path = path.removeprefix("text_model.")
    try:
        return component, model.get_submodule(path)
    except AttributeError:
        return component, None


def check_lora_fits(pipe: Any, info: NetworkFile, state: dict[str, Any]) -> None:
    """Every layer the LoRA changes exists in this model with the LoRA's shapes; otherwise it was made for
    another architecture, and applying it would be a silent no-op or a crash mid-job."""
    for key, tensor in state.items():
        if not key.endswith("lora_A.weight"):
            continue
        component, module = _component_module(pipe, key)
        if module is None:
            raise NetworkLoadError(f"LoRA {info.filename} does not fit this model: it changes "
                                   f"{key.rsplit('.lora_', 1)[0]}, which this {_family_name(pipe)} model does not "
                                   f"have (a LoRA for another architecture?)")
        expected = getattr(module, "in_features", None) or getattr(module, "in_channels", None)
        if expected is not None and tensor.shape[1] != expected:
            raise NetworkLoadError(f"LoRA {info.filename} does not fit this model: {key.rsplit('.lora_', 1)[0]} takes "
                                   f"{expected} inputs here but {tensor.shape[1]} in the LoRA (a LoRA for another "
                                   f"architecture, e.g. SD 1.x vs SDXL?)")


def _family_name(pipe: Any) -> str:
    return "SDXL" if getattr(pipe, "text_encoder_2", None) is not None else "SD 1.x/2.x"


def inject_text_encoder_lora(encoder: Any, state: dict[str, Any], alphas: dict[str, float] | None, prefix: str,
                         adapter: str) -> None:
    """Add one adapter to a text encoder with PEFT: what transformers' ``load_adapter`` does for diffusers. ``state``
    in PEFT keys (``text_encoder.….lora_A.weight``); only the keys under ``prefix`` are used."""
    from diffusers.utils.peft_utils import _create_lora_config
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    own = {key.removeprefix(prefix + "."): value for key, value in state.items() if key.startswith(prefix + ".")}
    if not own:
        return
    if not hasattr(encoder, "text_model"):
        own = {key.removeprefix("text_model."): value for key, value in own.items()}
    ranks = {key: value.shape[1] for key, value in own.items() if key.endswith("lora_B.weight")}
    own_alphas = None
    if alphas:
        own_alphas = {key.removeprefix(prefix + "."): value for key, value in alphas.items()
                      if key.split(".")[0] == prefix}
    config = _create_lora_config(own, own_alphas, None, ranks, is_unet=False)
    inject_adapter_in_model(config, encoder, adapter_name=adapter)
    set_peft_model_state_dict(encoder, own, adapter_name=adapter)
    encoder.to(device=encoder.device, dtype=encoder.dtype)


@contextmanager
def applied_loras(pipe: Any, registry: NetworkRegistry, uses: tuple[LoraUse, ...]) -> Iterator[list[str]]:
    """The LoRAs of one job applied to ``pipe`` (and, through the shared modules, to its img2img/inpaint
    siblings) for the ``with`` block; yields the infotext's ``name: hash`` entries. Every adapter is removed on
    the way out, whether the job finished, failed or a later file was bad."""
    if not uses:
        yield []
        return
    if getattr(pipe, "transformer", None) is not None:  # SD3 / Flux.1: diffusers' own loader for their formats
        with _applied_transformer_loras(pipe, registry, uses) as hashes:
            yield hashes
        return
    from diffusers.utils.peft_utils import set_weights_and_activate_adapters

    hashes: list[str] = []
    names: list[str] = []
    te_weights: list[float] = []
    unet_weights: list[float] = []
    touched = False
    try:
        for index, use in enumerate(uses):
            info = registry.find_lora(use.name)
            state, alphas = _lora_state_dict(pipe, info)
            alias = use.name.replace(":", "").replace(",", "")
            if not state:  # embeddings only (applied_embeddings adds them)
                hashes.append(f"{alias}: {registry.short_hash(info.path)}")
                continue
            check_lora_fits(pipe, info, state)
            adapter = f"{ADAPTER_PREFIX}{index}"
            touched = True
            unet_state = {key: value for key, value in state.items() if key.startswith("unet.")}
            with warnings.catch_warnings():  # a job's second LoRA is a second adapter on purpose
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                # Text encoders first: diffusers' UNet loading takes CPU offload hooks off every component and puts
                # them back, so the new text-encoder layers are hooked like the rest.
                for prefix in TEXT_ENCODERS:
                    encoder = getattr(pipe, prefix, None)
                    if encoder is not None:
                        inject_text_encoder_lora(encoder, state, alphas, prefix, adapter)
                if unet_state:
                    type(pipe).load_lora_into_unet(unet_state, alphas, unet=pipe.unet, adapter_name=adapter,
                                                   _pipeline=pipe)
            names.append(adapter)
            te_weights.append(use.te_weight)
            unet_weights.append(use.unet_weight)
            hashes.append(f"{alias}: {registry.short_hash(info.path)}")
        for component, weights in (("unet", unet_weights), *((name, te_weights) for name in TEXT_ENCODERS)):
            model = getattr(pipe, component, None)
            if model is not None and adapters_of(model) & set(names):
                present = [(n, w) for n, w in zip(names, weights, strict=True) if n in adapters_of(model)]
                set_weights_and_activate_adapters(model, [n for n, _ in present], [w for _, w in present])
        yield hashes
    finally:
        if touched:
            remove_loras(pipe)


@contextmanager
def _applied_transformer_loras(pipe: Any, registry: NetworkRegistry, uses: tuple[LoraUse, ...]
                               ) -> Iterator[list[str]]:
    """``applied_loras`` for the transformer families (SD3, Flux.1). diffusers' ``load_lora_weights`` reads
    their LoRA formats (diffusers/PEFT, kohya's and XLabs' Flux layouts, BFL's) and converts them itself; a file
    that lands on no layer of this model, or whose shapes differ, is refused naming the file. A LoRA's text-encoder
    weight applies to the CLIP encoder(s), its model weight to the transformer."""
    label = "Flux.1" if type(pipe).__name__.startswith("Flux") else "Stable Diffusion 3"
    hashes: list[str] = []
    names: list[str] = []
    weights: list[dict[str, float]] = []
    try:
        for index, use in enumerate(uses):
            info = registry.find_lora(use.name)
            state = {key: value for key, value in read_state_dict(info.path, "LoRA").items()
                     if not key.startswith(BUNDLE_PREFIX)}  # bundled embeddings: not applied on these families
            adapter = f"{ADAPTER_PREFIX}{index}"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pipe.load_lora_weights(dict(state), adapter_name=adapter)
            except Exception as error:  # diffusers raises anything on keys or shapes it cannot place
                raise NetworkLoadError(f"LoRA {info.filename} does not fit this {label} model (a LoRA for another "
                                       f"architecture?): {str(error).splitlines()[0][:300]}") from None
            landed = {component for component in pipe._lora_loadable_modules
                      if getattr(pipe, component, None) is not None
                      and adapter in adapters_of(getattr(pipe, component))}
            text_only = all(key.startswith(("text_encoder", "lora_te")) for key in state)
            if "transformer" not in landed and not text_only:  # its model part was for a UNet (SD 1.x / SDXL)
                raise NetworkLoadError(f"LoRA {info.filename} changes no layer of this {label} model's transformer "
                                       f"(a LoRA for another architecture, e.g. SD 1.x or SDXL?)")
            names.append(adapter)
            weights.append({component: use.unet_weight if component == "transformer" else use.te_weight
                            for component in landed})
            alias = use.name.replace(":", "").replace(",", "")
            hashes.append(f"{alias}: {registry.short_hash(info.path)}")
        pipe.set_adapters(names, adapter_weights=weights)
        yield hashes
    finally:
        if any(adapters_of(getattr(pipe, component)) for component in pipe._lora_loadable_modules
               if getattr(pipe, component, None) is not None):
            pipe.unload_lora_weights()


def adapters_of(model: Any) -> set[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    found: set[str] = set()
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            found.update(getattr(module, "lora_A", {}).keys())
    return found


def remove_loras(pipe: Any) -> None:
    """Take every LoRA layer out of the pipeline's UNet and text encoders (the modules are back as loaded)."""
    from diffusers.utils.peft_utils import recurse_remove_peft_layers
    from peft.tuners.tuners_utils import BaseTunerLayer

    unet = getattr(pipe, "unet", None)
    if unet is not None and any(isinstance(module, BaseTunerLayer) for module in unet.modules()):
        unet.unload_lora()
    for name in TEXT_ENCODERS:
        encoder = getattr(pipe, name, None)
        if encoder is not None and any(isinstance(module, BaseTunerLayer) for module in encoder.modules()):
            recurse_remove_peft_layers(encoder)
            if getattr(encoder, "peft_config", None) is not None:  # left by a LoRA loaded through diffusers
                del encoder.peft_config


# -- textual-inversion embeddings ------------------------------------------------------------------------------


def read_embedding(info: NetworkFile) -> dict[str, Any]:
    """An embedding file's vectors by text encoder: ``{"clip_l": [n, dim]}`` for SD 1.x/2.x, plus ``"clip_g"``
    for SDXL. Reads A1111's ``.pt`` (``string_to_param``), ``.safetensors`` (``emb_params``), SDXL pairs and
    diffusers' one-token files."""
    data = read_state_dict(info.path, "embedding")
    if "clip_l" in data and "clip_g" in data:
        found = {"clip_l": data["clip_l"], "clip_g": data["clip_g"]}
    elif isinstance(data.get("string_to_param"), dict) and data["string_to_param"]:
        found = {"clip_l": next(iter(data["string_to_param"].values()))}
    elif "emb_params" in data:
        found = {"clip_l": data["emb_params"]}
    else:
        tensors = [value for value in data.values() if hasattr(value, "shape")]
        if len(tensors) != 1:
            raise NetworkLoadError(f"embedding {info.filename} is not a textual-inversion file this studio reads "
                                   f"(A1111 .pt/.safetensors, SDXL clip_l/clip_g, diffusers)")
        found = {"clip_l": tensors[0]}
    return {key: (value if value.dim() == 2 else value.reshape(-1, value.shape[-1])).float()
            for key, value in found.items()}


def read_bundled_embeddings(info: NetworkFile) -> dict[str, dict[str, Any]]:
    """The embeddings a LoRA file bundles: name -> vectors by text encoder (as ``read_embedding`` gives them).
    ``bundle_emb.<name>.string_to_param.<key>`` (or any other part but ``clip_l``/``clip_g``) is the one CLIP
    encoder's vectors, ``bundle_emb.<name>.clip_l`` / ``.clip_g`` SDXL's pair. Only those tensors are read from a
    .safetensors file."""
    if info.path.name.lower().endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(str(info.path), framework="pt") as handle:
                names = [key for key in handle.keys() if key.startswith(BUNDLE_PREFIX)]  # noqa: SIM118 (no __iter__)
                tensors = {key: handle.get_tensor(key) for key in names}
        except Exception as error:  # truncated, not a safetensors file
            raise NetworkLoadError(f"LoRA {info.filename} could not be read ({info.path}): {error}. The file may "
                                   f"be truncated or not a LoRA; download it again") from None
    else:
        tensors = {key: value for key, value in read_state_dict(info.path, "LoRA").items()
                   if key.startswith(BUNDLE_PREFIX) and hasattr(value, "shape")}
    found: dict[str, dict[str, Any]] = {}
    for key in sorted(tensors):
        name, _, part = key[len(BUNDLE_PREFIX):].partition(".")
        value = tensors[key]
        if not name or value.dim() == 0:
            continue
        slot = part if part in ("clip_l", "clip_g") else "clip_l"
        found.setdefault(name, {})[slot] = (value if value.dim() == 2 else value.reshape(-1, value.shape[-1])).float()
    return found


@dataclass(frozen=True)
class EmbeddingSource:
    """One embedding a job applies: ``name`` is the word its prompts write, ``label`` what an error calls it,
    ``read`` gives its vectors, ``hash_entry`` its infotext ``TI hashes`` entry (None: recorded with its LoRA)."""

    name: str
    label: str
    read: Callable[[], dict[str, Any]]
    hash_entry: str | None = None


def file_embedding(registry: NetworkRegistry, info: NetworkFile) -> EmbeddingSource:
    """An embedding file of ``models/embeddings`` as a job's source."""
    return EmbeddingSource(info.name, f"embedding {info.filename}", lambda: read_embedding(info),
                           f"{info.name.replace(':', '').replace(',', '')}: {registry.short_hash(info.path)}")


def bundled_sources(registry: NetworkRegistry, uses: tuple[LoraUse, ...], prompts: tuple[str, ...]
                    ) -> list[EmbeddingSource]:
    """The embeddings bundled in the job's LoRAs that its prompts name (the first LoRA's wins a shared name)."""
    sources: dict[str, EmbeddingSource] = {}
    for use in uses:
        info = registry.find_lora(use.name)
        for name, vectors in read_bundled_embeddings(info).items():
            if name.lower() not in sources and any(_mention(name).search(text) for text in prompts):
                sources[name.lower()] = EmbeddingSource(name, f"embedding {name} bundled in {info.filename}",
                                                        lambda vectors=vectors: vectors)
    return list(sources.values())


def describe_embedding(info: NetworkFile) -> dict[str, Any]:
    """A1111's /sdapi/v1/embeddings entry: training step and checkpoint (A1111 .pt files record them), the
    vector width and count."""
    data = read_state_dict(info.path, "embedding")
    vectors = read_embedding(info)
    first = vectors["clip_l"]
    return {"step": data.get("step") if isinstance(data.get("step"), int) else None,
            "sd_checkpoint": data.get("sd_checkpoint") if isinstance(data.get("sd_checkpoint"), str) else None,
            "sd_checkpoint_name": (data.get("sd_checkpoint_name")
                                   if isinstance(data.get("sd_checkpoint_name"), str) else None),
            "shape": int(sum(v.shape[-1] for v in vectors.values())), "vectors": int(first.shape[0])}


def _embedding_targets(pipe: Any) -> list[tuple[str, Any, Any]]:
    """(vector key, tokenizer, text encoder) for each text encoder of ``pipe``."""
    targets = [("clip_l", pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        targets.append(("clip_g", pipe.tokenizer_2, pipe.text_encoder_2))
    return targets


def embedding_fits(pipe: Any, vectors: dict[str, Any]) -> str | None:
    """None when the vectors fit ``pipe``'s text encoders, else why not (for the error and the API's skipped)."""
    for key, _tokenizer, encoder in _embedding_targets(pipe):
        width = encoder.get_input_embeddings().embedding_dim
        if key not in vectors:
            return (f"made for one text encoder; this {_family_name(pipe)} model has two (an embedding for another "
                    f"architecture)")
        if vectors[key].shape[-1] != width:
            return (f"its vectors are {vectors[key].shape[-1]} wide but this {_family_name(pipe)} model's text "
                    f"encoder takes {width} (an embedding for another architecture)")
    if len(vectors) > len(_embedding_targets(pipe)):
        return f"made for SDXL's two text encoders; this is an {_family_name(pipe)} model (another architecture)"
    return None


@dataclass
class AppliedNetworks:
    """What one job has applied: the infotext entries (``Lora hashes``, ``TI hashes``) and the tokens standing
    for its embeddings, which ``rewrite`` puts in place of their names in a prompt."""

    params: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def rewrite(self, text: str) -> str:
        for name, token in self.tokens.items():
            text = _mention(name).sub(token, text)
        return text


@contextmanager
def applied_embeddings(pipe: Any, registry: NetworkRegistry, infos: list[NetworkFile],
                       bundled: list[EmbeddingSource] = ()) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The embeddings a job's prompts name (files ``infos`` and LoRA-bundled ``bundled``, which win a shared name),
    added to ``pipe``'s tokenizers and text encoders for the ``with`` block and removed after, so a model switch or
    the next job never finds stale or doubled tokens. Each gets a token of our own (``<sfumato-ti-0>``), not its
    name: a name can be a word the tokenizer already knows (``sks``). Yields the infotext's ``name: hash`` entries
    and name -> token."""
    taken = {source.name.lower() for source in bundled}
    sources = [*bundled, *(file_embedding(registry, info) for info in infos if info.name.lower() not in taken)]
    if not sources:
        yield [], {}
        return
    loaded: list[tuple[list[str], Any, Any]] = []
    hashes: list[str] = []
    tokens: dict[str, str] = {}
    try:
        for index, source in enumerate(sources):
            vectors = source.read()
            problem = embedding_fits(pipe, vectors)
            if problem:
                raise NetworkLoadError(f"{source.label} does not fit this model: {problem}")
            token = f"<sfumato-ti-{index}>"
            for key, tokenizer, encoder in _embedding_targets(pipe):
                tensor = vectors[key].to(dtype=encoder.dtype)
                added = [token] + [f"{token}_{i}" for i in range(1, tensor.shape[0])]
                pipe.load_textual_inversion(tensor, token=token, tokenizer=tokenizer, text_encoder=encoder)
                loaded.append((added, tokenizer, encoder))
            tokens[source.name] = token
            if source.hash_entry is not None:
                hashes.append(source.hash_entry)
        yield hashes, tokens
    finally:
        for added, tokenizer, encoder in reversed(loaded):
            pipe.unload_textual_inversion(tokens=added, tokenizer=tokenizer, text_encoder=encoder)


@contextmanager
def applied_networks(pipe: Any, registry: NetworkRegistry, loras: tuple[LoraUse, ...], prompts: tuple[str, ...]
                     ) -> Iterator[AppliedNetworks]:
    """LoRAs and the embeddings ``prompts`` name (files, and those the LoRAs bundle), applied to ``pipe`` for one
    job (``with`` block)."""
    from modules.models.speedups import plain_denoiser

    # A LoRA's layers would make a compiled denoiser recompile per job: it runs uncompiled (modules.models.speedups).
    with (plain_denoiser(pipe) if loras else contextlib.nullcontext()), \
            applied_loras(pipe, registry, loras) as lora_hashes, \
            applied_embeddings(pipe, registry, registry.mentioned_embeddings(*prompts),
                               bundled_sources(registry, loras, prompts)) as (ti_hashes, tokens):
        applied = AppliedNetworks(tokens=tokens)
        if lora_hashes:
            applied.params["Lora hashes"] = ", ".join(lora_hashes)
        if ti_hashes:
            applied.params["TI hashes"] = ", ".join(ti_hashes)
        yield applied
