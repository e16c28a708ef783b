"""A tiny random-weight upscaler in the layout users download (Real-ESRGAN's compact net), for tests and benchmarks.

Real-ESRGAN Compact adds its output to the nearest-neighbour enlargement of its input, so even untrained weights
give a recognisable picture; spandrel finds its architecture and scale from the saved weights like any download.
"""

from __future__ import annotations

from pathlib import Path


def save_tiny_upscaler(path: Path, scale: int = 2, seed: int = 0, features: int = 8, convs: int = 2) -> Path:
    """Write the weights as ``.safetensors`` or ``.pth`` (by ``path``'s suffix) and return ``path``."""
    import torch
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=features, num_conv=convs, upscale=scale)
    with torch.no_grad():  # small weights: the picture stays close to its enlargement, as a trained model's would
        for parameter in model.parameters():
            parameter.mul_(0.1)
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, path)
    else:
        torch.save(state, path)
    return path
