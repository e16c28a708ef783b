"""Seeds and initial noise.

A seed must give the same image on every machine, so by default the noise is drawn on the CPU with one
``torch.Generator`` per image (image *i* of a batch uses seed + i) and only then moved to the device. The
variation seed blends a second noise into the first by spherical interpolation, as A1111 does, so a small
strength gives a close variation of the same picture.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MAX_SEED = 4294967294


def resolve_seed(seed: int, rng: random.Random | None = None) -> int:
    """-1 means "pick one": a random seed in A1111's range; any other value is used as given."""
    if seed is None or int(seed) == -1:
        return (rng or random.SystemRandom()).randint(0, MAX_SEED)
    return int(seed)


def batch_seeds(first_seed: int, count: int) -> list[int]:
    """Seeds of consecutive images: seed, seed+1, ... wrapping inside the 32-bit range."""
    return [(first_seed + i) % (MAX_SEED + 1) for i in range(count)]


def generators(seeds: Sequence[int], device: str, on_device: bool = False) -> list[torch.Generator]:
    """One generator per image, on the CPU unless device noise was asked for."""
    import torch

    where = device if on_device else "cpu"
    return [torch.Generator(where).manual_seed(int(seed)) for seed in seeds]


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noise tensors; keeps the result's statistics those of noise."""
    import torch

    low_norm = low / torch.linalg.vector_norm(low, dim=1, keepdim=True)
    high_norm = high / torch.linalg.vector_norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean().abs() > 0.9995:
        return low * (1.0 - t) + high * t
    omega = torch.acos(dot.clamp(-1.0, 1.0))
    sin_omega = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / sin_omega).unsqueeze(1) * low + (
        torch.sin(t * omega) / sin_omega
    ).unsqueeze(1) * high


def initial_latents(
    seeds: Sequence[int],
    shape: tuple[int, int, int],
    device: str,
    dtype: torch.dtype,
    subseeds: Sequence[int] | None = None,
    subseed_strength: float = 0.0,
    on_device: bool = False,
) -> torch.Tensor:
    """Unscaled N(0, 1) latents for a batch: ``shape`` is (channels, height/8, width/8) of one image."""
    import torch

    where = device if on_device else "cpu"
    images = []
    for index, seed in enumerate(seeds):
        noise = torch.randn(shape, generator=torch.Generator(where).manual_seed(int(seed)), device=where)
        if subseeds is not None and subseed_strength > 0:
            other = torch.randn(shape, generator=torch.Generator(where).manual_seed(int(subseeds[index])), device=where)
            flat = slerp(subseed_strength, noise.reshape(1, -1), other.reshape(1, -1))
            noise = flat.reshape(shape)
        images.append(noise)
    return torch.stack(images).to(device=device, dtype=dtype)
