"""The Audio tab in a real browser: a model folder dropped into models/audio appears after ↻, its defaults fill
the fields, and Generate ends with a clip the page's audio element can play, with its waveform picture."""

from __future__ import annotations

import re
import shutil

import pytest

from .conftest import missing
from .test_studio import choose, open_tab, set_number

pytestmark = pytest.mark.slow
if missing():
    pytest.skip(missing(), allow_module_level=True)
from playwright.sync_api import expect  # noqa: E402


def test_generate_a_short_clip_and_play_it(page, studio, tiny_audio_store):
    target = studio["root"] / "models" / "audio" / "tiny-stable-audio"
    if not target.exists():
        shutil.copytree(tiny_audio_store / "audio" / "tiny-stable-audio", target)
    tab = open_tab(page, "Audio")
    expect(tab.get_by_text("no text-to-audio model is installed")).to_be_visible()  # until the folder is read
    expect(page.locator("#audio-strength")).to_be_hidden()  # no model that can start from a sound yet
    tab.get_by_role("button", name="Refresh the audio model list (models/audio)").click()
    choose(tab, "Model", "tiny-stable-audio (Stable Audio)")
    expect(tab.get_by_role("spinbutton", name="number input for Steps", exact=True)).to_have_value("100")
    expect(page.locator("#audio-strength")).to_be_visible()  # Stable Audio can start from a sound
    tab.get_by_label("Prompt", exact=True).fill("two short beeps")
    set_number(tab, "Duration (seconds)", 0.5)
    set_number(tab, "Steps", 2)
    choose(tab, "Model", "tiny-stable-audio (Stable Audio)")  # the same model again keeps what was typed
    tab.get_by_role("button", name="Generate", exact=True).click()
    expect(tab.get_by_text(re.compile(r"1 clip in [\d.]+ s"))).to_be_visible()
    player = page.locator("#audio-result").get_by_test_id("waveform-Result").locator("audio")  # Gradio's player
    expect(player).to_have_attribute("src", re.compile(r".+"))
    playable = player.evaluate("""async (audio) => {
        if (audio.readyState < 1) await new Promise((done, fail) => {
            audio.addEventListener('loadedmetadata', done, {once: true});
            audio.addEventListener('error', () => fail(new Error('the clip cannot be loaded')), {once: true});
            audio.load();
        });
        return {duration: audio.duration, canPlay: audio.canPlayType('audio/wav')};
    }""")
    assert abs(playable["duration"] - 0.5) < 0.05 and playable["canPlay"] != ""
    expect(page.locator("#audio-picture img")).to_be_visible()
