"""bitsandbytes quantization of the denoiser (the SD UNet or the SD3 / Flux transformer) on CUDA GPUs.

``--quantize nf4`` stores the denoiser's linear layers in 4-bit NormalFloat (about a quarter of their bf16 size; a
Flux.1-dev transformer drops from ~24 GB to ~7 GB) and ``--quantize int8`` in 8-bit (about half), through diffusers'
``BitsAndBytesConfig`` when the model loads. The text encoders, VAE and the non-linear layers keep the working dtype.
bitsandbytes runs its kernels on CUDA GPUs only here (diffusers refuses to quantize without a GPU), so on any other
device the option is refused at start-up naming it, rather than failing inside a load.

Some diffusers folders are published already quantized (``quantization_config`` in the transformer's or UNet's
``config.json``, e.g. NF4 Flux folders): ``prequantized_method`` tells, so such a folder on a machine without CUDA or
without bitsandbytes is refused saying what it needs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

QUANTIZE_CHOICES = ("none", "nf4", "int8")
DENOISERS = ("transformer", "unet")  # the component quantized, and where a pre-quantized folder says so
PACKAGE = "bitsandbytes"


def has_bitsandbytes() -> bool:
    """Whether the bitsandbytes package is installed (found, not imported: importing it loads CUDA libraries)."""
    return importlib.util.find_spec(PACKAGE) is not None


def unavailable_reason(mode: str, device_type: str, package: bool) -> str | None:
    """Why ``--quantize mode`` cannot run on a ``device_type`` device ("cuda", "cpu", "mps", ...) with or without
    the bitsandbytes ``package``; None when it can (or when nothing is asked). Pure, so testable anywhere."""
    if mode not in QUANTIZE_CHOICES:
        return f"unknown quantization {mode!r}; choose one of {', '.join(QUANTIZE_CHOICES)}"
    if mode == "none":
        return None
    if device_type not in ("cuda", "rocm"):  # torch calls both "cuda"; bitsandbytes has ROCm builds too
        return (f"bitsandbytes {mode} quantization runs on CUDA GPUs only and this studio runs on {device_type}; "
                "start without --quantize (on a CPU, GGUF files such as flux1-dev-Q8_0.gguf load quantized instead)")
    if not package:
        return f"{mode} quantization needs the bitsandbytes package: pip install 'bitsandbytes>=0.43.3'"
    return None


def startup_problem(mode: str, device: str | None) -> str | None:
    """What stops ``--quantize mode`` on this machine, asked at start-up: the package (found without importing it),
    then the device (``--device`` when given, else whether torch sees a CUDA GPU; ROCm GPUs are "cuda" to torch
    but bitsandbytes' ROCm builds are separate, so they are let through to diffusers' own check)."""
    if mode == "none":
        return None
    wanted = (device or "").strip().lower()
    if wanted and not wanted.startswith("cuda"):
        return unavailable_reason(mode, wanted.split(":")[0], has_bitsandbytes())
    import torch

    return unavailable_reason(mode, "cuda" if torch.cuda.is_available() else "cpu", has_bitsandbytes())


def bitsandbytes_arguments(mode: str, compute_dtype: torch.dtype) -> dict[str, Any]:
    """The ``BitsAndBytesConfig`` arguments of a mode: NF4 with double quantization (the quantization constants
    quantized too, ~0.4 bit per weight saved) computing in ``compute_dtype``, or LLM.int8()."""
    if mode == "nf4":
        return {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                "bnb_4bit_compute_dtype": compute_dtype}
    if mode == "int8":
        return {"load_in_8bit": True}
    raise ValueError(f"no bitsandbytes configuration for {mode!r}")


def bitsandbytes_config(mode: str, compute_dtype: torch.dtype) -> Any:
    """diffusers' ``BitsAndBytesConfig`` for a mode (building the 4-bit one needs bitsandbytes installed)."""
    from diffusers import BitsAndBytesConfig

    return BitsAndBytesConfig(**bitsandbytes_arguments(mode, compute_dtype))


def denoiser_quantization(mode: str, compute_dtype: torch.dtype) -> dict[str, Any]:
    """The ``quantization_config`` argument for loading the denoiser in ``mode`` (nothing for "none")."""
    return {} if mode == "none" else {"quantization_config": bitsandbytes_config(mode, compute_dtype)}


def prequantized_method(folder: Path) -> tuple[str, str] | None:
    """(component, description) when a diffusers folder's denoiser was saved quantized, e.g. ("transformer",
    "bitsandbytes nf4"); None for ordinary weights."""
    from modules.models.families import read_config

    for component in DENOISERS:
        config = read_config(Path(folder) / component / "config.json").get("quantization_config")
        if isinstance(config, dict):
            method = str(config.get("quant_method", "unknown"))
            if method == PACKAGE:
                if config.get("load_in_4bit"):
                    method += f" {config.get('bnb_4bit_quant_type', '4-bit')}"
                elif config.get("load_in_8bit"):
                    method += " int8"
            return component, method
    return None


def prequantized_problem(folder: Path, cuda: bool, package: bool) -> str | None:
    """Why a pre-quantized bitsandbytes folder cannot load here (no CUDA GPU, or no bitsandbytes); None when it
    can or when the folder is not quantized with bitsandbytes."""
    found = prequantized_method(folder)
    if found is None or not found[1].startswith(PACKAGE):
        return None
    component, method = found
    if cuda and package:
        return None
    missing = "a CUDA GPU" if not cuda else "the bitsandbytes package (pip install 'bitsandbytes>=0.43.3')"
    return (f"{Path(folder).name}'s {component} is saved pre-quantized ({method}), which loads only on a CUDA GPU "
            f"with bitsandbytes, and this machine lacks {missing}; use the unquantized folder, or a GGUF file of "
            "the transformer, instead")


def report_line(mode: str) -> str:
    """The line Settings and ``/api/v1/system`` show for ``--quantize``."""
    what = "4-bit NF4" if mode == "nf4" else "8-bit int8"
    return f"quantization: {what} denoiser weights (bitsandbytes, --quantize {mode})"


def weights_report(pipe: Any) -> list[str]:
    """A line for Settings' loaded-model report saying how the denoiser's weights are stored when quantized (GGUF
    types and how many tensors each, or bitsandbytes' mode); nothing for ordinary weights."""
    from collections import Counter

    from modules.models.families import denoiser

    model = denoiser(pipe)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return []
    config = quantizer.quantization_config
    method = getattr(config.quant_method, "value", str(config.quant_method))
    name = "transformer" if getattr(pipe, "unet", None) is None else "UNet"
    if method == "gguf":
        types = Counter(getattr(p.quant_type, "name", str(p.quant_type)) for p in model.parameters()
                        if getattr(p, "quant_type", None) is not None)
        stored = ", ".join(f"{kind} x{count}" for kind, count in sorted(types.items()))
        return [f"{name} weights: GGUF ({stored}), computing in {str(config.compute_dtype).removeprefix('torch.')}"]
    if getattr(config, "load_in_4bit", False):
        return [f"{name} weights: bitsandbytes 4-bit {getattr(config, 'bnb_4bit_quant_type', '')}".rstrip()]
    if getattr(config, "load_in_8bit", False):
        return [f"{name} weights: bitsandbytes 8-bit"]
    return [f"{name} weights: quantized ({method})"]
