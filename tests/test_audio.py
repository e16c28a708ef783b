"""The audio kind end to end: tiny random-weight Stable Audio, AudioLDM2 and VITS models run through the queue, and
the files they write decode to the asked duration and sample rate with their parameters inside."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from modules.audio.encode import decode, encode, read_parameters
from modules.audio.request import SPEECH, AudioRequest
from modules.errors import RequestError
from modules.jobs.control import JobControl
from tests.helpers import running_services
from tools.tiny_audio import SAMPLE_RATE


@pytest.fixture
def audio_services(tmp_path, tiny_audio_store, one_thread):
    with running_services(tmp_path, tiny_audio_store) as services:
        yield services


def _sine(seconds: float = 0.5, rate: int = SAMPLE_RATE, hz: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


@pytest.mark.parametrize(("model", "fmt", "seconds", "channels"), [
    ("tiny-stable-audio", "wav", 1.0, 2),
    ("tiny-audioldm2", "flac", 0.5, 1),
])
def test_text_to_audio_files_have_the_asked_duration_rate_and_parameters(audio_services, model, fmt, seconds,
                                                                         channels):
    request = AudioRequest(model=model, prompt="three short high beeps", negative_prompt="noise", duration=seconds,
                           steps=3, cfg_scale=4.0, seed=7, waveforms=2, output_format=fmt)
    result = audio_services.run(request, timeout=120)
    assert len(result.clips) == 2 and not result.interrupted
    for index, clip in enumerate(result.clips):
        assert clip.path.suffix == f".{fmt}" and clip.path.is_relative_to(audio_services.config.outdir / "audio")
        sound = decode(clip.path)
        assert sound.sample_rate == SAMPLE_RATE
        assert sound.samples.shape == (channels, int(seconds * SAMPLE_RATE))
        embedded = read_parameters(clip.path)
        assert embedded == clip.parameters
        assert embedded["prompt"] == "three short high beeps" and embedded["negative_prompt"] == "noise"
        assert (embedded["model"], embedded["seed"], embedded["steps"]) == (model, 7 + index, 3)
        assert embedded["duration"] == seconds and embedded["cfg_scale"] == 4.0
    artifact = result.artifacts[0]
    assert artifact.type == "audio" and artifact.media_type.startswith("audio/")


def test_speech_in_each_format_with_a_voice(audio_services):
    for fmt in ("ogg", "mp3", "opus"):
        result = audio_services.run(AudioRequest(task=SPEECH, model="tiny-vits-two", text="hello there", seed=3,
                                                 voice="speaker 1", speed=1.5, output_format=fmt), timeout=60)
        clip = result.clips[0]
        sound = decode(clip.path)
        assert sound.samples.shape[1] > 0
        assert sound.sample_rate == (48000 if fmt == "opus" else SAMPLE_RATE)  # Opus always decodes at 48 kHz
        embedded = read_parameters(clip.path)
        assert (embedded["text"], embedded["voice"], embedded["speed"], embedded["format"]) == (
            "hello there", "speaker 1", 1.5, fmt)


def test_seed_reproduces_and_another_seed_differs(audio_services):
    def samples(model: str, seed: int, **fields) -> np.ndarray:
        request = AudioRequest(model=model, seed=seed, **fields)
        return decode(audio_services.run(request, timeout=60).clips[0].path).samples

    for model, fields in (("tiny-stable-audio", {"prompt": "a buzz", "duration": 0.5, "steps": 2}),
                          ("tiny-audioldm2", {"prompt": "a buzz", "duration": 0.25, "steps": 2}),
                          ("tiny-vits", {"task": SPEECH, "text": "one two three"})):
        first = samples(model, 11, **fields)
        assert np.array_equal(first, samples(model, 11, **fields)), model
        other = samples(model, 12, **fields)
        assert first.shape != other.shape or not np.array_equal(first, other), model


def test_defaults_come_from_the_family_and_the_embedded_model_is_preferred(audio_services, tmp_path):
    kind = audio_services.queue.kinds.get("audio")
    resolved = kind.resolve(AudioRequest(prompt="a whistle"))
    assert resolved.model == "tiny-audioldm2"  # the first text-to-audio folder by name
    assert (resolved.steps, resolved.cfg_scale, resolved.duration) == (200, 3.5, 10.0)
    assert resolved.seed >= 0
    speech = kind.resolve(AudioRequest(task=SPEECH, text="hi", model="tiny-vits-two"))
    assert speech.voice == "speaker 0"
    # the studio's own sound model, once its folder exists, is the default with no change in code
    shutil.copytree(audio_services.config.models_dir / "audio" / "tiny-stable-audio",
                    audio_services.config.models_dir / "audio" / "sfumato-sounds")
    resolved = kind.resolve(AudioRequest(prompt="a whistle"))
    assert (resolved.model, resolved.steps, resolved.cfg_scale) == ("sfumato-sounds", 100, 7.0)
    assert resolved.duration == 2.0  # the family's 10 s, cut to what this model can make
    # a model that says what it was made for (its training script's "recommended") gets that over the family's
    (audio_services.config.models_dir / "audio" / "sfumato-sounds" / "training_config.json").write_text(
        json.dumps({"recommended": {"steps": 20, "guidance": 4.0, "seconds": 2.048}}), encoding="utf-8")
    resolved = kind.resolve(AudioRequest(prompt="a whistle"))
    assert (resolved.model, resolved.steps, resolved.cfg_scale) == ("sfumato-sounds", 20, 4.0)
    assert kind.resolve(AudioRequest(prompt="a whistle", steps=7, cfg_scale=0.0)).cfg_scale == 0.0


def test_a_model_that_asks_for_float32_keeps_it_on_an_accelerator(tiny_audio_store, tmp_path):
    import torch

    from modules.audio.engine import AudioModels
    from modules.audio.registry import AudioModelRegistry

    folder = tmp_path / "audio" / "sfumato-sounds"
    shutil.copytree(tiny_audio_store / "audio" / "tiny-stable-audio", folder)
    registry, models = AudioModelRegistry(tmp_path), AudioModels("cuda", dtype=lambda: torch.float16)
    assert models.dtype(registry.find("sfumato-sounds", "text-to-audio")) == torch.float16
    (folder / "training_config.json").write_text(json.dumps({"recommended": {"precision": "float32"}}),
                                                 encoding="utf-8")
    assert models.dtype(registry.find("sfumato-sounds", "text-to-audio")) == torch.float32
    assert AudioModels("cpu", dtype=lambda: torch.float16).dtype() == torch.float32


def _wav(seconds: float = 0.5) -> bytes:
    return encode(_sine(seconds), SAMPLE_RATE, "wav")


@pytest.mark.parametrize(("fields", "field"), [
    ({"prompt": "x", "duration": 0}, "duration"),
    ({"prompt": "x", "duration": -1}, "duration"),
    ({"prompt": "x", "model": "tiny-stable-audio", "duration": 3.0}, "duration"),  # over the model's 2 s
    ({"prompt": "x", "duration": 1000}, "duration"),  # over the studio's limit
    ({"prompt": "x", "model": "tiny-audioldm2", "duration": 0.001}, "duration"),  # under one latent row
    ({"prompt": "  "}, "prompt"),
    ({"task": SPEECH, "text": " ", "model": "tiny-vits"}, "text"),
    ({"task": SPEECH, "text": "hi", "model": "tiny-vits-two", "voice": "nova"}, "voice"),
    ({"task": SPEECH, "text": "hi", "model": "tiny-vits", "output_format": "m4b"}, "output_format"),
    ({"task": SPEECH, "text": "hi", "model": "tiny-stable-audio"}, "model"),  # a model of the wrong kind
    ({"prompt": "x", "model": "tiny-vits"}, "model"),
    ({"prompt": "x", "model": "no-such-model"}, "model"),
    ({"prompt": "x", "model": "tiny-stable-audio", "init_audio": b"RIFF not really a wave file"}, "init_audio"),
    ({"prompt": "x", "model": "tiny-audioldm2", "init_audio": b"RIFF"}, "init_audio"),  # no audio-to-audio
    ({"prompt": "x", "steps": 0}, "steps"),
    ({"prompt": "x", "model": "tiny-stable-audio", "steps": 1}, "steps"),  # its sampler would return the noise
    ({"prompt": "x", "waveforms": 99}, "waveforms"),
    ({"task": "music", "prompt": "x"}, "task"),
])
def test_bad_input_is_refused_naming_the_field_and_the_queue_goes_on(audio_services, fields, field):
    before = len(audio_services.queue.jobs())
    with pytest.raises(RequestError) as refused:
        audio_services.queue.submit(AudioRequest(**fields))
    assert refused.value.field == field
    assert len(audio_services.queue.jobs()) == before  # nothing queued
    result = audio_services.run(AudioRequest(task=SPEECH, model="tiny-vits", text="still here", seed=1), timeout=60)
    assert len(result.clips) == 1


def test_stable_audio_starts_from_an_init_clip(audio_services):
    result = audio_services.run(AudioRequest(model="tiny-stable-audio", prompt="like this", duration=0.5, steps=2,
                                             seed=5, init_audio=_wav(0.25)), timeout=60)
    assert read_parameters(result.clips[0].path)["init_audio"] is True
    plain = audio_services.run(AudioRequest(model="tiny-stable-audio", prompt="like this", duration=0.5, steps=2,
                                            seed=5), timeout=60)
    assert not np.array_equal(decode(result.clips[0].path).samples, decode(plain.clips[0].path).samples)


def test_no_model_installed_says_where_to_put_one(tmp_path):
    from modules.audio.registry import AudioModelRegistry

    with pytest.raises(RequestError, match="models/audio/") as refused:
        AudioModelRegistry(tmp_path).find(None, "text-to-audio")
    assert refused.value.field == "model"
    with pytest.raises(RequestError, match="VITS"):
        AudioModelRegistry(tmp_path).find(None, SPEECH)


def test_interrupt_stops_between_steps(audio_services):
    kind = audio_services.queue.kinds.get("audio")
    control = JobControl()
    seen = []

    def on_progress(progress):
        seen.append(progress.step)
        if progress.step >= 2:
            control.interrupt()

    control.on_progress = on_progress
    request = kind.resolve(AudioRequest(model="tiny-audioldm2", prompt="a long hum", duration=0.25, steps=20,
                                        waveforms=2))
    result = kind.run(request, control)
    assert result.interrupted and result.clips == []
    assert max(seen) < 20


def test_a_finished_job_reads_back_from_the_store(audio_services):
    job = audio_services.queue.submit(AudioRequest(task=SPEECH, model="tiny-vits", text="keep me", seed=2))
    audio_services.queue.wait(job, 60)
    kind = audio_services.queue.kinds.get("audio")
    folder = audio_services.queue.store.job_dir(job.id)
    data = kind.encode_result(job.result, folder)
    again, problems = kind.decode_result(data, folder)
    assert problems == [] and again.clips[0].path == job.result.clips[0].path
    assert again.clips[0].parameters["text"] == "keep me"
    request = kind.decode_request(kind.encode_request(job.request, folder), folder, True)
    assert (request.text, request.seed, request.model) == ("keep me", 2, "tiny-vits")


def test_speech_speed_changes_the_length_and_voices_differ(audio_services):
    def clip(**fields) -> np.ndarray:
        request = AudioRequest(task=SPEECH, model="tiny-vits-two", text="the same words", seed=5, **fields)
        return decode(audio_services.run(request, timeout=60).clips[0].path).samples

    slow, fast = clip(speed=0.5), clip(speed=2.0)
    assert slow.shape[1] > 2 * fast.shape[1]  # durations scale with 1 / speed
    first, second = clip(voice="speaker 0"), clip(voice="speaker 1")
    assert first.shape != second.shape or not np.array_equal(first, second)


def test_a_folder_that_is_not_what_its_config_says_fails_its_job_naming_the_model(audio_services):
    import json

    audio = audio_services.config.models_dir / "audio"
    shutil.copytree(audio / "tiny-audioldm2", audio / "mislabelled")
    index = json.loads((audio / "mislabelled" / "model_index.json").read_text())
    (audio / "mislabelled" / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableAudioPipeline"}))
    job = audio_services.queue.submit(AudioRequest(model="mislabelled", prompt="x", duration=0.5, steps=2))
    with pytest.raises(RequestError) as failed:
        audio_services.queue.wait(job, 60)
    assert job.state == "failed" and failed.value.field == job.error_field == "model"
    assert "models/audio/mislabelled cannot be loaded as a Stable Audio model" in job.error
    result = audio_services.run(AudioRequest(model="tiny-stable-audio", prompt="x", duration=0.5, steps=2), timeout=60)
    assert len(result.clips) == 1  # the worker goes on, and loads the next model
