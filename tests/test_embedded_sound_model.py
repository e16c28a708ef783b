"""The committed sound model through the studio's own audio path: with no model named, a sound job runs
``models/audio/sfumato-sounds`` at the settings its card recommends, and the file it writes sounds like the prompt
(pitch, timbre and number of events measured back from the decoded samples, as a listener would judge them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modules.audio.encode import decode
from modules.audio.request import AudioRequest
from tests.helpers import services_with_committed
from tools.sound import measures, world

COMMITTED = Path(__file__).resolve().parent.parent / "models" / "audio" / "sfumato-sounds"
pytestmark = pytest.mark.skipif(not (COMMITTED / "model_index.json").is_file(),
                                reason="the sound model is not committed")

# (prompt, pitch, timbre, count): plain prompts a user would type, in the caption grammar of the model's card.
PROMPTS = [
    ("two high beeps", "high", "pure", 2),
    ("a long low buzzing tone", "low", "buzzy", 1),
    ("three short medium beeps", "medium", "pure", 3),
    ("four bursts of noise", "", "noise", 4),
    ("one long high buzz", "high", "buzzy", 1),
    ("two short low tones", "low", "pure", 2),
]


@pytest.fixture
def sound_services(tmp_path, one_thread):
    with services_with_committed(tmp_path, COMMITTED) as services:
        yield services


def test_a_sound_job_with_no_model_named_sounds_like_its_prompt(sound_services):
    recommended = json.loads((COMMITTED / "training_config.json").read_text(encoding="utf-8"))["recommended"]
    right = {"pitch": 0, "timbre": 0, "count": 0}
    for prompt, pitch, timbre, count in PROMPTS:
        clip = sound_services.run(AudioRequest(prompt=prompt, duration=2.0, seed=5), timeout=120).clips[0]
        assert clip.parameters["model"] == "sfumato-sounds"
        assert (clip.parameters["steps"], clip.parameters["cfg_scale"]) == (recommended["steps"],
                                                                            recommended["guidance"])
        sound = decode(clip.path)
        assert sound.sample_rate == world.SAMPLE_RATE and sound.samples.shape == (1, 2 * world.SAMPLE_RATE)
        found = measures.measure(sound.samples[0])
        right["pitch"] += found.pitch == pitch
        right["timbre"] += found.timbre == timbre
        right["count"] += found.count == count
    # The card measures pitch 77 %, timbre 75 %, count 63 % on held-out prompts (short of issue 16's targets), so
    # the bar is four of six each: what this model does, far above chance (two of six; a broken model fails it).
    assert all(hits >= 4 for hits in right.values()), right
