"""The embedded ControlNet's trainer: control maps drawn where the shape is, examples that keep the held-out split,
a tiny run that reproduces its weights, resumes exactly and saves a folder diffusers loads and runs.

The tiny preset trains a few steps on the committed base model, on one thread; the committed ControlNet, when
present, is loaded and run the way the evaluator runs it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from tools.shapes import dataset as world
from tools.shapes_controlnet import control as ctl
from tools.shapes_controlnet import data
from tools.shapes_controlnet.train import EVAL_END, EVAL_START, main, make_config, read_base, train

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models/Stable-diffusion/sfumato-shapes"
COMMITTED = ROOT / "models/ControlNet/sfumato-shapes-scribble"
sys.path.insert(0, str(ROOT / "bench"))


@pytest.fixture(autouse=True)
def restore_torch_settings():
    """Training pins threads and deterministic kernels process-wide; put them back for the other tests."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """The tiny preset trained end to end by the command line, into a temporary folder."""
    out = tmp_path_factory.mktemp("controlnet") / "tiny-scribble"
    threads = torch.get_num_threads()
    try:
        assert main(["--base", str(BASE), "--out", str(out), "--preset", "tiny", "--threads", "1", "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def weights(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def boundary(mask: np.ndarray) -> np.ndarray:
    """The pixels on the edge of a binary mask (inside, next to outside)."""
    return mask & ~ndimage.binary_erosion(mask)


@pytest.mark.parametrize("shape", world.SHAPES)
def test_control_maps_draw_the_outline_where_the_shape_is(shape):
    spec = world.ShapeSpec(shape, "red", "green", "large", "middle right")
    box = ctl.draw_box(spec, np.random.default_rng(3))
    image = ctl.render_in_box(spec, box)
    assert np.array_equal(image, world.render(spec, np.random.default_rng(3))), "not the dataset's own image"
    mask = world.draw_mask(shape, box) > 0.5
    edge = boundary(mask)
    for name, control in (("scribble", ctl.scribble(shape, box)), ("canny", ctl.canny_edges(image)),
                          ("hand-drawn", ctl.scribble(shape, box, ctl.Stroke(2.5, 1.0), np.random.default_rng(1)))):
        lines = control > 127
        assert control.dtype == np.uint8 and control.shape == (64, 64)
        assert lines.sum() > 0.5 * edge.sum(), f"{name}: too little drawn"
        reach = 4 if name == "hand-drawn" else 3  # half the stroke (and the wobble), past thin star tips (px)
        assert (lines & ~ndimage.binary_dilation(edge, iterations=reach)).sum() == 0, f"{name}: strokes off the edge"
        if name != "hand-drawn":  # a clean outline or edge map goes all the way round
            covered = edge & ndimage.binary_dilation(lines, iterations=1)
            assert covered.sum() >= 0.95 * edge.sum(), f"{name}: the outline has holes"
        rows, cols = np.nonzero(lines)
        drawn = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        assert np.allclose(drawn, box, atol=2.5), f"{name}: drawn in {drawn}, the shape is in {box}"
    silhouette = ctl.silhouette(shape, box) > 127
    assert np.array_equal(silhouette, mask)
    assert ctl.to_rgb(ctl.scribble(shape, box)).shape == (64, 64, 3)


def test_examples_keep_the_held_out_split_and_the_colours():
    recipe = data.ExampleRecipe()
    rows = 1
    kinds, free, conflicts = set(), 0, 0
    for index in range(300):
        example = data.training_example(0, index, rows, recipe)
        assert not world.is_heldout(example.spec, rows), f"example {index} is a held-out combination"
        if example.free:  # what the evaluator would read from the image must not be held out either
            assert not world.is_heldout(data.measured_spec(example.spec, example.image, rows), rows)
            free += 1
        kinds.add(example.kind)
        rng = np.random.default_rng(index)
        for _ in range(4):
            caption = data.training_caption(example.spec, rng, rows, recipe).text
            named = world.parse_caption(caption)
            assert named is not None, caption
            assert named.get("position", "middle").startswith("middle"), "a 1-row world has no top or bottom"
            assert named["colour"] == example.spec.colour, "the caption's colours are always the image's"
            assert named.get("background", example.spec.background) == example.spec.background
            spec = dataclasses.replace(example.spec, **named)
            order = tuple(a for a in world.ATTRIBUTE_NAMES if a in named)
            assert not world.is_heldout_for(spec, order, rows), f"{caption!r} names a held-out combination"
            conflicts += any(named.get(a, getattr(example.spec, a)) != getattr(example.spec, a)
                             for a in ("shape", "size", "position"))
    assert kinds == set(ctl.CONTROL_KINDS) and 20 < free < 80 and conflicts > 200
    assert np.array_equal(data.training_example(0, 7, rows, recipe).control,
                          data.training_example(0, 7, rows, recipe).control)


def test_evaluation_cases_are_held_out_and_scored_from_the_pixels():
    from eval_controlnet import make_cases, score

    agree = make_cases(24, 1234, 1, conflict=False)
    conflict = make_cases(24, 1234, 1, conflict=True)
    for a, b in zip(agree, conflict, strict=True):
        assert world.is_heldout(a.control_spec, 1) and a.prompt_spec == a.control_spec
        assert b.control_spec == a.control_spec and b.box == a.box
        assert b.prompt_spec != b.control_spec
        assert (b.prompt_spec.colour, b.prompt_spec.background) == (b.control_spec.colour, b.control_spec.background)
    assert sum(world.is_heldout(b.prompt_spec, 1) for b in conflict) >= 20
    from eval_controlnet import EXTRA_KINDS, control_image

    for kind in ("scribble", *EXTRA_KINDS):  # every control image the evaluator tries marks the shape's box
        pixels = np.asarray(control_image(conflict[0], kind)).max(axis=-1)
        rows_, cols = np.nonzero(pixels > 8)
        assert pixels.shape == (64, 64) and len(rows_), kind
        drawn = (cols.min(), rows_.min(), cols.max() + 1, rows_.max() + 1)
        assert np.allclose(drawn, conflict[0].box, atol=3.0), (kind, drawn, conflict[0].box)
    # The dataset's own images of the control combinations score full marks: a miss is the model's.
    tally, iou = score([c.truth for c in conflict], conflict)
    assert tally.accuracy()["all"] == 1.0 and iou > 0.9


def test_tiny_preset_saves_a_folder_diffusers_loads_and_runs(tiny_folder):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    controlnet = ControlNetModel.from_pretrained(str(tiny_folder), torch_dtype=torch.float32, local_files_only=True)
    assert controlnet.config.conditioning_channels == 3
    assert tuple(controlnet.config.conditioning_embedding_out_channels) == (8, 8, 16)
    record = json.loads((tiny_folder / "training_config.json").read_text(encoding="utf-8"))
    assert record["base"]["unet_sha256"] == read_base(BASE).unet_sha256 and record["steps"] == 3
    card = (tiny_folder / "README.md").read_text(encoding="utf-8")
    assert EVAL_START in card and EVAL_END in card and "tools.shapes_controlnet.train" in card
    assert not (tiny_folder / ".train-state").exists()
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        str(BASE), controlnet=controlnet, torch_dtype=torch.float32, local_files_only=True, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    scribble = Image.fromarray(ctl.to_rgb(ctl.scribble("circle", (8.0, 20.0, 28.0, 40.0))))
    image = pipe("a red circle", image=scribble, num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_the_seed_decides_the_weights_and_resume_continues_exactly(tmp_path, tiny_folder):
    from diffusers import ControlNetModel

    base = read_base(BASE)
    config = make_config("tiny", seed=0)
    first = weights(train(base, config, tmp_path / "a", threads=1, checkpoint_every=2, progress=False).controlnet)
    saved = ControlNetModel.from_pretrained(str(tiny_folder), torch_dtype=torch.float32, local_files_only=True)
    # The command line's run (saved as float16) and this one agree to float16's precision.
    assert all(torch.equal(t.half().float(), saved.state_dict()[name]) for name, t in first.items())
    # The checkpoint at step 2 was kept: resuming from it ends where the uninterrupted run ended.
    resumed = train(base, config, tmp_path / "a", resume=True, threads=1, checkpoint_every=2, progress=False)
    assert same(first, weights(resumed.controlnet))
    other = weights(train(base, make_config("tiny", seed=1), tmp_path / "b", threads=1, checkpoint_every=0,
                          progress=False).controlnet)
    assert not same(first, other)
    untrained = weights(train(base, make_config("tiny", seed=0, steps=0), tmp_path / "c", threads=1,
                              checkpoint_every=0, progress=False).controlnet)
    assert not same(first, untrained), "the steps changed nothing"


@pytest.mark.skipif(not COMMITTED.is_dir(), reason="no committed ControlNet")
def test_the_committed_controlnet_puts_the_shape_where_the_scribble_is():
    from eval_controlnet import generate, load_pipeline, make_cases, recorded_defaults, score

    defaults = recorded_defaults(BASE)
    pipe = load_pipeline(COMMITTED, BASE, defaults["sampler"])
    cases = make_cases(8, 1234, defaults["rows"], conflict=True)
    images = generate(pipe, cases, "scribble", steps=defaults["steps"], guidance=defaults["guidance"])
    tally, _ = score(images, cases)
    accuracy = tally.accuracy()
    assert accuracy["position"] >= 7 / 8 and accuracy["foreground"] >= 7 / 8, accuracy


def test_a_time_capped_run_is_reproduced_by_the_steps_it_reached(tmp_path):
    from tools.training_cli import reproduce_command

    base = read_base(BASE)
    capped = train(base, make_config("tiny", seed=0), tmp_path / "a", threads=1, checkpoint_every=0,
                   progress=False, max_minutes=0.0)
    assert capped.steps == 1
    exact = train(base, make_config("tiny", seed=0, steps=1), tmp_path / "b", threads=1, checkpoint_every=0,
                  progress=False)
    assert same(weights(capped.controlnet), weights(exact.controlnet))
    command = "python -m tools.shapes_controlnet.train --out x --max-minutes 29 --steps 3000 --seed 0"
    assert reproduce_command(command, 1234) == "python -m tools.shapes_controlnet.train --out x --seed 0 --steps 1234"


def test_a_card_command_with_a_json_setting_pastes_into_a_shell_as_it_ran():
    """A --set value with brackets, quotes and spaces stays one shell word, in the card's command and in the
    command a time-capped run is reproduced by."""
    import shlex

    from tools.training_cli import card_command, reproduce_command

    setting = 'example_weights=[["small", "star", 2]]'
    command = card_command("tools.shapes.train", ["--out", "x", "--set", setting, "--max-minutes", "9", "--resume"])
    assert shlex.split(command) == ["python", "-m", "tools.shapes.train", "--out", "x", "--set", setting,
                                    "--max-minutes", "9"]
    assert shlex.split(reproduce_command(command, 77))[3:] == ["--out", "x", "--set", setting, "--steps", "77"]


def test_small_shapes_weigh_more_in_the_loss_up_to_the_limit():
    from tools.shapes.train import object_masks
    from tools.shapes_controlnet.train import object_boost

    examples = [data.training_example(0, index, 3, data.ExampleRecipe()) for index in range(120)]
    masks = object_masks(np.stack([e.image for e in examples]), [e.spec for e in examples], 16)
    boost = object_boost(masks, 4.0).flatten()
    small = np.median([float(b) for b, e in zip(boost, examples, strict=True) if e.spec.size == "small"])
    large = np.median([float(b) for b, e in zip(boost, examples, strict=True) if e.spec.size == "large"])
    assert small >= 2.0 and large < 1.5 and float(boost.max()) <= 4.0 and float(boost.min()) >= 1.0
    assert torch.equal(object_boost(masks, 1.0), torch.ones_like(object_boost(masks, 1.0)))  # 1: off


def test_a_base_with_the_plain_backdrop_trains_its_controlnet_on_it(tmp_path):
    """A caption without a background shows the plain grey backdrop: the ControlNet's pictures follow the base."""
    example = data.training_example(0, 5, 1, data.ExampleRecipe())
    plain = example.plain_image()
    on_shape = np.all(example.image == world.PALETTE[example.spec.colour], axis=-1)
    assert on_shape.sum() > 30 and np.array_equal(plain[on_shape], example.image[on_shape])
    assert plain[0, 0].tolist() == list(world.PLAIN_BACKGROUND)

    base = read_base(BASE)
    config = make_config("tiny", seed=0)
    palette = weights(train(dataclasses.replace(base, plain_unnamed_background=False), config, tmp_path / "a",
                            threads=1, checkpoint_every=0, progress=False).controlnet)
    grey = weights(train(dataclasses.replace(base, plain_unnamed_background=True), config, tmp_path / "b",
                         threads=1, checkpoint_every=0, progress=False).controlnet)
    assert not same(palette, grey), "the plain pictures were not used"
