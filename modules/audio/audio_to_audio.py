"""Audio-to-audio for Stable Audio: start the sampler part-way down its noise schedule from an init clip's latents.

diffusers' ``StableAudioPipeline`` takes ``initial_audio_waveforms`` but only adds the clip's latents to noise at the
scheduler's full ``sigma_max`` (500 for Stable Audio Open), where the clip is lost; it has no strength. Here
``strength`` (0..1) is the point of the model's own diffusion time at which sampling starts, as in img2img: the
scheduler (``CosineDPMSolverMultistepScheduler``) gives the model ``t = atan(sigma) * 2 / pi``, so a strength ``s``
re-noises the clip to ``sigma = tan(s * pi / 2)`` (0.5 -> sigma 1, equal parts clip and noise; 1 -> ``sigma_max``,
the clip ignored) and runs ``round(steps * s)`` steps from there. The pipeline is run unchanged, on a copy that
shares its modules but holds a scheduler whose ``sigma_max`` is that starting noise, with ``latents`` = the clip's
latents plus noise of that level (the pipeline scales the latents it is given by ``init_noise_sigma``). This is how
stable-audio-tools does it too (its ``init_noise_level`` is the sampler's ``sigma_max``). Strength 0 re-noises
nothing, so there is nothing to denoise: the clip itself is the result (``keeps_clip``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from modules.errors import RequestError


def keeps_clip(strength: float) -> bool:
    """Strength 0: nothing of the clip is re-noised, so the clip is the result and the model does not run."""
    return strength <= 0


def noise_level(strength: float, sigma_max: float) -> float:
    """The noise (sigma) the clip is re-noised to: the cosine schedule's sigma at diffusion time ``strength``."""
    if strength >= 1:
        return sigma_max
    return min(math.tan(strength * math.pi / 2), sigma_max)


def steps_to_run(steps: int, strength: float) -> int:
    """The part of ``steps`` that lies below the starting noise (at least one)."""
    return max(1, round(steps * strength))


@dataclass(frozen=True)
class PartWayStart:
    """What to hand the pipeline to start from a clip: a copy of it with the shortened schedule, the starting
    latents and the number of steps."""

    pipeline: Any
    latents: Any
    steps: int
    sigma: float


def start_from_clip(pipe: Any, clip: np.ndarray, strength: float, steps: int, generator: Any) -> PartWayStart:
    """The clip's latents (``clip``: (channels, n) at the model's rate, placed at the start of the model's whole
    window like the pipeline's own ``initial_audio_waveforms``), re-noised to ``strength``."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    config = pipe.scheduler.config
    if config.get("sigma_max") is None or config.get("sigma_min") is None:
        raise RequestError("init_audio", f"this model's scheduler ({type(pipe.scheduler).__name__}) has no noise "
                                         "levels to start part-way from; remove the init audio")
    sigma = noise_level(strength, float(config["sigma_max"]))
    sigma_min = float(config["sigma_min"])
    count = steps_to_run(steps, strength)
    if sigma <= sigma_min or count == 1:
        # below the schedule's last noise level (or one step): one jump from the starting noise to none; the
        # scheduler builds a one-step schedule at its sigma_min, so sigma_min is the starting noise
        count, sigma_min = 1, sigma
    scheduler = type(pipe.scheduler).from_config(config, sigma_max=sigma, sigma_min=sigma_min)
    partway = type(pipe)(**{**pipe.components, "scheduler": scheduler})
    partway.set_progress_bar_config(disable=True)

    vae = pipe.vae
    window = int(pipe.transformer.config.sample_size) * int(vae.hop_length)
    audio = torch.zeros((1, clip.shape[0], window), dtype=vae.dtype)
    length = min(window, clip.shape[1])
    audio[0, :, :length] = torch.from_numpy(np.ascontiguousarray(clip[:, :length]))
    device = pipe.device
    # the noise first, drawn as the pipeline draws its own: strength 1 then makes what no init clip makes
    shape = (1, int(pipe.transformer.config.in_channels), int(pipe.transformer.config.sample_size))
    noise = randn_tensor(shape, generator=generator, device=device, dtype=vae.dtype)
    with torch.no_grad():
        latents = vae.encode(audio.to(device)).latent_dist.sample(generator)
    start = (latents + sigma * noise) / scheduler.init_noise_sigma
    return PartWayStart(pipeline=partway, latents=start, steps=count, sigma=sigma)
