"""Load a user's VAE (``models/VAE``) to decode a loaded checkpoint's latents with, offline.

A1111 users keep VAEs as single files in the original layout (``encoder.*``, ``decoder.*``, ``quant_conv.*``,
sometimes under a ``first_stage_model.`` prefix when cut out of a checkpoint), as .pt/.ckpt pickles, or as
diffusers folders. Single files go through diffusers' own conversion (``from_single_file``) with ``config=`` a
local folder whose shape fields are derived from the tensors the way the checkpoint loader derives them, so
nothing is ever looked up on a hub. Pickles are read weights-only, like checkpoints.

The latent scaling factor belongs to the checkpoint's latent space, not to the VAE file (a standalone SD 1.x VAE
file says nothing about it, and a diffusers folder may carry a different family's value), so the caller passes
the checkpoint's own and it replaces whatever the VAE came with.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.models.checkpoints import (
    CONFIG_ROOT,
    VAE,
    CheckpointLoadError,
    Layout,
    _derive_vae,
    _groups,
    _numbered,
    _write_config_folder,
    dtype_argument,
    load_ckpt_state_dict,
)

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL

    from modules.models.registry import VaeInfo

# Prefixes a VAE's keys carry when it was cut out of a checkpoint (LDM) or a diffusers single file.
VAE_PREFIXES = (VAE, "vae.")
# Training leftovers some VAE files carry (A1111 drops them too).
IGNORED_PREFIXES = ("loss.", "model_ema.")
# diffusers' pre-0.14 names for the VAE's attention, still found in old diffusers-layout single files.
OLD_ATTENTION_NAMES = ((".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."),
                       (".proj_attn.", ".to_out.0."))


def load_vae(
    info: VaeInfo,
    torch_dtype: torch.dtype | None = None,
    cache_dir: Path | None = None,
    *,
    family: str = "sd1",
    scaling_factor: float | None = None,
) -> AutoencoderKL:
    """An ``AutoencoderKL`` from a VAE folder or file, offline, on the CPU.

    ``family`` picks the config for what tensor shapes cannot tell (activation, sample size, upcasting) and
    ``scaling_factor`` (the checkpoint's own VAE's) replaces the VAE's. Raises ``CheckpointLoadError`` with a
    message for the user when the VAE cannot, or must not, be loaded.
    """
    import torch

    dtype = torch_dtype or torch.float32
    cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "sfumato-model-configs"
    path = Path(info.path)
    if path.is_dir():
        vae = _load_folder(path, dtype)
    elif not path.is_file():
        raise CheckpointLoadError(f"The VAE {path} does not exist (was it moved? refresh the VAE list)")
    else:
        vae = _load_file(path, dtype, family, cache)
    missing = [key for key, tensor in vae.state_dict().items() if tensor.device.type == "meta"]
    if missing:
        raise CheckpointLoadError(
            f"The VAE {path.name} lacks {len(missing)} weights (e.g. {missing[0]}); the file is incomplete or not "
            "a Stable Diffusion VAE."
        )
    if scaling_factor is not None:
        vae.register_to_config(scaling_factor=float(scaling_factor))
    return vae.eval()


def check_vae_fits(vae: Any, reference: Any, name: str) -> None:
    """Refuse a VAE whose latent space cannot be the checkpoint's (other channel count or downscaling).

    Such a VAE would fail deep inside the pipeline, or silently draw at the wrong size.
    """
    ours, theirs = vae.config, reference.config
    if ours.latent_channels != theirs.latent_channels or len(ours.block_out_channels) != len(
        theirs.block_out_channels
    ):
        raise CheckpointLoadError(
            f"The VAE {name} does not fit this checkpoint: it has {ours.latent_channels} latent channels and "
            f"{len(ours.block_out_channels)} levels, the checkpoint's VAE {theirs.latent_channels} and "
            f"{len(theirs.block_out_channels)}."
        )


def _load_folder(path: Path, dtype: torch.dtype) -> AutoencoderKL:
    from diffusers import AutoencoderKL

    try:
        return AutoencoderKL.from_pretrained(str(path), **dtype_argument(dtype), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointLoadError(f"Could not load the diffusers VAE folder {path.name}: {error}") from error


def _load_file(path: Path, dtype: torch.dtype, family: str, cache: Path) -> AutoencoderKL:
    import torch
    from diffusers import AutoencoderKL

    state = _vae_state_dict(path, _read_state_dict(path))
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    try:
        derived = _derive_vae({VAE + key: shape for key, shape in shapes.items()}) if _is_ldm(shapes) else (
            _derive_diffusers_vae(shapes)
        )
    except (KeyError, IndexError, ZeroDivisionError) as error:
        raise CheckpointLoadError(
            f"The VAE {path.name} has an incomplete or unusual layout (missing {error}); it cannot be configured "
            "from its tensor shapes."
        ) from error
    config = {**_family_vae_config(family), **derived}
    config_dir = _write_config_folder({"model_index": {"_class_name": "AutoencoderKL"}, "vae": config}, cache)
    try:
        return AutoencoderKL.from_single_file(
            state, config=str(config_dir), subfolder="vae", local_files_only=True,
            # as the checkpoint loader: float32 is the default
            **dtype_argument(None if dtype == torch.float32 else dtype),
        )
    except Exception as error:  # diffusers raises ValueError, SingleFileComponentError, RuntimeError, KeyError...
        raise CheckpointLoadError(f"Could not load {path.name} as a VAE: {error}") from error


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor in the file: safetensors as is, .pt/.ckpt only through the weights-only unpickler."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (OSError, SafetensorError) as error:
            raise CheckpointLoadError(f"{path.name} is not a readable safetensors file: {error}") from error
    if suffix in (".pt", ".ckpt"):
        return load_ckpt_state_dict(path)
    raise CheckpointLoadError(f"{path.name}: unsupported VAE type {path.suffix!r}; use .safetensors")


def _vae_state_dict(path: Path, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The VAE's own tensors with any checkpoint prefix removed (and diffusers' old attention names updated)."""
    prefix = next((p for p in VAE_PREFIXES if any(key.startswith(p) for key in state)), "")
    own = {
        key[len(prefix):]: value for key, value in state.items()
        if key.startswith(prefix) and not key[len(prefix):].startswith(IGNORED_PREFIXES)
    }
    if "encoder.conv_in.weight" not in own or "decoder.conv_out.weight" not in own:
        raise CheckpointLoadError(
            f"{path.name} is not a VAE: it has no encoder and decoder (encoder.conv_in / decoder.conv_out). "
            "Checkpoints belong in the Stable-diffusion folder."
        )
    if _is_ldm(own):
        return own
    renamed = {}
    for key, value in own.items():
        if key.startswith(("encoder.mid_block.attentions.", "decoder.mid_block.attentions.")):
            for old, new in OLD_ATTENTION_NAMES:
                key = key.replace(old, new)
        renamed[key] = value
    return renamed


