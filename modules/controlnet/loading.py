"""Reading a ControlNet for the checkpoint a job runs on, and keeping a few loaded.

Users bring ControlNets in two layouts: diffusers folders (``config.json`` + weights) and single files, either in
the original ControlNet key layout (``control_model.input_blocks...``, what the A1111 extension loads) or a saved
diffusers state dict. A single file carries no config, so its skeleton is the job's own UNet turned into a
ControlNet (``ControlNetModel.from_unet``), with the conditioning encoder's widths read from the weights; the
original layout is converted with diffusers' converter. Flux.1 and SD3 ControlNets (``transformer_controlnets``)
steer those families' transformers. Every shape is compared before anything is loaded, so a
ControlNet for another family (an SDXL ControlNet on an SD 1.5 checkpoint) is refused with a message naming the
file and both families, never run into a shape error mid-generation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from modules.controlnet.registry import ControlNetInfo

LDM_PREFIX = "control_model."
_CROSS_ATTENTION_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


class ControlNetLoadError(RuntimeError):
    """A ControlNet file that cannot be read or does not fit the checkpoint; the message names the file."""


def family_name(cross_attention_dim: Any) -> str:
    """A model family as users know it, from the width of its text conditioning."""
    dim = cross_attention_dim[0] if isinstance(cross_attention_dim, (list, tuple)) else cross_attention_dim
    return _CROSS_ATTENTION_FAMILIES.get(int(dim), f"a model with {dim}-wide text conditioning")


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a single file: safetensors directly, pickles weights-only (never arbitrary code)."""
    import torch

    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a model file, a pickle with code in it
        raise ControlNetLoadError(f"ControlNet {path.name} cannot be read: {error}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ControlNetLoadError(f"ControlNet {path.name} holds no weights")
    return loaded


def _is_original_layout(state: dict[str, Any]) -> bool:
    return any(key.startswith((f"{LDM_PREFIX}input_hint_block", "input_hint_block")) for key in state)


def _hint_channels(state: dict[str, Any]) -> tuple[int, tuple[int, ...]]:
    """(conditioning channels, the conditioning encoder's widths) read from the weights of either layout."""
    if _is_original_layout(state):
        # input_hint_block: conv(c0) act conv(c0) act conv(c1, stride 2) ... conv(cn) act conv(UNet width)
        prefix = LDM_PREFIX if any(key.startswith(LDM_PREFIX) for key in state) else ""
        convs = sorted((int(key.split(".")[-2]), value) for key, value in state.items()
                       if key.startswith(f"{prefix}input_hint_block.") and key.endswith(".weight"))
        outs = [int(value.shape[0]) for _, value in convs[:-1]]
        channels = int(convs[0][1].shape[1])
    else:
        # conv_in(c0), then per step down: conv(c_i -> c_i), conv(c_i -> c_i+1, stride 2)
        channels = int(state["controlnet_cond_embedding.conv_in.weight"].shape[1])
        outs = [int(state["controlnet_cond_embedding.conv_in.weight"].shape[0])]
        index = 0
        while f"controlnet_cond_embedding.blocks.{index}.weight" in state:
            outs.append(int(state[f"controlnet_cond_embedding.blocks.{index}.weight"].shape[0]))
            index += 1
    distinct = outs[0::2]
    return channels, tuple(distinct)


def load_controlnet(info: ControlNetInfo, denoiser: Any) -> Any:
    """The ControlNet ``info`` names, checked against ``denoiser`` (the checkpoint's UNet or Flux / SD3
    transformer it will steer), on the CPU."""
    from diffusers import ControlNetModel

    from modules.controlnet import transformer_controlnets as flow

    if flow.transformer_family(denoiser) is not None:
        return flow.load_transformer_controlnet(info, denoiser, _family_from_state)
    unet = denoiser
    if info.kind == "diffusers":
        refusal = flow.sd_controlnet_refusal(info, None, family_name(unet.config.cross_attention_dim))
        if refusal:
            raise ControlNetLoadError(refusal)
        try:
            model = ControlNetModel.from_pretrained(str(info.path), local_files_only=True)
        except Exception as error:
            raise ControlNetLoadError(f"ControlNet {info.name} cannot be loaded: {error}") from None
        check_fits(model.config, unet.config, info.name)
        return model.eval()
    state = read_state_dict(info.path)
    refusal = flow.sd_controlnet_refusal(info, state, family_name(unet.config.cross_attention_dim))
    if refusal:
        raise ControlNetLoadError(refusal)
    original = _is_original_layout(state)
    if not original and "controlnet_cond_embedding.conv_in.weight" not in state:
        raise ControlNetLoadError(f"ControlNet {info.path.name} is not a ControlNet (no conditioning encoder in it)")
    try:
        channels, widths = _hint_channels(state)
    except (KeyError, IndexError, AttributeError) as error:
        raise ControlNetLoadError(f"ControlNet {info.path.name} has an unreadable conditioning encoder: {error}"
                                  ) from None
    skeleton = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=widths,
                                         load_weights_from_unet=False, conditioning_channels=channels)
    if original:
        from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

        try:
            converted = convert_controlnet_checkpoint(state, {"layers_per_block": unet.config.layers_per_block})
            state = {key: value for key, value in converted.items() if value is not None}  # None: not in the file
        except Exception as error:
            raise ControlNetLoadError(f"ControlNet {info.path.name} cannot be converted: {error}") from None
    _check_shapes(state, skeleton, info.path.name, unet.config)
    skeleton.load_state_dict(state, strict=True)
    return skeleton.eval()


