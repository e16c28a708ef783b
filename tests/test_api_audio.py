"""The audio routes of every dialect against a running studio on the tiny audio models: native jobs of kind audio
with their files, OpenAI's ``/v1/audio/speech`` through the official ``openai`` client, and Stability's
text-to-audio in its own field names, each with its own error shape."""

from __future__ import annotations

import base64
import time

import httpx
import numpy as np
import pytest

from modules.audio.encode import decode, encode, read_parameters
from tests.api_studio import running_studio
from tools.tiny_audio import SAMPLE_RATE

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_audio_store):
    with running_studio(tmp_path_factory.mktemp("audio-api"), tiny_audio_store) as running:
        yield running


@pytest.fixture
def client(studio):
    return openai.OpenAI(base_url=f"{studio.url}/v1", api_key="sk-local", max_retries=0, timeout=120)


def _wait(studio, job_id: str) -> dict:
    for _ in range(600):
        view = httpx.get(f"{studio.url}/api/v1/jobs/{job_id}", timeout=30).json()
        if view["state"] in ("done", "failed", "cancelled"):
            return view
        time.sleep(0.1)
    raise AssertionError("the job did not end")


def test_native_audio_job_and_its_artifact_download(studio):
    body = {"kind": "audio", "model": "tiny-stable-audio", "prompt": "two low hums", "duration": 0.5, "steps": 2,
            "seed": 9, "waveforms": 2, "output_format": "flac"}
    answer = httpx.post(f"{studio.url}/api/v1/jobs", json=body, timeout=30)
    assert answer.status_code == 202, answer.text
    view = _wait(studio, answer.json()["id"])
    assert view["state"] == "done" and view["kind"] == "audio"
    artifacts = view["result"]["artifacts"]
    assert [item["type"] for item in artifacts] == ["audio", "audio"]
    assert [item["parameters"]["seed"] for item in artifacts] == [9, 10]
    download = httpx.get(artifacts[1]["url"], timeout=30)
    assert download.headers["content-type"] == "audio/flac"
    sound = decode(download.content)
    assert (sound.sample_rate, sound.samples.shape) == (SAMPLE_RATE, (2, SAMPLE_RATE // 2))
    assert read_parameters(download.content)["prompt"] == "two low hums"


def test_native_speech_with_an_init_clip_refused_and_a_bad_duration_named(studio):
    clip = base64.b64encode(encode([0.0] * 800, SAMPLE_RATE, "wav")).decode("ascii")
    refused = httpx.post(f"{studio.url}/api/v1/jobs", json={"kind": "audio", "model": "tiny-audioldm2",
                                                             "prompt": "x", "init_audio": clip}, timeout=30)
    assert refused.status_code == 422 and "init_audio" in refused.text
    refused = httpx.post(f"{studio.url}/api/v1/jobs", json={"kind": "audio", "prompt": "x", "duration": -2},
                         timeout=30)
    assert refused.status_code == 422 and "duration" in refused.text


@pytest.mark.parametrize(("fmt", "rate"), [("wav", SAMPLE_RATE), ("mp3", SAMPLE_RATE), ("flac", SAMPLE_RATE),
                                           ("opus", 48000), ("aac", SAMPLE_RATE)])
def test_openai_client_speech_create(client, studio, fmt, rate):
    response = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello from the studio.",
                                          response_format=fmt, speed=1.25)
    sound = decode(response.content)
    assert sound.sample_rate == rate and sound.duration > 0.01
    job = studio.services.queue.history(limit=1)[0][0]
    assert job.source == "openai" and job.request.model == "tiny-vits" and job.request.speed == 1.25
    if fmt != "aac":
        assert read_parameters(response.content)["text"] == "Hello from the studio."


def test_openai_speech_pcm_a_local_model_and_its_voices(client, studio):
    pcm = client.audio.speech.create(model="tiny-vits-two", voice="echo", input="one two", response_format="pcm")
    assert len(pcm.content) % 2 == 0 and len(pcm.content) > 0  # raw 16-bit samples, no header
    job = studio.services.queue.history(limit=1)[0][0]
    assert job.request.model == "tiny-vits-two" and job.request.voice == "speaker 0"  # echo: OpenAI's 5th voice
    named = client.audio.speech.create(model="tiny-vits-two", voice="speaker 1", input="one two",
                                       response_format="wav")
    assert read_parameters(named.content)["voice"] == "speaker 1"


def test_openai_speech_errors_name_the_parameter(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(model="tts-1", voice="alloy", input="   ")
    assert refused.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(model="tts-1", voice="a-voice-nobody-has", input="hi")
    assert refused.value.body["param"] == "voice"
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi", speed=9.0)
    assert refused.value.body["param"] == "speed"


def test_stability_text_to_audio_bytes_and_json(studio):
    url = f"{studio.url}/v2beta/audio/stable-audio-2/text-to-audio"
    form = {"prompt": "a rising whistle", "duration": "1", "seed": "5", "steps": "2", "cfg_scale": "3",
            "output_format": "wav", "model": "tiny-stable-audio"}
    answer = httpx.post(url, data=form, files={"none": ("", b"")}, headers={"accept": "audio/*"}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "audio/wav" and answer.headers["seed"] == "5"
    assert answer.headers["finish-reason"] == "SUCCESS"
    sound = decode(answer.content)
    assert sound.sample_rate == SAMPLE_RATE and sound.samples.shape[1] == SAMPLE_RATE
    as_json = httpx.post(url, data={**form, "output_format": "mp3"}, files={"none": ("", b"")},
                         headers={"accept": "application/json"}, timeout=120).json()
    assert as_json["seed"] == 5 and as_json["finish_reason"] == "SUCCESS"
    assert read_parameters(base64.b64decode(as_json["audio"]))["prompt"] == "a rising whistle"


def test_stability_errors_in_its_shape(studio):
    url = f"{studio.url}/v2beta/audio/stable-audio-2/text-to-audio"
    too_long = httpx.post(url, data={"prompt": "x", "duration": "30", "model": "tiny-stable-audio"},
                          files={"none": ("", b"")}, timeout=30)
    assert too_long.status_code == 400
    assert too_long.json()["name"] == "bad_request" and too_long.json()["errors"][0].startswith("duration:")
    no_prompt = httpx.post(url, data={"duration": "1"}, files={"none": ("", b"")}, timeout=30)
    assert no_prompt.status_code == 400 and no_prompt.json()["errors"][0].startswith("prompt:")


def _clip_file(seconds: float = 0.5) -> tuple[bytes, np.ndarray]:
    time_axis = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    clip = np.stack([0.4 * np.sin(2 * np.pi * 330 * time_axis)] * 2).astype(np.float32)
    return encode(clip, SAMPLE_RATE, "wav"), clip


def test_native_audio_to_audio_with_a_strength(studio):
    data, clip = _clip_file()
    body = {"kind": "audio", "model": "tiny-stable-audio", "prompt": "like this", "duration": 0.5, "steps": 2,
            "seed": 3, "init_audio": base64.b64encode(data).decode("ascii"), "strength": 0.0, "output_format": "wav"}
    answer = httpx.post(f"{studio.url}/api/v1/jobs", json=body, timeout=30)
    assert answer.status_code == 202, answer.text
    view = _wait(studio, answer.json()["id"])
    artifact = view["result"]["artifacts"][0]
    assert artifact["parameters"]["strength"] == 0.0 and artifact["parameters"]["init_audio"] is True
    sound = decode(httpx.get(artifact["url"], timeout=30).content)
    assert np.abs(sound.samples - clip).max() < 2 / 32767  # strength 0: the clip itself
    refused = httpx.post(f"{studio.url}/api/v1/jobs", json={**body, "strength": 1.5}, timeout=30)
    assert refused.status_code == 422 and "strength" in refused.text


def test_stability_audio_to_audio_in_its_field_names(studio):
    data, clip = _clip_file(1.0)
    url = f"{studio.url}/v2beta/audio/stable-audio-2/audio-to-audio"
    form = {"prompt": "like this", "duration": "1", "seed": "4", "steps": "2", "strength": "0", "output_format": "wav",
            "model": "tiny-stable-audio"}
    answer = httpx.post(url, data=form, files={"audio": ("clip.wav", data, "audio/wav")},
                        headers={"accept": "audio/*"}, timeout=120)
    assert answer.status_code == 200, answer.text
    sound = decode(answer.content)
    assert np.abs(sound.samples - clip).max() < 2 / 32767
    assert read_parameters(answer.content)["strength"] == 0.0
    remade = httpx.post(url, data={**form, "strength": "0.5"}, files={"audio": ("clip.wav", data, "audio/wav")},
                        headers={"accept": "audio/*"}, timeout=120)
    assert remade.status_code == 200 and read_parameters(remade.content)["strength"] == 0.5
    assert decode(remade.content).samples.shape == (2, SAMPLE_RATE)

    def refused(files, **changes) -> str:
        answer = httpx.post(url, data={**form, **changes}, files=files, timeout=30)
        assert answer.status_code == 400, answer.text
        return answer.json()["errors"][0]

    assert refused({"none": ("", b"")}).startswith("audio:")  # no clip
    assert refused({"audio": ("clip.wav", b"RIFF not audio", "audio/wav")}).startswith("audio:")  # corrupt
    assert refused({"audio": ("clip.wav", data, "audio/wav")}, strength="2").startswith("strength:")
    assert refused({"audio": ("clip.wav", data, "audio/wav")}, model="tiny-audioldm2").startswith("audio:")


@pytest.mark.parametrize(("changes", "field"), [
    ({"task": "speech", "text": "  ", "model": "tiny-vits"}, "text"),
    ({"task": "speech", "text": "hi", "model": "tiny-vits-two", "voice": "nova"}, "voice"),
    ({"task": "speech", "text": "hi", "model": "tiny-stable-audio"}, "model"),  # a model of the wrong kind
    ({"prompt": "x", "model": "tiny-vits"}, "model"),
    ({"prompt": "x", "output_format": "m4b"}, "output_format"),
    ({"prompt": "x", "duration": 0}, "duration"),
    ({"prompt": "x", "model": "tiny-stable-audio", "duration": 3}, "duration"),  # past the tiny model's 2 s
    ({"prompt": "x", "model": "tiny-stable-audio",
      "init_audio": base64.b64encode(b"RIFF\x00\x00 not a sound").decode("ascii")}, "init_audio"),  # corrupt
])
def test_native_bad_audio_fields_are_named_and_the_worker_goes_on(studio, changes, field):
    before = len(studio.services.queue.jobs())
    refused = httpx.post(f"{studio.url}/api/v1/jobs", json={"kind": "audio", **changes}, timeout=30)
    assert refused.status_code == 422, refused.text
    assert field in refused.text
    assert len(studio.services.queue.jobs()) == before  # nothing queued
    answer = httpx.post(f"{studio.url}/api/v1/jobs", json={"kind": "audio", "task": "speech", "model": "tiny-vits",
                                                           "text": "still here", "seed": 1}, timeout=30)
    assert _wait(studio, answer.json()["id"])["state"] == "done"


def test_openai_speech_refuses_a_sound_model_and_an_unknown_format(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(model="tiny-stable-audio", voice="alloy", input="hi")
    assert refused.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format="m4a")
    assert refused.value.body["param"] == "response_format"
    assert decode(client.audio.speech.create(model="tts-1", voice="alloy", input="hi",
                                             response_format="wav").content).duration > 0  # and it goes on


def test_stability_refuses_a_speech_model_and_an_unknown_format(studio):
    url = f"{studio.url}/v2beta/audio/stable-audio-2/text-to-audio"
    for changes, field in (({"model": "tiny-vits"}, "model"), ({"output_format": "ogg"}, "output_format")):
        answer = httpx.post(url, data={"prompt": "x", "duration": "1", **changes}, files={"none": ("", b"")},
                            timeout=30)
        assert answer.status_code == 400 and answer.json()["errors"][0].startswith(f"{field}:"), answer.text