def _is_ldm(shapes: dict[str, Any]) -> bool:
    return any(key.startswith("encoder.down.") for key in shapes)


def _derive_diffusers_vae(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Shape-visible config fields of a VAE saved in diffusers' layout as one file (``encoder.down_blocks.*``)."""
    levels = _numbered(shapes, "encoder.down_blocks.")
    channels = [shapes[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"][0] for i in levels]
    return {
        "in_channels": shapes["encoder.conv_in.weight"][1],
        "out_channels": shapes["decoder.conv_out.weight"][0],
        "block_out_channels": channels,
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "layers_per_block": len(_numbered(shapes, "encoder.down_blocks.0.resnets.")),
        "latent_channels": shapes["encoder.conv_out.weight"][0] // 2,
        "norm_num_groups": _groups(channels, min(channels) // 2),
        "mid_block_add_attention": any(key.startswith("encoder.mid_block.attentions.") for key in shapes),
        "use_quant_conv": "quant_conv.weight" in shapes,
        "use_post_quant_conv": "post_quant_conv.weight" in shapes,
    }


def _family_vae_config(family: str) -> dict[str, Any]:
    """The shipped VAE config of a family (SD 1.x for an unknown one: its VAE is the common ancestor)."""
    name = Layout(family if family in ("sd1", "sd2", "sdxl") else "sd1", False).config_name
    return json.loads((CONFIG_ROOT / name / "vae" / "config.json").read_text(encoding="utf-8"))
