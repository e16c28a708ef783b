"""A float32 VAE inside a bf16 pipeline.

On a CPU with native bf16 the UNet and text encoder run in bf16 (``modules.runtime.devices``), but the VAE's decoder
turns latents into pixels, where bf16's 8-bit mantissa shows as banding; it is also a small share of the time. So
the VAE keeps float32 weights and hooks on its parts cast what goes in to float32 and the latents it encodes back
to the pipeline's dtype: diffusers' txt2img, img2img and inpaint pipelines then work unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_MARK = "_sfumato_compute_dtype"


def keep_vae_float32(vae: Any, compute_dtype: torch.dtype) -> bool:
    """Cast ``vae`` to float32 and hook it to exchange ``compute_dtype`` latents with the pipeline; False (and
    nothing done) when the pipeline computes in float32 or float16 (fp16 VAEs have their own upcast rule)."""
    import torch

    if compute_dtype != torch.bfloat16:
        return False
    vae.to(torch.float32)
    if getattr(vae.config, "force_upcast", False):
        # Already float32: stops SDXL's pipelines from casting it to the latents' dtype after an encode.
        vae.register_to_config(force_upcast=False)
    if getattr(vae, _MARK, None) is None:
        for part in (vae.encoder, vae.decoder, getattr(vae, "post_quant_conv", None)):
            if part is not None:
                part.register_forward_pre_hook(_inputs_to_own_dtype)
        last = getattr(vae, "quant_conv", None) or vae.encoder  # the encoder's moments: latents come from them
        last.register_forward_hook(_output_to_compute_dtype(vae))
    setattr(vae, _MARK, compute_dtype)
    return True


def compute_dtype_of(vae: Any) -> torch.dtype | None:
    """The dtype the pipeline around a float32-kept VAE computes in, or None for an ordinary VAE."""
    return getattr(vae, _MARK, None)


def _inputs_to_own_dtype(module: Any, args: tuple) -> tuple:
    """Inputs in the part's own dtype (float32 unless something cast the VAE since: then it still runs)."""
    import torch

    dtype = next(module.parameters()).dtype
    return tuple(arg.to(dtype) if isinstance(arg, torch.Tensor) and arg.is_floating_point() else arg for arg in args)


def _output_to_compute_dtype(vae: Any) -> Any:
    def hook(_module: Any, _args: tuple, output: Any) -> Any:
        dtype = getattr(vae, _MARK, None)
        return output.to(dtype) if dtype is not None else output

    return hook
