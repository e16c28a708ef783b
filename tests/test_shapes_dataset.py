"""The shapes world behind the embedded model: its generator, its pixel metrics and its training script."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from tools.shapes import dataset as world
from tools.shapes import metrics as metrics

COLOUR = "|".join(world.COLOURS)
CAPTION = re.compile(
    rf"^an? (?:(?P<size>small|large) )?(?P<colour>{COLOUR}) (?P<shape>{'|'.join(world.SHAPES)})"
    r"(?: (?P<where>on the (?:left|right)|in the cent(?:re|er)|at the (?:top|bottom)(?: (?:left|right))?))?"
    rf"(?:,? on an? (?P<background>{COLOUR}) background)?$"
)
BACKGROUND_FIRST = re.compile(
    rf"^on an? (?P<background>{COLOUR}) background, an? (?:(?P<size>small|large) )?(?P<colour>{COLOUR}) "
    rf"(?P<shape>{'|'.join(world.SHAPES)})"
    r"(?: (?P<where>on the (?:left|right)|in the cent(?:re|er)|at the (?:top|bottom)(?: (?:left|right))?))?$"
)


def test_generator_is_deterministic():
    first_images, first_captions, _ = world.training_batch(seed=3, start=100, count=16)
    again_images, again_captions, _ = world.training_batch(seed=3, start=100, count=16)
    assert np.array_equal(first_images, again_images) and first_captions == again_captions
    single, caption, _ = world.training_example(3, 107)
    assert np.array_equal(single, first_images[7]) and caption == first_captions[7]  # an index stands alone
    other_images, _, _ = world.training_batch(seed=4, start=100, count=16)
    assert not np.array_equal(first_images, other_images)
    assert first_images.shape == (16, 64, 64, 3) and first_images.dtype == np.uint8


def test_captions_follow_the_grammar_and_cover_the_vocabulary():
    _, captions, specs = world.training_batch(seed=0, start=0, count=1500)
    seen: dict[str, set[str]] = {"size": set(), "colour": set(), "shape": set(), "where": set(), "background": set()}
    for caption, spec in zip(captions, specs, strict=True):
        match = CAPTION.match(caption) or BACKGROUND_FIRST.match(caption)
        assert match, caption
        assert match["colour"] == spec.colour and match["shape"] == spec.shape
        assert match["size"] in (None, spec.size) and match["background"] in (None, spec.background)
        for name in seen:
            if match[name]:
                seen[name].add(match[name])
    assert seen["size"] == set(world.SIZES) and seen["shape"] == set(world.SHAPES)
    assert seen["colour"] == set(world.COLOURS) == seen["background"]
    assert len(seen["where"]) == len(world.POSITIONS) + 1  # both spellings of centre
    full = sum(world.parse_caption(c) == dataclasses.asdict(s) for c, s in zip(captions, specs, strict=True))
    assert 0.25 < full / len(captions) < 0.5  # the most common form, no longer the rule
    assert any(c == f"{world.article(s.colour)} {s.colour} {s.shape}" for c, s in zip(captions, specs, strict=True))


def test_full_caption_example():
    spec = world.ShapeSpec("star", "yellow", "purple", "small", "middle right")
    assert spec.caption() == "a small yellow star on the right, on a purple background"
    assert world.ShapeSpec("circle", "orange", "red", "large", "top left").caption() == (
        "a large orange circle at the top left, on a red background")
    assert world.ShapeSpec("square", "red", "orange", "small", "middle centre").caption(size=False) == (
        "a red square in the centre, on an orange background")


@pytest.mark.parametrize("rows", [1, 3])
def test_heldout_combinations_never_appear_in_training(rows):
    heldout = set(world.heldout_specs(rows))
    assert len(heldout) >= 200
    assert heldout.isdisjoint(world.training_specs(rows))
    assert len(heldout) + len(world.training_specs(rows)) == len(world.all_specs(rows))
    _, _, specs = world.training_batch(seed=11, start=0, count=2000, rows=rows)
    assert not heldout.intersection(specs)
    assert {spec.position for spec in specs} == set(world.positions(rows))
    cases = world.evaluation_cases(256, rows=rows)
    assert len({spec for spec, _ in cases}) >= 200 and all(spec in heldout for spec, _ in cases)
    assert cases == world.evaluation_cases(256, rows=rows)
    assert not heldout.intersection(spec for spec, _ in world.validation_cases(256, rows=rows))


def test_metrics_read_every_dataset_image_correctly():
    images, _, specs = world.training_batch(seed=5, start=0, count=400)
    counts = metrics.tally(images, specs)
    nominal = [world.render(spec) for spec in world.heldout_specs()]
    counts_heldout = metrics.tally(nominal, world.heldout_specs())
    for result in (counts, counts_heldout):
        assert result.accuracy() == dict.fromkeys((*metrics.ATTRIBUTES, "all"), 1.0), metrics.markdown_table(
            {"dataset": result})


def test_metrics_work_at_other_sizes_and_from_pil():
    from PIL import Image

    rng = np.random.default_rng(0)
    for spec in world.heldout_specs()[:12]:
        image = Image.fromarray(world.render(spec, rng, image_size=128))
        assert metrics.score(image, spec)["all"], spec


def test_metrics_notice_what_is_wrong():
    asked = world.ShapeSpec("square", "blue", "white", "large", "top left")
    shown = world.ShapeSpec("circle", "red", "white", "small", "bottom right")
    result = metrics.score(world.render(shown), asked)
    assert result == {"background": True, "foreground": False, "shape": False, "size": False, "position": False,
                      "all": False}
    blank = np.full((64, 64, 3), world.PALETTE["green"], dtype=np.uint8)
    reading = metrics.measure(blank)
    assert reading.background == "green" and not reading.found
    assert not metrics.score(blank, asked)["foreground"]


def test_shapes_are_told_apart_by_the_metric():
    for shape in world.SHAPES:
        spec = world.ShapeSpec(shape, "black", "white", "small", "middle centre")
        scores = metrics.measure(world.render(spec)).shape_scores
        assert max(scores, key=scores.get) == shape
        runner_up = sorted(scores.values())[-2]
        assert scores[shape] > 0.8 and scores[shape] - runner_up > 0.2, scores


@pytest.mark.slow
def test_training_smoke_run_saves_a_loadable_model_and_resumes_exactly(tmp_path):
    import json
    import shutil

    import torch
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline
    from safetensors.torch import load_file

    from tools.shapes import train as train_shapes

    config = train_shapes.make_config("tiny")
    whole = train_shapes.train(tmp_path / "whole", config, threads=1, checkpoint_every=2, eval_prompts=0,
                               keep_state=True, progress=False)
    assert (whole / ".train-state" / "denoiser.pt").is_file()  # saved at step 2 of 3
    card = (whole / "README.md").read_text(encoding="utf-8")
    assert "Caption grammar" in card and "python -m tools.shapes.train" in card
    assert train_shapes.FORMS_START in card and train_shapes.FORMS_END in card  # where --forms --card writes
    recorded = json.loads((whole / "training_config.json").read_text(encoding="utf-8"))
    assert recorded["rows"] == config.rows and recorded["recommended"]["sampler"] == config.samplers[0]

    pipe = StableDiffusionPipeline.from_pretrained(str(whole), torch_dtype=torch.float32, local_files_only=True)
    assert pipe.unet.dtype == torch.float32 and pipe.vae.config.scaling_factor != 0.18215
    image = pipe("a small red circle on the left, on a blue background", num_inference_steps=2, guidance_scale=5.0,
                 generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
    inpaint = StableDiffusionInpaintPipeline.from_pretrained(str(whole), local_files_only=True)
    assert inpaint.unet.config.in_channels == 4

    weights = whole / "unet" / "diffusion_pytorch_model.safetensors"
    assert all(t.dtype == torch.float16 for t in load_file(str(weights)).values())

    # An interrupted run: the checkpoint of step 2, then --resume, must give the uninterrupted run's weights.
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(whole / ".train-state", resumed_dir / ".train-state")
    resumed = train_shapes.train(resumed_dir, config, resume=True, threads=1, eval_prompts=0, progress=False)
    assert not (resumed / ".train-state").exists()
    for part in ("unet/diffusion_pytorch_model", "text_encoder/model", "vae/diffusion_pytorch_model"):
        expected = load_file(str(whole / f"{part}.safetensors"))
        actual = load_file(str(resumed / f"{part}.safetensors"))
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[k], actual[k]) for k in expected), part


def test_example_weights_draw_the_named_kind_that_much_more_often():
    from tools.shapes import train as train_shapes

    config = train_shapes.make_config(overrides=['example_weights=[["small", "star", 3]]'])
    specs = world.training_specs(1)
    assert train_shapes.example_odds(specs, train_shapes.TrainConfig().example_weights) is None  # an even draw
    odds = train_shapes.example_odds(specs, config.example_weights)
    small_stars = [i for i, spec in enumerate(specs) if (spec.size, spec.shape) == ("small", "star")]
    others = [i for i, spec in enumerate(specs) if (spec.size, spec.shape) != ("small", "star")]
    assert small_stars and others
    assert abs(float(odds.sum()) - 1.0) < 1e-9
    assert float(odds[small_stars[0]]) == pytest.approx(3 * float(odds[others[0]]))


def test_shape_readings_say_what_each_asked_kind_was_read_as():
    images, _, specs = world.training_batch(seed=5, start=0, count=160)
    blank = np.full_like(images[0], 255)
    readings = metrics.shape_readings([*images, blank], [*specs, specs[0]])
    asked = (specs[0].size, specs[0].shape)
    for kind, counts in readings.items():
        drawn = sum((spec.size, spec.shape) == kind for spec in specs)
        assert counts[kind[1]] == drawn  # every dataset image is read as what it shows
    assert readings[asked]["none"] == 1  # the blank picture: no object found
    table = metrics.readings_table(readings)
    assert f"| {asked[0]} {asked[1]} |" in table and "read as star" in table


def _caption_kinds(config, specs, steps: int = 120) -> dict[str, float]:
    """Stage 2's captions over ``steps`` batches: the share of small stars among captions that leave the size
    open, and among captions that name it."""
    import torch

    from tools.shapes import train as train_shapes

    odds = train_shapes.example_odds(specs, config.example_weights)
    shares = (train_shapes.extra_draw_shares(specs, config.example_weights)
              if config.extra_draws_name_size else None)
    counts = {"open": [0, 0], "sized": [0, 0]}
    for step in range(steps):
        generator = torch.Generator().manual_seed(step)
        index = (torch.randint(len(specs), (64,), generator=generator) if odds is None else
                 torch.multinomial(odds, 64, replacement=True, generator=generator)).tolist()
        captions, _ = train_shapes.batch_captions(config, specs, index, step, np.random.default_rng([0, 2, step]),
                                                  shares)
        for j, caption in zip(index, captions, strict=True):
            if caption:
                kind = "sized" if {"small", "large"} & set(caption.split()) else "open"
                counts[kind][0] += (specs[j].size, specs[j].shape) == ("small", "star")
                counts[kind][1] += 1
    return {kind: hit / total for kind, (hit, total) in counts.items()}


def test_added_draws_name_the_size_so_an_open_size_keeps_the_even_odds():
    from tools.shapes import train as train_shapes

    specs = world.training_specs(1)
    even = _caption_kinds(train_shapes.make_config(), specs)
    weighted = _caption_kinds(train_shapes.make_config(overrides=['example_weights=[["small", "star", 3]]']), specs)
    unnamed = _caption_kinds(train_shapes.make_config(
        overrides=['example_weights=[["small", "star", 3]]', "extra_draws_name_size=false"]), specs)
    # "a red star on a blue background" must not learn that stars are mostly small ...
    assert abs(weighted["open"] - even["open"]) < 0.03
    assert unnamed["open"] > even["open"] + 0.10  # (what session 12's runs taught it)
    # ... while "a small red star" is seen far more often than under an even draw.
    assert weighted["sized"] > 2 * even["sized"]


def test_a_caption_without_a_background_trains_on_the_plain_backdrop():
    from tools.shapes import train as train_shapes

    specs = world.training_specs(1)
    config = train_shapes.make_config()
    seen = {"named": 0, "unnamed": 0, "empty": 0}
    empty_on_plain = 0
    for step in range(40):
        index = np.random.default_rng(step).integers(len(specs), size=64).tolist()
        captions, plain = train_shapes.batch_captions(config, specs, index, step, np.random.default_rng(step), None)
        for caption, on_plain in zip(captions, plain, strict=True):
            kind = "empty" if not caption else "named" if "background" in caption else "unnamed"
            seen[kind] += 1
            if kind == "empty":
                empty_on_plain += on_plain
            else:
                assert on_plain == (kind == "unnamed"), caption
    assert min(seen.values()) > 100  # every kind of caption was drawn
    # The unconditional prediction learns grey and the eight colours alike.
    assert 0.35 < empty_on_plain / seen["empty"] < 0.65
    old = train_shapes.make_config(overrides=["plain_unnamed_background=false"])
    _, plain = train_shapes.batch_captions(old, specs, list(range(64)), 0, np.random.default_rng(0), None)
    assert not any(plain)


def test_the_plain_picture_is_the_same_shape_on_grey():
    image, caption, spec = world.training_example(0, 11)
    plain, plain_caption, plain_spec = world.training_example(0, 11, plain=True)
    assert (caption, spec) == (plain_caption, plain_spec)
    on_shape = np.all(image == world.PALETTE[spec.colour], axis=-1)
    assert on_shape.sum() > 50
    assert np.array_equal(image[on_shape], plain[on_shape])
    corner = plain[0, 0].tolist()
    assert corner == list(world.PLAIN_BACKGROUND) and corner != list(world.PALETTE[spec.background])
    reading = metrics.measure(plain)
    assert (reading.foreground, reading.shape, reading.size, reading.position) == (
        spec.colour, spec.shape, spec.size, spec.position)


def test_added_small_star_draws_leave_the_position_out_more_often():
    import torch

    from tools.shapes import train as train_shapes

    specs = world.training_specs(1)

    def share_without_position(config) -> float:
        shares = train_shapes.extra_draw_shares(specs, config.example_weights)
        odds = train_shapes.example_odds(specs, config.example_weights)
        hits = total = 0
        for step in range(150):
            generator = torch.Generator().manual_seed(step)
            index = torch.multinomial(odds, 64, replacement=True, generator=generator).tolist()
            captions, _ = train_shapes.batch_captions(config, specs, index, step, np.random.default_rng(step), shares)
            for j, caption in zip(index, captions, strict=True):
                if caption and (specs[j].size, specs[j].shape) == ("small", "star") and "small" in caption:
                    total += 1
                    hits += not any(word in caption for word in ("left", "right", "centre", "center"))
        return hits / total

    weights = 'example_weights=[["small", "star", 2]]'
    more = share_without_position(train_shapes.make_config(overrides=[weights]))
    usual = share_without_position(train_shapes.make_config(overrides=[weights, "extra_draws_drop_position=0"]))
    assert more > usual + 0.1, (usual, more)  # about 0.41 against 0.27


def test_the_autoencoder_uses_bfloat16_only_where_the_cpu_computes_it(monkeypatch):
    """Emulated bf16 ran the autoencoder stage about 15x slower on an AVX2 CPU: the default asks the hardware, and
    the recipe the card records says what ran; an explicit setting wins."""
    from modules.runtime import devices
    from tools.shapes import train as train_shapes

    monkeypatch.setattr(devices, "cpu_flags", lambda *_: frozenset({"avx2", "fma"}))
    assert train_shapes.with_hardware_choices(train_shapes.TrainConfig(), "cpu").vae_bf16 is False
    monkeypatch.setattr(devices, "cpu_flags", lambda *_: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert train_shapes.with_hardware_choices(train_shapes.TrainConfig(), "cpu").vae_bf16 is True
    explicit = train_shapes.TrainConfig(vae_bf16=False)
    assert train_shapes.with_hardware_choices(explicit, "cpu").vae_bf16 is False


def test_finish_evaluates_a_saved_model_whose_evaluation_was_cut_off(tmp_path):
    """The weights are saved before the (long) evaluation; the folder records recipe, timing and command, so
    ``--finish`` chooses the defaults and writes the card later without training again."""
    import json

    import torch

    from tools.shapes import train as train_shapes

    config = train_shapes.make_config("tiny", overrides=["choice_prompts_per_form=1", "guidances=[2.0, 4.0]",
                                                         "samplers=[\"Euler\"]", "sample_steps=2"])
    threads = torch.get_num_threads()
    try:
        out = train_shapes.train(tmp_path / "model", config, threads=1, checkpoint_every=0, eval_prompts=0,
                                 progress=False, command="python -m tools.shapes.train --preset tiny")
        recorded = json.loads((out / "training_config.json").read_text(encoding="utf-8"))
        assert recorded["timing"]["threads"] == 1 and recorded["command"].endswith("--preset tiny")
        assert "Not measured" in (out / "README.md").read_text(encoding="utf-8")
        assert train_shapes.main(["--out", str(out), "--finish", "--eval-prompts", "8", "--form-prompts", "1",
                                  "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "generated (Euler, 2 steps" in card and "Not measured" not in card.split("## Measured accuracy")[1][:400]
    assert "python -m tools.shapes.train --preset tiny" in card
    assert json.loads((out / "training_config.json").read_text(encoding="utf-8"))["recommended"]["guidance"] in (2, 4)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="training_config.json is missing"):
        train_shapes.main(["--out", str(empty), "--finish"])


def test_a_finished_folder_reads_back_the_recipe_that_trained_it(tmp_path):
    """``--finish`` evaluates with the recipe from training_config.json: it must equal what ``--set`` built,
    nested lists (example_weights) and the attention flags included, or the card would describe another run."""
    import json

    from tools.shapes import train as train_shapes

    config = train_shapes.make_config(overrides=['example_weights=[["small", "star", 2]]', "vae_bf16=false",
                                                 "unet_attention=[0, 1, 1]"])
    record = {**config.to_json(), "timing": {"minutes": 1.0}, "command": "python -m tools.shapes.train"}
    (tmp_path / "training_config.json").write_text(json.dumps(record), encoding="utf-8")
    again, timing, command = train_shapes.read_saved_recipe(tmp_path)
    assert again == config and again.example_weights == (("small", "star", 2),)
    assert again.unet_attention == (False, True, True) and timing == {"minutes": 1.0}
