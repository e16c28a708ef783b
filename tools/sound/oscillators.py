"""The embedded sound model's autoencoder: an oscillator bank written into the layers of ``AutoencoderOobleck``.

A learnt Oobleck decoder of this size makes each latent frame from a fixed set of 512-sample templates, so its
pitch sits on a few values and a sweep comes out steady (measured: contour 47 % through the autoencoder alone).
Here the latent is instead the controls of a small synthesiser, one frame per 256 samples (32 ms):

- ``frequency``: the pitch in Hz (the nearest event's, in silence between events);
- ``pure``, ``buzzy``, ``noise``: the amplitude of a sine, of a sawtooth-like tone (three harmonics at 1, 1/2,
  1/3) and of noise.

The decoder computes that synthesiser exactly, with Oobleck's own layers (so the Stable Audio pipeline and every
studio that loads its folders run it unchanged):

- its transposed convolution turns the frequency into a phase ramp ``theta = omega (t - centre)`` inside each frame
  (a ramp-shaped kernel over the frame's own 256 samples), and each amplitude into a triangle-interpolated
  envelope ``d`` (a triangle kernel over two frames);
- the snake activation ``x + sin^2 x`` of the last layer makes the oscillator: for the channel pair ``U = m theta +
  pi/4 + d`` and ``V = m theta + pi/4 - d``, ``snake(U) - snake(V) = 2d + cos(2 m theta) sin(2d)``, a harmonic
  ``m`` whose amplitude follows the envelope; one more channel carries ``2d`` and cancels it;
- noise is a fixed white-noise kernel scaled by its amplitude; the residual units are identities.

The phase restarts at each frame's centre (a cosine, so a steady tone is continuous across frames). The encoder is
an ordinary Oobleck encoder fitted to read the controls back from a waveform (init clips for audio-to-audio).
The latents are standardised: ``latent = (control - mean) / spread``, both folded into the decoder's first layer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tools.sound import world

CHANNELS = ("frequency", "pure", "buzzy", "noise")
HOP = 256  # samples per latent frame
FRAMES = world.CLIP_SAMPLES // HOP
HARMONICS = 3  # the buzzy tone's harmonics: the third of the highest pitch (about 1.06 kHz) stays below 4 kHz
NOISE_SPREAD = 0.4  # the noise kernel's standard deviation (the world's noise is N(0, 1) / 2.5)
ENCODER_WIDTH = 2 * len(CHANNELS)  # Oobleck's encoder emits the mean and the scale of each latent channel
DECODER_WIDTH = 2 * HARMONICS + 2  # U/V per harmonic, the cancelling channel, noise
LATENT_WIDTH = 8  # channels per latent frame inside the decoder (x decoder width)
IDENTITY_BETA = 40.0  # log beta of a snake that passes its input through (1/beta ~ 4e-18)


def controls(spec: world.SoundSpec) -> np.ndarray:
    """The synthesiser's controls of a sound, (4, FRAMES), read at each frame's centre (as ``world.render``
    draws it: amplitude = loudness x the 10 ms attack / 30 ms release envelope; the sweep's frequency)."""
    rate = world.SAMPLE_RATE
    centres = (np.arange(FRAMES) * HOP + HOP / 2)  # samples
    out = np.zeros((len(CHANNELS), FRAMES))
    nearest = np.full(FRAMES, np.inf)
    position = np.zeros(FRAMES)
    for start, duration in spec.events:
        first = int(round(start * rate))
        n = min(int(round(duration * rate)), world.CLIP_SAMPLES - first)
        i = centres - first
        inside = (i >= 0) & (i < n)
        envelope = np.clip(np.minimum(np.minimum(1.0, i / (0.01 * rate)), (n - i) / (0.03 * rate)), 0.0, None)
        out[1 + world.TIMBRES.index(spec.timbre)] += np.where(inside, spec.loudness * envelope, 0.0)
        distance = np.where(inside, 0.0, np.minimum(np.abs(i), np.abs(i - n)))
        closer = distance < nearest
        nearest = np.where(closer, distance, nearest)
        position = np.where(closer, np.clip(i / max(1, n - 1), 0.0, 1.0), position)
    if spec.timbre == "noise":
        out[0] = 400.0
    else:
        low, high = world.SWEEP
        ratio = {"steady": np.ones(FRAMES), "rising": low * (high / low) ** position,
                 "falling": high * (low / high) ** position}[spec.contour]
        out[0] = spec.hz * ratio
    return out


def control_statistics(seed: int, count: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and spread of the controls over training sounds (the latents' standardisation)."""
    rng = np.random.default_rng([seed, 3])
    stacked = np.stack([controls(world.draw_spec(rng)) for _ in range(count)])
    return stacked.mean(axis=(0, 2)), stacked.std(axis=(0, 2))


def _weight_norm_parts(module: Any) -> tuple[Any, Any]:
    """A weight-normed layer's (magnitude, direction) parameters, in the old or the parametrization API."""
    if hasattr(module, "parametrizations"):
        return module.parametrizations.weight.original0, module.parametrizations.weight.original1
    return module.weight_g, module.weight_v


def _set_weight_normed(module: Any, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
    """Give a weight-normed layer this effective weight (a zero slice keeps a direction and gets magnitude 0)."""
    import torch

    weight = torch.as_tensor(weight, dtype=torch.float32)
    magnitude, direction = _weight_norm_parts(module)
    norms = weight.flatten(1).norm(dim=1).reshape(-1, *([1] * (weight.dim() - 1)))
    with torch.no_grad():
        direction.copy_(torch.where(norms > 0, weight, torch.ones_like(weight)))
        magnitude.copy_(norms)
        if bias is not None:
            module.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


def build_vae(mean: np.ndarray, spread: np.ndarray, seed: int = 0):
    """An ``AutoencoderOobleck`` whose decoder is the synthesiser (see the module's docstring) and whose encoder
    is freshly initialised from ``seed`` (its scale head set to a spread of 1e-4, so sampling keeps the mean)."""
    import torch
    from diffusers import AutoencoderOobleck

    torch.manual_seed(seed)
    vae = AutoencoderOobleck(encoder_hidden_size=ENCODER_WIDTH, downsampling_ratios=[HOP],
                             channel_multiples=[LATENT_WIDTH], decoder_channels=DECODER_WIDTH,
                             decoder_input_channels=len(CHANNELS), audio_channels=1,
                             sampling_rate=world.SAMPLE_RATE)
    decoder = vae.decoder
    inner = DECODER_WIDTH * LATENT_WIDTH
    # First layer: latents back to controls (frequency as omega = pi f / rate radians per sample of the ramp).
    first, first_bias = np.zeros((inner, len(CHANNELS), 7)), np.zeros(inner)
    first[0, 0, 3], first_bias[0] = math.pi * spread[0] / world.SAMPLE_RATE, math.pi * mean[0] / world.SAMPLE_RATE
    for channel in range(1, len(CHANNELS)):
        first[channel, channel, 3], first_bias[channel] = spread[channel], mean[channel]
    _set_weight_normed(decoder.conv1, first, first_bias)
    block = decoder.block[0]
    # Kernel positions j of a frame's transposed convolution land on samples HOP k + j - HOP / 2.
    j = np.arange(2 * HOP)
    ramp = np.where((j >= HOP // 2) & (j < HOP + HOP // 2), j - HOP + 0.5, 0.0)  # the frame's own samples
    triangle = 1.0 - np.abs(j - (HOP - 0.5)) / HOP  # 1 at the frame's centre, 0 at its neighbours' centres
    noise = np.random.default_rng([seed, 11]).standard_normal(2 * HOP) * NOISE_SPREAD
    upsample, upsample_bias = np.zeros((inner, DECODER_WIDTH, 2 * HOP)), np.zeros(DECODER_WIDTH)
    cancel, noise_out = DECODER_WIDTH - 2, DECODER_WIDTH - 1
    pure, buzzy, noisy = 1, 2, 3
    for m in range(1, HARMONICS + 1):
        u, v = 2 * (m - 1), 2 * (m - 1) + 1
        upsample[0, u] = upsample[0, v] = m * ramp
        upsample_bias[u] = upsample_bias[v] = math.pi / 4
        sources = {buzzy: 1.0 / m, **({pure: 1.0} if m == 1 else {})}
        for source, share in sources.items():  # d = amplitude / 2: the pair's output is sin(amplitude) ~ amplitude
            upsample[source, u] += 0.5 * share * triangle
            upsample[source, v] -= 0.5 * share * triangle
            upsample[source, cancel] += share * triangle
    upsample[noisy, noise_out] = triangle * noise
    _set_weight_normed(block.conv_t1, upsample, upsample_bias)
    with torch.no_grad():
        block.snake1.alpha.zero_()
        block.snake1.beta.fill_(IDENTITY_BETA)
        for unit in (block.res_unit1, block.res_unit2, block.res_unit3):
            _weight_norm_parts(unit.conv2)[0].zero_()
            unit.conv2.bias.zero_()
        decoder.snake1.alpha.zero_()
        decoder.snake1.beta.zero_()
        decoder.snake1.beta[0, cancel:] = IDENTITY_BETA
    last = np.zeros((1, DECODER_WIDTH, 7))
    last[0, 0:2 * HARMONICS:2, 3], last[0, 1:2 * HARMONICS:2, 3] = 1.0, -1.0
    last[0, cancel, 3], last[0, noise_out, 3] = -1.0, 1.0
    _set_weight_normed(decoder.conv2, last)
    encoder_out = vae.encoder.conv2
    with torch.no_grad():
        half = len(CHANNELS)
        bias = encoder_out.bias.detach().clone()
        bias[half:] = -10.0
        _weight_norm_parts(encoder_out)[0][half:] = 0.0
        encoder_out.bias.copy_(bias)
    vae.decoder.requires_grad_(False)
    return vae
