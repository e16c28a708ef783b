"""Write a model's weights as a GGUF file, the way quantized Flux / SD3 transformers are published.

Tests use it on the tiny transformers of ``tools.tiny_model``: every 2-D weight whose rows split into whole
quantization blocks is stored quantized (Q8_0 by default, as in ``flux1-dev-Q8_0.gguf``), the other 2-D weights in
F16 and everything else (biases, norms) in F32, the mix the published files have. Names are diffusers' own
(``transformer_blocks.0.attn.to_q.weight``), which diffusers' GGUF loader takes without conversion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_gguf(state_dict: dict[str, Any], path: Path, quant: str = "Q8_0", arch: str = "flux") -> dict[str, str]:
    """Write ``state_dict`` (name -> torch tensor) to ``path``; returns each tensor's stored GGUF type by name."""
    import gguf
    import numpy as np

    quant_type = gguf.GGMLQuantizationType[quant]
    block = gguf.GGML_QUANT_SIZES[quant_type][0]  # elements per quantization block
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch=arch)
    stored: dict[str, str] = {}
    for name, tensor in state_dict.items():
        array = tensor.detach().float().cpu().numpy()
        if array.ndim == 2 and array.shape[-1] % block == 0:
            writer.add_tensor(name, gguf.quants.quantize(array, quant_type), raw_dtype=quant_type)
            stored[name] = quant
        elif array.ndim == 2:
            writer.add_tensor(name, array.astype(np.float16))
            stored[name] = "F16"
        else:
            writer.add_tensor(name, array.astype(np.float32))
            stored[name] = "F32"
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored
