"""The Train tab's demonstration asks the embedded model only for what it knows: its known shapes at the positions
of its own world (1 row: left, centre, right), in captions of combinations it was trained on or held out from."""

from __future__ import annotations

import json

from bench import eval_training
from tools.shapes import dataset as world


def test_the_known_shapes_are_asked_in_the_base_models_own_world(tmp_path):
    assert eval_training.base_rows() == 1  # the committed sfumato-shapes
    rows = {spec.position.split()[0] for spec, _seed in world.evaluation_cases(256, rows=eval_training.base_rows())}
    assert rows == {"middle"}
    captions = eval_training.training_caption_prompts(120).splitlines()
    assert len(captions) == 120 and not any(word in caption for caption in captions for word in ("top", "bottom"))
    assert all(not world.is_heldout(spec, 1) for spec in eval_training.training_class_specs(120))

    other = tmp_path / "three-rows"
    other.mkdir()
    (other / "training_config.json").write_text(json.dumps({"rows": 3}), encoding="utf-8")
    assert eval_training.base_rows(other) == 3
    assert eval_training.base_rows(tmp_path / "no-config") == 3


def test_the_heart_prompts_never_repeat_and_avoid_the_trained_colour_pairs():
    cases = eval_training.eval_pairs(120)
    assert len(cases) == 120 and len(set(cases)) == 120
    pairs = {(colour, background) for colour, background, _seed in cases}
    assert len(pairs) == 51 and not pairs & set(eval_training.TRAIN_PAIRS)
    assert all(colour != background for colour, background in pairs)
    assert cases[:50] == eval_training.eval_pairs(50)  # 50 prompts: the first 50 of a longer run
    assert {seed for *_pair, seed in cases[:51]} == {1} and {seed for *_pair, seed in cases[51:102]} == {2}
