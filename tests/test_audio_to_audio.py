"""Audio-to-audio on the tiny random-weight Stable Audio model through the queue: strength 0 gives back the init clip,
strength 1 makes what no clip makes, and the strengths between move from one to the other; families that cannot
start from a sound refuse the clip naming the field.

A random VAE does not give back what it encodes, so "how much of the clip is kept" is measured against the clip as
this model renders it (its VAE's decoding of the clip's latents), less what the decoder makes of silent latents
(with random weights that offset is most of every waveform and would make all outputs look alike).
"""

from __future__ import annotations

import numpy as np
import pytest

from modules.audio.encode import decode, encode, read_parameters
from modules.audio.request import SPEECH, AudioRequest
from modules.errors import RequestError
from tests.helpers import running_services
from tools.tiny_audio import SAMPLE_RATE

SECONDS = 1.0
SAMPLES = int(SECONDS * SAMPLE_RATE)


@pytest.fixture
def audio_services(tmp_path, tiny_audio_store, one_thread):
    with running_services(tmp_path, tiny_audio_store) as services:
        yield services


def _init_clip() -> np.ndarray:
    """A stereo clip: 440 Hz left, 220 Hz right, one second."""
    time = np.arange(SAMPLES) / SAMPLE_RATE
    return np.stack([0.5 * np.sin(2 * np.pi * 440 * time), 0.5 * np.sin(2 * np.pi * 220 * time)]).astype(np.float32)


def _rendered_by_the_model(folder, clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The clip through the model's own VAE (encode, decode), and the decoding of all-zero latents."""
    import torch
    from diffusers import AutoencoderOobleck

    vae = AutoencoderOobleck.from_pretrained(folder / "vae", local_files_only=True).eval()
    window = 2 * SAMPLE_RATE  # the tiny model's whole latent window, as the engine encodes it
    audio = torch.zeros(1, 2, window)
    audio[0, :, :SAMPLES] = torch.from_numpy(clip)
    with torch.no_grad():
        latents = vae.encode(audio).latent_dist.mode()
        rendered = vae.decode(latents).sample[0, :, :SAMPLES].numpy()
        silent = vae.decode(torch.zeros_like(latents)).sample[0, :, :SAMPLES].numpy()
    return rendered, silent


def _correlation(first: np.ndarray, second: np.ndarray) -> float:
    first, second = first.ravel() - first.mean(), second.ravel() - second.mean()
    return float(first @ second / np.sqrt((first @ first) * (second @ second)))


def test_strength_moves_from_the_init_clip_to_the_prompt(audio_services):
    clip = _init_clip()
    wav = encode(clip, SAMPLE_RATE, "wav")

    def make(strength: float | None) -> np.ndarray:
        fields = {} if strength is None else {"init_audio": wav, "strength": strength}
        request = AudioRequest(model="tiny-stable-audio", prompt="a low hum", duration=SECONDS, steps=10,
                               cfg_scale=4.0, seed=5, **fields)
        made = audio_services.run(request, timeout=120).clips[0]
        sound = decode(made.path)
        assert (sound.sample_rate, sound.samples.shape) == (SAMPLE_RATE, (2, SAMPLES))
        embedded = read_parameters(made.path)
        assert embedded["init_audio"] is (strength is not None) and embedded.get("strength") == strength
        return sound.samples

    assert np.abs(make(0.0) - clip).max() < 2 / 32767  # the clip itself, to 16-bit rounding
    plain = make(None)
    assert np.abs(make(1.0) - plain).max() < 1e-3  # the clip ignored: what the same seed makes without it

    rendered, silent = _rendered_by_the_model(audio_services.config.models_dir / "audio" / "tiny-stable-audio", clip)
    strengths = (0.1, 0.3, 0.5, 0.7)
    made = {strength: make(strength) for strength in strengths}
    likeness = [_correlation(made[strength] - silent, rendered - silent) for strength in strengths]
    unrelated = _correlation(plain - silent, rendered - silent)
    distance = [float(np.linalg.norm(made[strength] - plain)) for strength in strengths]
    print("likeness to the clip", [round(value, 3) for value in likeness], "unrelated", round(unrelated, 3))
    print("distance from the clip-less sound", [round(value, 2) for value in distance])
    assert likeness[0] > 0.95  # a little noise: the clip as the model renders it
    assert all(a > b for a, b in zip(likeness, likeness[1:], strict=False))  # less of the clip as strength grows
    assert likeness[-1] > unrelated  # ... and still more than a sound made without it
    assert all(a > b for a, b in zip(distance, distance[1:], strict=False))  # closer to the prompt alone


def test_strength_runs_the_part_of_the_steps_below_its_noise(audio_services):
    from modules.jobs.control import JobControl

    kind = audio_services.queue.kinds.get("audio")
    seen: list[tuple[int, int]] = []
    control = JobControl()
    control.on_progress = lambda progress: seen.append((progress.step, progress.steps))
    request = kind.resolve(AudioRequest(model="tiny-stable-audio", prompt="x", duration=0.5, steps=10, seed=1,
                                        init_audio=encode(_init_clip(), SAMPLE_RATE, "wav"), strength=0.3))
    result = kind.run(request, control)
    assert len(result.clips) == 1
    assert {total for step, total in seen if step > 0} == {3}  # round(10 * 0.3) steps, not 10


@pytest.mark.parametrize(("fields", "field"), [
    ({"prompt": "x", "model": "tiny-audioldm2"}, "init_audio"),  # AudioLDM2 has no audio-to-audio
    ({"task": SPEECH, "text": "hi", "model": "tiny-vits"}, "init_audio"),  # speech starts from text only
    ({"prompt": "x", "model": "tiny-stable-audio", "strength": 1.5}, "strength"),
    ({"prompt": "x", "model": "tiny-stable-audio", "strength": -0.1}, "strength"),
    ({"prompt": "x", "model": "tiny-stable-audio", "strength": float("nan")}, "strength"),
])
def test_init_clips_the_model_cannot_use_are_refused_naming_the_field(audio_services, fields, field):
    before = len(audio_services.queue.jobs())
    with pytest.raises(RequestError) as refused:
        audio_services.queue.submit(AudioRequest(init_audio=encode(_init_clip(), SAMPLE_RATE, "wav"), **fields))
    assert refused.value.field == field
    assert len(audio_services.queue.jobs()) == before
