"""The Audio tab's handlers on the tiny audio models: the model's defaults fill the fields, Generate makes a clip
that plays with its picture, and a missing model or a bad field is a notice naming it."""

from __future__ import annotations

import shutil

import pytest

from app.ui.audio_tab import audio_events, model_changed, task_changed
from modules.audio.encode import decode, read_parameters
from modules.audio.request import SPEECH, TEXT_TO_AUDIO, AudioRequest
from tests.helpers import running_services


@pytest.fixture
def audio_services(tmp_path, tiny_audio_store, one_thread):
    with running_services(tmp_path, tiny_audio_store) as services:
        yield services


def _values(**changes):
    values = {"task": TEXT_TO_AUDIO, "model": "tiny-stable-audio", "prompt": "a low hum", "negative_prompt": "",
              "text": "", "duration": 0.5, "waveforms": 2, "steps": 2, "cfg_scale": 3.0, "voice": None,
              "speed": 1.0, "seed": 4, "output_format": "wav", "init_audio": None,
              "strength": 0.6}
    return {**values, **changes}


def test_the_model_fills_the_fields_with_its_family_defaults(audio_services):
    update = model_changed(audio_services, {"task": TEXT_TO_AUDIO, "model": "tiny-stable-audio"})
    assert update["duration"]["maximum"] == 2.0 and update["steps"]["value"] == 100
    assert update["cfg_scale"]["value"] == 7.0 and update["init_audio"]["visible"] is True
    assert update["strength"]["visible"] is True and "value" not in update["init_audio"]  # an upload is kept
    assert update["filled_for"] == "tiny-stable-audio"
    # choosing the same model again keeps what was typed into its fields since
    assert model_changed(audio_services, {"task": TEXT_TO_AUDIO, "model": "tiny-stable-audio",
                                          "filled_for": "tiny-stable-audio"}) == {}
    update = model_changed(audio_services, {"task": TEXT_TO_AUDIO, "model": "tiny-audioldm2"})
    assert (update["steps"]["value"], update["cfg_scale"]["value"]) == (200, 3.5)
    # no audio-to-audio: the upload and its strength are hidden, and a sound uploaded before is dropped
    assert update["init_audio"]["visible"] is False and update["init_audio"]["value"] is None
    assert update["strength"]["visible"] is False
    speech = task_changed(audio_services, {"task": SPEECH, "model": "tiny-stable-audio"})
    assert speech["model"]["value"] == "tiny-vits" and speech["text"]["visible"] is True
    assert speech["prompt"]["visible"] is False
    assert speech["init_audio"]["visible"] is False and speech["strength"]["visible"] is False
    two = model_changed(audio_services, {"task": SPEECH, "model": "tiny-vits-two"})
    assert two["voice"]["choices"] == ["speaker 0", "speaker 1"] and two["voice"]["visible"] is True


def test_generate_plays_the_first_clip_with_its_picture(audio_services):
    updates = list(audio_events(audio_services, _values()))
    final = updates[-1]
    assert "audio" in final, final
    assert final["audio"] == final["files"][0] and len(final["files"]) == 2
    sound = decode(final["audio"])
    assert sound.samples.shape == (2, 8000)
    assert final["picture"].size == (640, 320)
    assert '"seed": 4' in final["parameters"] and read_parameters(final["audio"])["seed"] == 4
    speech = list(audio_events(audio_services, _values(task=SPEECH, model=None, text="hello", waveforms=1)))[-1]
    assert "audio" in speech, speech
    assert read_parameters(speech["audio"])["text"] == "hello"


def test_bad_fields_and_missing_models_are_notices(audio_services, tmp_path):
    refused = list(audio_events(audio_services, _values(duration=5.0)))  # over the tiny model's 2 s
    assert len(refused) == 1 and "duration" in refused[0]["status"]
    refused = list(audio_events(audio_services, _values(task=SPEECH, model=None, text="  ", waveforms=1)))
    assert "text" in refused[0]["status"]
    refused = list(audio_events(audio_services, _values(task=SPEECH, model="tiny-vits-two", text="hi", voice="nova",
                                                        waveforms=1)))  # typed into the voice box
    assert len(refused) == 1 and "voice" in refused[0]["status"]
    shutil.rmtree(audio_services.config.models_dir / "audio")
    update = task_changed(audio_services, {"task": TEXT_TO_AUDIO, "model": None})
    assert "models/audio/" in update["notice"] and update["model"]["choices"] == []
    refused = list(audio_events(audio_services, _values(model=None)))
    assert "models/audio/" in refused[0]["status"]


def test_the_tab_is_in_the_studio(audio_services):
    from app.ui import build_layout

    ui = build_layout(audio_services)
    labels = {getattr(block, "label", None) for block in ui.blocks.blocks.values()}
    assert {"Make", "Waveform and spectrogram", "Text to speak"} <= labels


def test_png_info_reads_an_audio_file_and_history_lists_the_job(audio_services):
    from app.ui.pnginfo import read_audio_info
    from app.ui.queue_tab import history_row, show_job

    job = audio_services.queue.submit(AudioRequest(task=SPEECH, model="tiny-vits", text="read me back", seed=8,
                                                   output_format="flac"))
    audio_services.queue.wait(job, 60)
    path = job.result.clips[0].path
    shown = read_audio_info({"audio": str(path)})
    assert shown["parameters"]["text"] == "read me back" and '"seed": 8' in shown["infotext"]
    row = history_row(audio_services, job)
    assert "speech" in row and row[6] == 1  # its label and one output
    info = show_job(audio_services, {"history_ids": [job.id]}, 0)["job_info"]
    assert str(path) in info and "read me back" in info
    assert show_job(audio_services, {"history_ids": [job.id]}, 0)["sound"] == str(path)  # it plays there


def test_start_from_a_sound_with_a_strength(audio_services, tmp_path):
    import numpy as np

    from modules.audio.encode import encode

    rate = 16000
    clip = np.stack([0.3 * np.sin(2 * np.pi * 300 * np.arange(rate // 2) / rate)] * 2).astype(np.float32)
    upload = tmp_path / "upload.wav"
    upload.write_bytes(encode(clip, rate, "wav"))
    kept = list(audio_events(audio_services, _values(init_audio=str(upload), strength=0.0, waveforms=1)))[-1]
    assert "audio" in kept, kept
    assert np.abs(decode(kept["audio"]).samples - clip).max() < 2 / 32767  # strength 0: the sound itself
    assert read_parameters(kept["audio"])["strength"] == 0.0
    remade = list(audio_events(audio_services, _values(init_audio=str(upload), strength=0.5, waveforms=1)))[-1]
    assert read_parameters(remade["audio"])["strength"] == 0.5
    assert decode(remade["audio"]).samples.shape == (2, rate // 2)
    refused = list(audio_events(audio_services, _values(init_audio=str(upload), strength=1.5)))
    assert len(refused) == 1 and "strength" in refused[0]["status"]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF this is no sound")
    refused = list(audio_events(audio_services, _values(init_audio=str(corrupt))))
    assert len(refused) == 1 and "init_audio" in refused[0]["status"]
