"""Tiny ControlNets for the tests, built from a tiny pipeline's UNet and saved in the layouts users download.

``ControlNetModel.from_unet`` copies the UNet's encoder; its zero convolutions start at zero (a new ControlNet
changes nothing), so they are drawn at random here, or the tests could not see a ControlNet act; the conditioning
encoder is redrawn too, so that the control image (not only the ControlNet's presence) matters. Three layouts: a
diffusers folder, a diffusers state dict in one ``.safetensors`` file, and the original ControlNet layout
(``control_model.input_blocks...``, what ``control_v11p_sd15_canny.pth`` holds), written by inverting the key
renames diffusers' converter applies when it reads that layout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

STANDARD_WIDTHS = (16, 32, 96, 256)  # the original layout's conditioning encoder (input_hint_block 0..14)
TINY_WIDTHS = (8, 8, 16, 16)  # three stride-2 steps: the tiny models' VAE shrinks by 8 too
_RESNET_NAMES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                 "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


def build_tiny_controlnet(pipe: Any, seed: int = 0, widths: tuple[int, ...] = TINY_WIDTHS, scale: float = 0.3) -> Any:
    """A ControlNet for ``pipe``'s UNet whose zero convolutions hold random weights (so it visibly steers)."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    model = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=widths)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                parameter.copy_(torch.randn_like(parameter) * scale)
            elif name.startswith("controlnet_cond_embedding"):
                # Default initialisation lets the biases drown a 0..1 image after a few SiLUs: draw weights
                # that carry the control image through, so different control images steer differently.
                if parameter.ndim > 1:
                    fan_in = parameter[0].numel()
                    parameter.copy_(torch.randn_like(parameter) * (2.0 / fan_in) ** 0.5)
                else:
                    parameter.zero_()
    return model.eval()


def to_original_layout(state: dict[str, Any], layers_per_block: int) -> dict[str, Any]:
    """A diffusers ControlNet state dict in the original layout (keys under ``control_model.``)."""
    out: dict[str, Any] = {}
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "controlnet_cond_embedding.conv_in": "input_hint_block.0",
             "controlnet_cond_embedding.conv_out": "input_hint_block.14", "controlnet_mid_block": "middle_block_out.0"}
    for key, value in state.items():
        stem, leaf = key.rsplit(".", 1)
        if stem in fixed:
            new = f"{fixed[stem]}.{leaf}"
        elif match := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)", stem):
            new = f"input_hint_block.{2 * (int(match[1]) + 1)}.{leaf}"
        elif match := re.fullmatch(r"controlnet_down_blocks\.(\d+)", stem):
            new = f"zero_convs.{match[1]}.0.{leaf}"
        elif match := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", stem):
            block = 1 + int(match[1]) * (layers_per_block + 1) + int(match[2])
            new = f"input_blocks.{block}.0.{_RESNET_NAMES[match[3]]}.{leaf}"
        elif match := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", stem):
            block = 1 + int(match[1]) * (layers_per_block + 1) + int(match[2])
            new = f"input_blocks.{block}.1.{match[3]}.{leaf}"
        elif match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", stem):
            new = f"input_blocks.{(int(match[1]) + 1) * (layers_per_block + 1)}.0.op.{leaf}"
        elif match := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(\w+)", stem):
            new = f"middle_block.{2 * int(match[1])}.{_RESNET_NAMES[match[2]]}.{leaf}"
        elif match := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", stem):
            new = f"middle_block.1.{match[1]}.{leaf}"
        else:
            raise ValueError(f"no original-layout name for {key}")
        out[f"control_model.{new}"] = value
    return out


def save_tiny_controlnet(pipe: Any, path: Path, layout: Literal["diffusers", "file", "original"] = "diffusers",
                         seed: int = 0) -> Path:
    """Write a tiny ControlNet for ``pipe`` at ``path`` (a folder, or a .safetensors / .pth file)."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    widths = STANDARD_WIDTHS if layout == "original" else TINY_WIDTHS
    model = build_tiny_controlnet(pipe, seed=seed, widths=widths)
    if layout == "diffusers":
        model.save_pretrained(path, safe_serialization=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    if layout == "original":
        state = to_original_layout(state, int(pipe.unet.config.layers_per_block))
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return path


def _draw_zero_modules(model: Any, prefixes: tuple[str, ...], seed: int, scale: float) -> Any:
    """Random weights where a new ControlNet starts at zero, so that a test sees it steer."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(prefixes):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return model.eval()


def build_tiny_flux_controlnet(pipe: Any, seed: int = 0, style: Literal["instantx", "xlabs"] = "instantx",
                               scale: float = 0.3, num_mode: int | None = None) -> Any:
    """A Flux.1 ControlNet as wide as ``pipe``'s tiny transformer (one double- and one single-stream block).

    "instantx" reads the control image's VAE latents (InstantX / Shakker-Labs layout, what diffusers folders on
    the Hub hold); "xlabs" reads its pixels through a conditioning encoder (XLabs' layout, ``input_hint_block``).
    ``num_mode`` makes it a ControlNet-Union with that many control types.
    """
    import torch
    from diffusers import FluxControlNetModel

    config = {key: value for key, value in pipe.transformer.config.items() if not key.startswith("_")}
    config.pop("out_channels", None)
    config.update(num_layers=1, num_single_layers=1, num_mode=num_mode)
    if style == "xlabs":  # 16 channels at 1/8 size, packed 2 x 2 into the transformer's 64-wide tokens
        config.update(conditioning_embedding_channels=16, patch_size=2)
    torch.manual_seed(seed)
    model = FluxControlNetModel.from_config(config)
    if style == "xlabs":  # its encoder's last conv starts at zero too: carry the control image through
        with torch.no_grad():
            for parameter in model.input_hint_block.parameters():
                if parameter.ndim > 1:
                    parameter.copy_(torch.randn_like(parameter) * (2.0 / parameter[0].numel()) ** 0.5)
                else:
                    parameter.zero_()
    return _draw_zero_modules(model, ("controlnet_blocks", "controlnet_single_blocks", "controlnet_x_embedder"),
                              seed, scale)


def build_tiny_sd3_controlnet(pipe: Any, seed: int = 0, scale: float = 0.3) -> Any:
    """An SD3 ControlNet (InstantX layout: zero pooled projection) as wide as ``pipe``'s tiny transformer."""
    import torch
    from diffusers import SD3ControlNetModel

    config = {key: value for key, value in pipe.transformer.config.items() if not key.startswith("_")}
    config.update(num_layers=1, extra_conditioning_channels=0)
    torch.manual_seed(seed)
    model = SD3ControlNetModel.from_config(config)
    return _draw_zero_modules(model, ("controlnet_blocks", "pos_embed_input"), seed, scale)
