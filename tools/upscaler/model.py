"""The network, and the file format that lets the engine load it like any user's ESRGAN-folder model.

The network is Real-ESRGAN's SRVGGNetCompact, taken from spandrel itself rather than re-declared, so its
parameter names are exactly the ones spandrel's detector looks for (``body.0.weight``, ``body.1.weight``, ...);
spandrel reads the number of features, the depth and the scale back from the tensor shapes, so the file needs no
side configuration. It is a plain stack of 3x3 convolutions at the low resolution with a pixel-shuffle at the end
and a nearest-neighbour skip: cheap on a CPU, and tiled inference with enough overlap is exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def build_model(scale: int, features: int, convs: int, seed: int) -> torch.nn.Module:
    """A freshly initialised Compact network.

    PyTorch's default convolution init shrinks the signal by about a third per layer, so through a dozen layers
    the residual starts (and, in a short training, stays) at zero: the network collapses to its nearest-neighbour
    skip. He init for PReLU keeps the signal's scale through the depth; the last layer is scaled down so that
    training still starts near the skip.
    """
    import torch
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=features, num_conv=convs, upscale=scale, act_type="prelu")
    convolutions = [layer for layer in model.body if isinstance(layer, torch.nn.Conv2d)]
    with torch.no_grad():
        for layer in convolutions:
            torch.nn.init.kaiming_normal_(layer.weight, a=0.25, nonlinearity="leaky_relu")
            layer.bias.zero_()
        convolutions[-1].weight.mul_(0.1)
    return model


def save_model(model: torch.nn.Module, path: Path, *, half: bool, metadata: dict[str, Any]) -> None:
    """Write the weights as safetensors (float16 if ``half``), with the training recipe in the header metadata."""
    import os

    from safetensors.torch import save_file

    tensors = {name: (t.detach().half() if half else t.detach().float()).contiguous().cpu()
               for name, t in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(staging), metadata={key: json.dumps(value) for key, value in metadata.items()})
    os.chmod(staging, 0o644)  # an ordinary, world-readable model file (the staging file may be created 0600)
    os.replace(staging, path)


def load_with_spandrel(path: Path, expected_scale: int | None = None) -> Any:
    """The file as the engine will see it (a spandrel ImageModelDescriptor), checked to be a Compact of that scale."""
    from spandrel import ModelLoader

    descriptor = ModelLoader().load_from_file(str(path))
    if descriptor.architecture.id != "Compact":
        raise ValueError(f"{path}: spandrel detected {descriptor.architecture.id}, expected Compact")
    if expected_scale is not None and descriptor.scale != expected_scale:
        raise ValueError(f"{path}: spandrel detected scale {descriptor.scale}, expected {expected_scale}")
    return descriptor


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
