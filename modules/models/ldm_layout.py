"""A diffusers pipeline as an original (LDM / A1111) single-file state dict: how a DreamBooth run's model is
written (one ``.safetensors`` in ``models/Stable-diffusion`` that A1111 and ComfyUI load too), and how the loader
tests make single files.

This is the inverse of diffusers' single-file conversion, written independently from the LDM module layout, so
that loading a file made here and comparing images checks diffusers' real conversion end to end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

RESNET_TO_LDM = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)
VAE_ATTENTION_TO_LDM = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)


def _rename(key: str, pairs) -> str:
    for old, new in pairs:
        key = key.replace(old, new)
    return key


def _unet_key(key: str, per_level: int, up_has_attention: list[bool]) -> str:
    parts = key.split(".")
    stride = per_level + 1
    if parts[0] in ("time_embedding", "add_embedding"):
        target = "time_embed" if parts[0] == "time_embedding" else "label_emb.0"
        index = {"linear_1": "0", "linear_2": "2"}[parts[1]]
        return ".".join([target, index, *parts[2:]])
    simple = {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    if parts[0] in simple:
        return ".".join([simple[parts[0]], *parts[1:]])
    if parts[0] == "down_blocks":
        block, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":  # down_blocks.B.downsamplers.0.conv.* -> input_blocks.N.0.op.*
            return ".".join([f"input_blocks.{1 + block * stride + per_level}.0.op", *parts[5:]])
        index = 1 + block * stride + int(parts[3])
        slot = "0" if kind == "resnets" else "1"
        rest = ".".join(parts[4:])
        return f"input_blocks.{index}.{slot}.{_rename(rest, RESNET_TO_LDM) if kind == 'resnets' else rest}"
    if parts[0] == "mid_block":
        slot = {"resnets": {"0": "0", "1": "2"}, "attentions": {"0": "1"}}[parts[1]][parts[2]]
        rest = ".".join(parts[3:])
        return f"middle_block.{slot}.{_rename(rest, RESNET_TO_LDM) if parts[1] == 'resnets' else rest}"
    if parts[0] == "up_blocks":
        block, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":  # the upsampler follows the resnet (and attention, if any) of the last layer
            slot = 2 if up_has_attention[block] else 1
            return ".".join([f"output_blocks.{block * stride + per_level}.{slot}", *parts[4:]])
        index = block * stride + int(parts[3])
        slot = "0" if kind == "resnets" else "1"
        rest = ".".join(parts[4:])
        return f"output_blocks.{index}.{slot}.{_rename(rest, RESNET_TO_LDM) if kind == 'resnets' else rest}"
    raise KeyError(f"unmapped UNet key {key}")


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    config = unet.config
    up_attention = [t.startswith("CrossAttn") for t in config.up_block_types]
    return {
        "model.diffusion_model." + _unet_key(key, config.layers_per_block, up_attention): value
        for key, value in unet.state_dict().items()
    }


def _vae_key(key: str, levels: int) -> str:
    parts = key.split(".")
    if parts[0] in ("quant_conv", "post_quant_conv"):
        return key
    coder, rest = parts[0], parts[1:]
    if rest[0] in ("conv_in", "conv_out"):
        return key
    if rest[0] == "conv_norm_out":
        return ".".join([coder, "norm_out", *rest[1:]])
    if rest[0] == "mid_block":
        if rest[1] == "resnets":
            return ".".join([coder, f"mid.block_{int(rest[2]) + 1}", *rest[3:]])
        return ".".join([coder, "mid.attn_1", _rename(".".join(rest[3:]), VAE_ATTENTION_TO_LDM)])
    block = int(rest[1])
    if rest[0] == "down_blocks":
        if rest[2] == "downsamplers":
            return ".".join([coder, f"down.{block}.downsample", *rest[4:]])
        return ".".join([coder, f"down.{block}.block.{rest[3]}", *rest[4:]]).replace("conv_shortcut", "nin_shortcut")
    if rest[0] == "up_blocks":  # the decoder's up blocks are numbered from the lowest resolution in LDM
        level = levels - 1 - block
        if rest[2] == "upsamplers":
            return ".".join([coder, f"up.{level}.upsample", *rest[4:]])
        return ".".join([coder, f"up.{level}.block.{rest[3]}", *rest[4:]]).replace("conv_shortcut", "nin_shortcut")
    raise KeyError(f"unmapped VAE key {key}")


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    out = {}
    for key, value in vae.state_dict().items():
        ldm = _vae_key(key, levels)
        if ".mid.attn_1." in ldm and ldm.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's VAE attention uses 1x1 convolutions
        out["first_stage_model." + ldm] = value
    return out


def clip_to_ldm(text_encoder, prefix: str) -> dict[str, torch.Tensor]:
    """transformers' CLIP layout under ``<prefix>text_model.`` (how LDM wraps the HF model)."""
    return {prefix + "text_model." + key.removeprefix("text_model."): value
            for key, value in text_encoder.state_dict().items()}


def open_clip_to_ldm(text_encoder, prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP's text tower layout: fused q/k/v ``in_proj``, ``resblocks``, (width x dim) ``text_projection``."""
    state = {key.removeprefix("text_model."): value for key, value in text_encoder.state_dict().items()}
    out = {
        prefix + "token_embedding.weight": state["embeddings.token_embedding.weight"],
        prefix + "positional_embedding": state["embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": state["final_layer_norm.weight"],
        prefix + "ln_final.bias": state["final_layer_norm.bias"],
    }
    if "text_projection.weight" in state:
        out[prefix + "text_projection"] = state["text_projection.weight"].T.contiguous()
    names = (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
             ("self_attn.out_proj", "attn.out_proj"))
    import torch

    layers = {int(key.split(".")[2]) for key in state if key.startswith("encoder.layers.")}
    for layer in sorted(layers):
        source, target = f"encoder.layers.{layer}.", f"{prefix}transformer.resblocks.{layer}."
        for old, new in names:
            for kind in ("weight", "bias"):
                out[f"{target}{new}.{kind}"] = state[f"{source}{old}.{kind}"]
        for kind in ("weight", "bias"):
            qkv = [state[f"{source}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")]
            out[f"{target}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
    return out


def pipeline_to_ldm(pipe) -> dict[str, torch.Tensor]:
    """The whole pipeline in the original single-file layout (SD 1.x or SDXL, chosen by its components)."""
    state = {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae)}
    if getattr(pipe, "text_encoder_2", None) is not None:
        state.update(clip_to_ldm(pipe.text_encoder, "conditioner.embedders.0.transformer."))
        state.update(open_clip_to_ldm(pipe.text_encoder_2, "conditioner.embedders.1.model."))
    else:
        state.update(clip_to_ldm(pipe.text_encoder, "cond_stage_model.transformer."))
    return {key: value.detach().clone().contiguous() for key, value in state.items()}


def save_single_file(pipe, path: Path) -> Path:
    """Save as .safetensors, or as a weights-only .ckpt ({"state_dict": ...}, as LDM training wrote them)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = pipeline_to_ldm(pipe)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 0}, path)
    return path


def save_vae_file(vae, path: Path, prefix: str = "") -> Path:
    """A VAE alone in the original layout, as A1111 users keep them in ``models/VAE`` (bare ``encoder.*`` keys,
    or ``first_stage_model.*`` when cut out of a checkpoint): .safetensors, or a weights-only .pt/.ckpt."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {prefix + key.removeprefix("first_stage_model."): value.detach().clone().contiguous()
             for key, value in vae_to_ldm(vae).items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path