def check_fits(config: Any, unet_config: Any, name: str) -> None:
    """Refuse a ControlNet whose residuals cannot be added to this UNet's, naming both families."""
    mine, theirs = config, unet_config
    if (family_name(mine.cross_attention_dim) != family_name(theirs.cross_attention_dim)
            or tuple(mine.block_out_channels) != tuple(theirs.block_out_channels)
            or mine.in_channels != 4 and mine.in_channels != theirs.in_channels):
        raise ControlNetLoadError(
            f"ControlNet {name} is for {family_name(mine.cross_attention_dim)} "
            f"(blocks {tuple(mine.block_out_channels)}), but the checkpoint is "
            f"{family_name(theirs.cross_attention_dim)} (blocks {tuple(theirs.block_out_channels)}): "
            "choose a ControlNet made for this checkpoint's family")


def _check_shapes(state: dict[str, Any], skeleton: Any, filename: str, unet_config: Any) -> None:
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(key for key in set(expected) & set(state) if tuple(state[key].shape) != expected[key])
    if not (missing or unexpected or wrong):
        return
    theirs = _family_from_state(state)
    family = f"is for {theirs}, but the checkpoint is {family_name(unet_config.cross_attention_dim)}" if theirs \
        and theirs != family_name(unet_config.cross_attention_dim) else "does not match this checkpoint's UNet"
    sample = (wrong or missing or unexpected)[:3]
    raise ControlNetLoadError(f"ControlNet {filename} {family} ({len(wrong)} shapes differ, {len(missing)} "
                              f"weights missing, {len(unexpected)} unknown; e.g. {', '.join(sample)})")


def _family_from_state(state: dict[str, Any]) -> str | None:
    for key, value in state.items():
        if key.endswith("attn2.to_k.weight") and getattr(value, "ndim", 0) == 2:
            return family_name(int(value.shape[1]))
    return None


class ControlNetModels:
    """ControlNets loaded on the worker, a few kept (least recently used first out), keyed by file, hash and the
    checkpoint's layout, device and dtype: switching units between jobs does not reread files."""

    def __init__(self, keep: int = 3) -> None:
        self._keep = max(1, keep)
        self._loaded: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, info: ControlNetInfo, denoiser: Any, device: Any) -> Any:
        """The ControlNet on ``device`` in the denoiser's (UNet's or transformer's) dtype, loaded once."""
        import json

        stamp = info.weights.stat().st_mtime_ns if info.weights.exists() else 0
        layout = json.dumps(dict(denoiser.config), sort_keys=True, default=str)
        key = (str(info.path), info.short_hash, stamp, str(device), str(denoiser.dtype), type(denoiser).__name__,
               layout)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        model = load_controlnet(info, denoiser).to(device=device)
        if model.dtype != denoiser.dtype:
            model = model.to(dtype=denoiser.dtype)
        with self._lock:
            self._loaded[key] = model
            while len(self._loaded) > self._keep:
                self._loaded.popitem(last=False)
        return model

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()
