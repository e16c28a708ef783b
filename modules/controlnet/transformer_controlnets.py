"""ControlNets for the flow-matching transformers (Flux.1, SD3), and which family any ControlNet is for.

diffusers reads these ControlNets as folders (``config.json`` naming ``FluxControlNetModel`` or
``SD3ControlNetModel`` + weights); its single-file reader knows neither class, so a lone weights file is refused
saying what to do. A ControlNet adds a residual to each transformer block, so it fits only a transformer of the
same width, latent channels and text / pooled conditioning: everything is compared from ``config.json`` before
the weights are read, and a ControlNet for another family (an SD one on Flux, a Flux one on SD3 or on an SD
checkpoint) is refused naming the file and both families, before any step.
"""

from __future__ import annotations

import json
from typing import Any

from modules.controlnet.registry import ControlNetInfo

# The ControlNet classes diffusers saves in config.json, and the family each steers.
CONTROLNET_CLASSES = {"FluxControlNetModel": "flux", "SD3ControlNetModel": "sd3"}
TRANSFORMER_CLASSES = {"FluxTransformer2DModel": "flux", "SD3Transformer2DModel": "sd3"}
FAMILY_LABELS = {"flux": "Flux.1", "sd3": "Stable Diffusion 3"}


def transformer_family(denoiser: Any) -> str | None:
    """"flux" or "sd3" for those families' transformers, None for an SD UNet."""
    return TRANSFORMER_CLASSES.get(type(denoiser).__name__)


def folder_class(info: ControlNetInfo) -> str:
    """The model class a diffusers ControlNet folder's config.json names ("" when it names none)."""
    try:
        return str(json.loads((info.path / "config.json").read_text()).get("_class_name", ""))
    except (OSError, ValueError):
        return ""


def state_family(keys: Any) -> str | None:
    """"flux" or "sd3" when a single file's tensor names are those of a Flux / SD3 ControlNet, else None.

    Flux ControlNets embed the control latents with a linear ``controlnet_x_embedder`` (diffusers' layout) or have
    XLabs' ``double_blocks``; SD3 ones a patch embedding (``pos_embed_input``, ``pos_embed.proj``)."""
    names = list(keys)

    def has(*fragments: str) -> bool:
        return any(fragment in key for key in names for fragment in fragments)

    if has("controlnet_x_embedder.", "single_transformer_blocks.", "double_blocks."):
        return "flux"
    if has("pos_embed_input.", "pos_embed.proj."):
        return "sd3"
    return None


def load_transformer_controlnet(info: ControlNetInfo, transformer: Any, sd_family: Any) -> Any:
    """The Flux / SD3 ControlNet ``info`` names, checked against ``transformer`` before its weights are read.

    ``sd_family(state)`` names the SD family of a single file's weights (for the message when one is used here).
    """
    from modules.controlnet.loading import ControlNetLoadError, read_state_dict

    family = transformer_family(transformer)
    ours = FAMILY_LABELS[family]
    if info.kind == "file":
        state = read_state_dict(info.path)
        theirs = state_family(state)
        if theirs is None:
            label = sd_family(state) or "an SD UNet"
            raise ControlNetLoadError(f"ControlNet {info.path.name} is for {label}, but the checkpoint is {ours}: "
                                      "choose a ControlNet made for this checkpoint's family")
        if theirs != family:
            raise ControlNetLoadError(f"ControlNet {info.path.name} is for {FAMILY_LABELS[theirs]}, but the "
                                      f"checkpoint is {ours}: choose a ControlNet made for this checkpoint's family")
        raise ControlNetLoadError(
            f"ControlNet {info.path.name} is a single file; diffusers reads {ours} ControlNets only as folders: put "
            "it in a folder of its own named diffusion_pytorch_model.safetensors, next to its config.json")
    name = folder_class(info)
    theirs = CONTROLNET_CLASSES.get(name)
    if theirs != family:
        label = FAMILY_LABELS[theirs] if theirs else _sd_folder_label(info)
        raise ControlNetLoadError(f"ControlNet {info.name} is for {label}, but the checkpoint is {ours}: "
                                  "choose a ControlNet made for this checkpoint's family")
    from diffusers import FluxControlNetModel, SD3ControlNetModel

    model_class = FluxControlNetModel if family == "flux" else SD3ControlNetModel
    config = model_class.load_config(str(info.path), local_files_only=True)
    check_transformer_fits(config, transformer.config, info.name, family)
    try:
        model = model_class.from_pretrained(str(info.path), local_files_only=True)
    except Exception as error:
        raise ControlNetLoadError(f"ControlNet {info.name} cannot be loaded: {error}") from None
    return model.eval()


