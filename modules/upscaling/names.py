"""The one home of upscaler names shared by hires fix, the Upscale tab, X/Y/Z axes and the API listings."""

from __future__ import annotations

from modules.upscaling.registry import UpscalerRegistry

# Hires fix only: resize the latents instead of the pixels (A1111's names -> torch interpolation modes).
LATENT_UPSCALERS: dict[str, str] = {
    "Latent": "bilinear", "Latent (antialiased)": "bilinear", "Latent (bicubic)": "bicubic",
    "Latent (bicubic antialiased)": "bicubic", "Latent (nearest)": "nearest",
    "Latent (nearest-exact)": "nearest-exact", "Latent (bilinear)": "bilinear",
}


def hires_upscaler_names(registry: UpscalerRegistry) -> list[str]:
    """What hires fix may use, in A1111's order: the latent modes, then every pixel upscaler (built-ins, models)."""
    return [*LATENT_UPSCALERS, *registry.names()]


def image_upscaler_names(registry: UpscalerRegistry) -> list[str]:
    """What the Upscale tab and the Extras API may use: built-ins and models."""
    return registry.names()
