"""Cheap live previews: latents to RGB by a linear map fitted to the model's own autoencoder.

Decoding the latents with the VAE every few steps costs as much as several denoising steps on a small model, so
the live preview is computed instead as ``rgb = latents . W + b`` per latent pixel (what A1111 calls "Approx
cheap"), then enlarged. ``W`` and ``b`` are not a table of known coefficients per family: they are fitted, once per
autoencoder, by encoding a few patterned calibration images with it and solving least squares between their
latents and what the decoder makes of them, so the same code serves SD 1.x, SDXL and any VAE a user brings.
A linear map only works for autoencoders whose latents carry colour roughly linearly (SD's do); where the fitted
map misses the decoder by more than ``MAX_FIT_ERROR`` (the embedded model's small autoencoder folds colours
nonlinearly), previews of that autoencoder are decoded instead, at half the latent resolution (a quarter of the
work), since a wrong-coloured preview is worse than a blurred one.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

CALIBRATION_IMAGES = 6
CALIBRATION_SIDE = 64
PATCH = 8  # calibration patches are this many pixels a side: flat colours the latents can represent
MAX_FIT_ERROR = 12.0  # mean absolute error, in 0-255 levels, between the map and the decoder on the calibration

_lock = threading.Lock()


@dataclass(frozen=True)
class FittedMap:
    """A (channels + 1) x 3 latent-to-RGB map (bias last) and how far it is from the decoder (0-255 levels)."""

    weights: np.ndarray
    error: float

    @property
    def usable(self) -> bool:
        return self.error <= MAX_FIT_ERROR


class LatentPreviewer:
    """Fitted latent-to-RGB maps, one per autoencoder (held weakly: a VAE that is unloaded takes its map along)."""

    def __init__(self) -> None:
        self._maps: weakref.WeakKeyDictionary[Any, FittedMap] = weakref.WeakKeyDictionary()

    def preview(self, pipe: Any, latents: Any, decode: Any = None) -> Image.Image:
        """The first image of ``latents`` (the pipeline's scaled latent space) as an RGB picture of the output's
        size; ``decode(pipe, latents)`` (the full decode) is used for an autoencoder the map cannot follow."""
        fitted = self.fit_for(pipe.vae)
        if not fitted.usable and decode is not None:
            return reduced_decode(pipe, latents[:1, : fitted.weights.shape[0] - 1], decode)
        weights = fitted.weights
        first = latents[:1, : weights.shape[0] - 1].float().cpu().numpy()[0]  # C x h x w
        channels, height, width = first.shape
        flat = np.concatenate([first.reshape(channels, -1).T, np.ones((height * width, 1), np.float32)], axis=1)
        rgb = (flat @ weights).reshape(height, width, 3)
        pixels = np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8)
        scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
        return Image.fromarray(pixels, "RGB").resize((width * scale, height * scale), Image.Resampling.BILINEAR)

    def fit_for(self, vae: Any) -> FittedMap:
        """The map of ``vae``, fitted on first use."""
        with _lock:
            found = self._maps.get(vae)
        if found is None:
            found = fit_latent_to_rgb(vae)
            with _lock:
                self._maps[vae] = found
        return found


def reduced_decode(pipe: Any, latents: Any, decode: Any) -> Image.Image:
    """The full decoder at half the latent resolution (a quarter of its work), enlarged to the output's size: a
    preview needs the colours and the layout, not the detail."""
    import torch

    height, width = latents.shape[-2:]
    full_size = (width * int(getattr(pipe, "vae_scale_factor", 8) or 8),
                 height * int(getattr(pipe, "vae_scale_factor", 8) or 8))
    if min(height, width) >= 16:
        latents = torch.nn.functional.avg_pool2d(latents.float(), 2).to(latents.dtype)
    image = decode(pipe, latents)[0]
    return image if image.size == full_size else image.resize(full_size, Image.Resampling.BILINEAR)


def calibration_images(count: int = CALIBRATION_IMAGES, side: int = CALIBRATION_SIDE, seed: int = 0) -> np.ndarray:
    """Deterministic pictures of flat colour patches (and their mixtures), in [-1, 1], shape N x 3 x side x side."""
    rng = np.random.default_rng(seed)
    cells = side // PATCH
    colours = rng.uniform(-1.0, 1.0, size=(count, 3, cells, cells)).astype(np.float32)
    colours[0] = np.linspace(-1, 1, cells, dtype=np.float32)[None, None, :]  # a grey ramp anchors the brightness
    return np.repeat(np.repeat(colours, PATCH, axis=2), PATCH, axis=3)


def fit_latent_to_rgb(vae: Any) -> FittedMap:
    """Least squares from the VAE's scaled latents of the calibration images to the decoder's pictures of those
    latents, pooled to the latent grid, with the fit's mean error."""
    import torch

    images = torch.from_numpy(calibration_images())
    parameter = next(vae.parameters())
    config = vae.config
    shift = float(getattr(config, "shift_factor", None) or 0.0)
    scale = float(config.scaling_factor)
    with torch.inference_mode():
        encoded = vae.encode(images.to(device=parameter.device, dtype=parameter.dtype)).latent_dist.mean
        decoded = vae.decode(encoded).sample.float().clamp(-1, 1).cpu()
    latents = ((encoded.float() - shift) * scale).cpu()
    factor = images.shape[-1] // latents.shape[-1]
    targets = torch.nn.functional.avg_pool2d(decoded, factor)
    channels = latents.shape[1]
    inputs = latents.permute(0, 2, 3, 1).reshape(-1, channels).numpy()
    outputs = targets.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    design = np.concatenate([inputs, np.ones((inputs.shape[0], 1), np.float32)], axis=1)
    weights, *_ = np.linalg.lstsq(design, outputs, rcond=None)
    error = float(np.abs(design @ weights - outputs).mean() * 127.5)
    return FittedMap(weights.astype(np.float32), error)
