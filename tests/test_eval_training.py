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
