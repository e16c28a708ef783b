"""The sound model's world: the synthesiser makes what the caption says (measured by the evaluator's own
measures), captions use only the tokenizer's words, and the held-out combinations never reach training."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tools.sound import measures, world

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


@pytest.mark.parametrize("held_out", [False, True])
def test_the_synthesised_sound_is_what_its_caption_says(held_out):
    for index in range(40):
        spec, audio = world.example(7, index, held_out)
        found = measures.measure(audio)
        assert len(audio) == world.CLIP_SAMPLES
        assert found.count == spec.count, world.caption(spec)
        assert found.timbre == spec.timbre, world.caption(spec)
        if spec.timbre != "noise":
            assert (found.pitch, found.contour) == (spec.pitch, spec.contour), world.caption(spec)


def test_the_measures_tell_a_changed_property():
    """Each measure follows its property: the same sound with one property changed reads differently."""
    spec, _ = world.example(3, 0)
    while spec.timbre == "noise":
        spec = world.draw_spec(np.random.default_rng(len(spec.events)))
    for change in ({"pitch": "low", "hz": 150.0}, {"pitch": "high", "hz": 800.0}, {"contour": "rising"},
                   {"contour": "falling"}, {"timbre": "noise", "pitch": "", "contour": ""}, {"timbre": "pure"},
                   {"timbre": "buzzy"}):
        changed = world.SoundSpec(**{**spec.__dict__, **change})
        found = measures.measure(world.render(changed))
        for name, value in change.items():
            if name != "hz":
                assert getattr(found, name) == value, change
    fewer = world.SoundSpec(**{**spec.__dict__, "count": 1, "events": spec.events[:1]})
    assert measures.measure(world.render(fewer)).count == 1
    assert measures.measure(np.zeros(world.CLIP_SAMPLES, dtype=np.float32)).count == 0


def test_training_never_draws_a_held_out_combination():
    rng = np.random.default_rng(0)
    drawn = {world.draw_spec(rng).combination for _ in range(3000)}
    assert drawn == set(world.combinations(held_out=False))
    held = set(world.combinations(held_out=True))
    assert not drawn & held and len(held) >= 15
    # Compositional: every single value of a held-out combination is trained, only the combination is new.
    for pitch, timbre, count, contour in held:
        assert any(c[0] == pitch and c[1] == timbre for c in drawn) or timbre == "noise"
        assert any(c[2] == count for c in drawn) and any(c[3] == contour for c in drawn)
    assert all(world.example(0, i)[0].combination in drawn for i in range(50))


def test_the_evaluator_draws_only_held_out_prompts_in_the_grammar():
    import eval_sound

    prompts = eval_sound.held_out_prompts(240, 1234)
    assert len(prompts) >= 200
    vocabulary = set(world.vocabulary())
    for spec, caption, _ in prompts:
        assert world.is_held_out(spec.combination)
        assert set(caption.split()) <= vocabulary
        assert caption.split()[0] in world.COUNT_WORDS[spec.count]
    timbres = {spec.timbre for spec, _, _ in prompts}
    assert timbres == set(world.TIMBRES)
    assert eval_sound.evaluate_ground_truth(prompts[:60]).accuracy("all") == 1.0


def test_the_tokenizer_reads_every_caption_word_as_one_token():
    from tools.sound.train import build_tokenizer, make_config

    tokenizer = build_tokenizer(make_config())
    for word in world.vocabulary():
        ids = tokenizer(word).input_ids
        assert len(ids) == 2 and ids[-1] == tokenizer.eos_token_id, word
    assert tokenizer.unk_token_id not in tokenizer("a zebra barks 3 times!").input_ids