def _sd_folder_label(info: ControlNetInfo) -> str:
    from modules.controlnet.loading import family_name

    try:
        config = json.loads((info.path / "config.json").read_text())
        return family_name(config["cross_attention_dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"a model of another kind ({folder_class(info) or 'no class named in config.json'})"


def _width(config: Any) -> int:
    return int(config["num_attention_heads"]) * int(config["attention_head_dim"])


def check_transformer_fits(config: Any, transformer_config: Any, name: str, family: str) -> None:
    """Refuse a ControlNet of the right family whose residuals cannot be added to this transformer's blocks
    (another width, latent channels or text conditioning: a ControlNet made for a differently sized model)."""
    from modules.controlnet.loading import ControlNetLoadError

    mine, theirs = dict(config), dict(transformer_config)
    compared = ["in_channels", "pooled_projection_dim"]
    if family == "sd3":
        compared.append("patch_size")
        if mine.get("joint_attention_dim") is not None:  # SD3.5 Large's ControlNets read no text
            compared.append("joint_attention_dim")
    else:
        compared.append("joint_attention_dim")
    differ = [f"{key} {mine.get(key)} vs {theirs.get(key)}" for key in compared if mine.get(key) != theirs.get(key)]
    if _width(mine) != _width(theirs):
        differ.insert(0, f"width {_width(mine)} vs {_width(theirs)}")
    if differ:
        raise ControlNetLoadError(f"ControlNet {name} is a {FAMILY_LABELS[family]} ControlNet for a model of another "
                                  f"size than this checkpoint ({'; '.join(differ)})")


def sd_controlnet_refusal(info: ControlNetInfo, state: dict[str, Any] | None, checkpoint_label: str) -> str | None:
    """Why a Flux / SD3 ControlNet cannot steer an SD UNet (naming the file and both families), None otherwise."""
    if state is None:
        theirs = CONTROLNET_CLASSES.get(folder_class(info))
        name = info.name
    else:
        theirs = state_family(state)
        name = info.path.name
    if theirs is None:
        return None
    return (f"ControlNet {name} is for {FAMILY_LABELS[theirs]}, but the checkpoint is {checkpoint_label}: "
            "choose a ControlNet made for this checkpoint's family")


def controlnet_family(info: ControlNetInfo) -> str | None:
    """"flux", "sd3" or "sd" (a UNet ControlNet), where it is cheap to tell: a folder's config.json or a
    safetensors header; None for pickles and unreadable files (the worker tells when it loads them)."""
    if info.kind == "diffusers":
        name = folder_class(info)
        return CONTROLNET_CLASSES.get(name) or ("sd" if name == "ControlNetModel" else None)
    if info.path.suffix.lower() != ".safetensors":
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(info.path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception:  # truncated or not safetensors: the worker's loader names the problem
        return None
    return state_family(keys) or ("sd" if any("input_hint_block" in key or "controlnet_cond_embedding" in key
                                              for key in keys) else None)


def family_refusal(info: ControlNetInfo, checkpoint_family: str | None) -> str | None:
    """Why a ControlNet cannot steer a checkpoint of ``checkpoint_family`` ("flux", "sd3", an SD family or None
    when unknown), told from files alone so that a request is refused before it is queued; None when it may."""
    theirs = controlnet_family(info)
    if theirs is None or checkpoint_family is None:
        return None
    ours = checkpoint_family if checkpoint_family in FAMILY_LABELS else "sd"
    if theirs == ours:
        return None
    labels = {**FAMILY_LABELS, "sd": "an SD 1.x / 2.x / XL model"}
    name = info.name if info.kind == "diffusers" else info.path.name
    return (f"ControlNet {name} is for {labels[theirs]}, but the checkpoint is {labels[ours]}: choose a ControlNet "
            "made for this checkpoint's family")
