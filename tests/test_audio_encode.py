"""Audio files without a model: each format decodes back to the sound it was given with the parameters inside,
and the waveform/spectrogram picture shows where the sound's energy is."""

from __future__ import annotations

import numpy as np
import pytest

from modules.audio.encode import FORMATS, decode, encode, read_parameters
from modules.audio.pictures import WAVE_COLOUR, spectrogram, waveform_picture
from modules.errors import RequestError

RATE = 16000


def _tone(hz: float, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_decodes_to_the_sound_with_its_parameters(fmt):
    stereo = np.stack([_tone(440), _tone(880)])
    parameters = {"prompt": "a tone = ; # \\ é", "seed": 3, "steps": 2}
    data = encode(stereo, RATE, fmt, parameters)
    sound = decode(data)
    assert sound.samples.shape[0] == 2
    assert abs(sound.duration - 1.0) < 0.1  # lossy codecs pad a few milliseconds
    if fmt in ("wav", "flac"):
        assert sound.sample_rate == RATE and np.abs(sound.samples - stereo).max() < 1e-3
    if fmt == "aac":
        assert read_parameters(data) is None  # a raw ADTS stream has nowhere to keep tags
    else:
        assert read_parameters(data) == parameters


def test_a_file_without_parameters_and_a_file_that_is_not_audio():
    assert read_parameters(encode(_tone(440), RATE, "wav")) is None
    with pytest.raises(RequestError) as refused:
        decode(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert refused.value.field == "init_audio"


def test_the_spectrogram_shows_a_tone_at_its_pitch():
    low, high = spectrogram(_tone(500)), spectrogram(_tone(4000))
    bins = low.shape[0]  # row 0 is the top (the highest frequency): the brightest row of a higher tone is higher
    low_row, high_row = np.argmax(low.mean(axis=1)), np.argmax(high.mean(axis=1))
    assert high_row < low_row
    assert abs((bins - 1 - low_row) / (bins - 1) * RATE / 2 - 500) < 50
    picture = waveform_picture(np.stack([_tone(500), _tone(500)]), RATE, width=320, height=160)
    assert picture.size == (320, 160)
    top = picture.crop((0, 0, 320, 53))
    assert WAVE_COLOUR in set(top.getdata())  # the waveform is drawn
    rows = np.asarray(picture.crop((0, 53, 320, 160)).convert("L")).mean(axis=1)
    assert rows.max() - rows.min() > 50  # the tone's row stands out of the spectrogram
