"""GGUF single files: quantized transformers (Flux.1, SD3) as the community publishes them (``flux1-dev-Q8_0.gguf``).

A GGUF file holds one model's tensors, most of them quantized in llama.cpp's block formats (Q8_0, Q4_K, ...), the
rest (biases, norms) in F32 / F16. diffusers reads them through ``GGUFQuantizationConfig`` and keeps the quantized
blocks in memory, dequantizing each layer's weight as it runs, so a Q8_0 Flux transformer needs about half the
memory of its bf16 weights and Q4 about a quarter. This module only reads the file's table of tensors (names and
shapes, with the ``gguf`` package's reader, which maps the file and parses its header) so that the registry can tell
the family without loading weights, and a truncated or corrupt download is refused naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

GGUF_SUFFIX = ".gguf"


class GgufFileError(ValueError):
    """A .gguf file that cannot be read; the message names the file and says what to do."""


def is_gguf(path: Path) -> bool:
    """Whether a checkpoint path is a GGUF file (by its extension, as every tool names them)."""
    return Path(path).suffix.lower() == GGUF_SUFFIX


def read_gguf_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> logical shape (torch order) from a GGUF file's header, without reading the weights.

    Raises ``GgufFileError`` naming the file when it is not a GGUF file, is truncated (a tensor's data would end
    past the file's end) or the ``gguf`` package is missing."""
    path = Path(path)
    try:
        from gguf import GGUFReader
    except ImportError as error:
        raise GgufFileError(f"{path.name} is a GGUF file; reading it needs the gguf package "
                            "(pip install gguf, listed in Sfumato's requirements)") from error
    try:
        reader = GGUFReader(str(path))
        size = path.stat().st_size
        shapes: dict[str, tuple[int, ...]] = {}
        for tensor in reader.tensors:
            if int(tensor.data_offset) + int(tensor.n_bytes) > size:
                raise ValueError(f"tensor {tensor.name} ends past the end of the file")
            # GGML lists dimensions innermost first; torch outermost first.
            shapes[tensor.name] = tuple(int(n) for n in reversed(tensor.shape.tolist()))
    except (OSError, ValueError, IndexError, KeyError) as error:  # the reader's numpy views fail on a short file
        raise GgufFileError(f"{path.name} is not a readable GGUF file (truncated or corrupt download?): "
                            f"{error}") from error
    if not shapes:
        raise GgufFileError(f"{path.name} is a GGUF file without tensors")
    return shapes


def quantization_config(compute_dtype: torch.dtype) -> Any:
    """diffusers' GGUF quantization config: layers keep their quantized blocks and compute in ``compute_dtype``."""
    from diffusers import GGUFQuantizationConfig

    return GGUFQuantizationConfig(compute_dtype=compute_dtype)

