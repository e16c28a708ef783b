"""The embedded sound model's decoder is a synthesiser written into Oobleck's layers: decoding a sound's controls
makes a waveform whose pitch, timbre, number of events and sweep measure as the sound's own (what a listener
hears), and the folder diffusers saves gives back the same decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tools.sound import measures, oscillators, world


@pytest.fixture(scope="module")
def vae():
    mean, spread = oscillators.control_statistics(0, count=256)
    return oscillators.build_vae(mean, spread).eval(), mean, spread


def decoded(vae, spec: world.SoundSpec) -> np.ndarray:
    model, mean, spread = vae
    latents = (oscillators.controls(spec) - mean[:, None]) / spread[:, None]
    with torch.no_grad():
        return model.decode(torch.tensor(latents, dtype=torch.float32)[None]).sample[0, 0].numpy()


@pytest.mark.parametrize(("pitch", "timbre", "count", "contour"), [
    ("low", "pure", 1, "steady"), ("medium", "buzzy", 2, "rising"), ("high", "pure", 3, "falling"),
    ("low", "buzzy", 4, "falling"), ("high", "buzzy", 1, "rising"), ("", "noise", 3, ""),
])
def test_decoding_a_sounds_controls_sounds_like_it(vae, pitch, timbre, count, contour):
    rng = np.random.default_rng(count)
    for _ in range(3):
        spec = world.draw_spec(rng, held_out=True)
        spec = world.SoundSpec(pitch, timbre, count, contour, spec.length, world.PITCH_HZ.get(pitch, 0.0),
                               spec.events if spec.count == count else tuple(
                                   (0.1 + i * 0.45, 0.2) for i in range(count)), spec.loudness)
        found = measures.measure(decoded(vae, spec))
        assert (found.pitch, found.timbre, found.count, found.contour) == (pitch, timbre, count, contour), found


def test_a_sweep_moves_continuously_not_in_steps(vae):
    """A long rising whistle sweeps 0.64 octave; the decoded one sweeps as far, and at every stretch of it the
    pitch is where the sweep has got to (a decoder keeping to a few frequencies reads as steady or jumps)."""
    spec = world.SoundSpec("medium", "pure", 1, "rising", "long", 350.0, ((0.1, 1.5),), 0.5)
    samples = decoded(vae, spec)
    found = measures.measure(samples)
    assert found.contour == "rising" and abs(found.octaves - np.log2(world.SWEEP[1] / world.SWEEP[0])) < 0.1
    framed = measures.frames(samples)
    low, high = world.SWEEP
    for first in range(20, 140, 20):  # 0.2 s stretches (frames of 10 ms) from 0.2 to 1.4 s
        heard = np.median([measures.frame_pitch(framed[i]) for i in range(first, first + 20)])
        middle = (first + 10) * measures.HOP / world.SAMPLE_RATE
        expected = 350.0 * low * (high / low) ** ((middle - 0.1) / 1.5)
        assert abs(heard / expected - 1) < 0.03, (middle, heard, expected)


def test_the_saved_folder_decodes_the_same(vae, tmp_path):
    from diffusers import AutoencoderOobleck

    model, mean, spread = vae
    model.save_pretrained(str(tmp_path / "vae"))
    again = AutoencoderOobleck.from_pretrained(str(tmp_path / "vae"), local_files_only=True).eval()
    latents = torch.tensor((oscillators.controls(world.example_spec(0, 3)) - mean[:, None]) / spread[:, None],
                           dtype=torch.float32)[None]
    with torch.no_grad():
        assert torch.allclose(model.decode(latents).sample, again.decode(latents).sample, atol=1e-5)
