"""Prompt editing, alternation and composable AND: A1111's schedules, and what they do to real pictures."""

from __future__ import annotations

import numpy as np
import pytest

from modules.image.prompt_schedule import prompt_schedule, split_and, text_at
from modules.image.request import HiresFix
from tests.helpers import pixels, txt2img

# -- the schedules (A1111's own examples, at 10 steps unless said) ----------------------------------------------


@pytest.mark.parametrize(("prompt", "expected"), [
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", [(step, "a" if step % 2 else "(b:1.1)") for step in range(1, 11)]),
    ("[fe|]male", [(step, "female" if step % 2 else "male") for step in range(1, 11)]),
    ("[fe|||]male", [(step, "female" if step % 4 == 1 else "male") for step in range(1, 11)]),
    ("[from::0.3] to", [(3, "from to"), (10, " to")]),
])
def test_a1111_schedules(prompt, expected):
    assert prompt_schedule(prompt, 10) == expected


def test_cat_to_dog_switches_at_step_ten_of_twenty():
    schedule = prompt_schedule("a [cat:dog:0.5]", 20)
    assert schedule == [(10, "a cat"), (20, "a dog")]
    # Step s (from 0) uses the first entry ending at or after it: A1111 draws "cat" through step 10.
    assert [text_at(schedule, step) for step in (0, 9, 10, 11, 19)] == ["a cat"] * 3 + ["a dog"] * 2


def test_alternation_changes_every_step():
    schedule = prompt_schedule("a [red|blue] ball", 6)
    assert [text_at(schedule, step) for step in range(6)] == ["a red ball", "a red ball", "a blue ball",
                                                             "a red ball", "a blue ball", "a red ball"]


def test_nesting_alternation_inside_editing_and_editing_inside_alternation():
    assert prompt_schedule("[[a|b]:c:3]", 4) == [(1, "a"), (2, "b"), (3, "a"), (4, "c")]
    assert prompt_schedule("[x|[y:z:2]]", 4) == [(1, "x"), (2, "y"), (3, "x"), (4, "z")]


@pytest.mark.parametrize("prompt", [r"a \[cat:dog:0.5\]", r"\[a\|b\]", "a [cat:dog]", "(a:1.2) [b] (c)",
                                    "a | b [c:d:2]", "a [c:d:2] \\"])
def test_what_is_not_syntax_stays_literal(prompt):
    assert prompt_schedule(prompt, 20) == [(20, prompt)]


def test_when_a_whole_number_is_a_step_and_a_decimal_a_fraction():
    assert prompt_schedule("[red:blue:0]", 4) == [(4, "blue")]
    assert prompt_schedule("[red:blue:1.0]", 4) == [(4, "red")]
    assert prompt_schedule("[red:blue:1]", 4) == [(1, "red"), (4, "blue")]
    assert prompt_schedule("[red:blue:2]", 4) == prompt_schedule("[red:blue:0.5]", 4) == [(2, "red"), (4, "blue")]
    assert prompt_schedule("[red:blue:99]", 4) == [(4, "red")]


def test_hires_pass_continues_the_first_pass_timeline():
    assert prompt_schedule("a [b:.5] c", 10, first_pass_steps=10) == [(10, "a b c")]
    assert prompt_schedule("a [b:1.5] c", 10, first_pass_steps=10) == [(5, "a  c"), (10, "a b c")]
    assert prompt_schedule("[x:y:25]", 10, first_pass_steps=20) == [(5, "x"), (10, "y")]
    assert prompt_schedule("[x:y:1.0]", 10, first_pass_steps=20) == [(10, "y")]


def test_and_splits_sub_prompts_with_weights():
    assert split_and("a cat AND a dog :1.2") == [("a cat", 1.0), (" a dog", 1.2)]
    assert split_and("a cat:0.5 AND a dog AND (sky:1.2)") == [("a cat", 0.5), (" a dog", 1.0), (" (sky:1.2)", 1.0)]
    assert split_and("a cat :-1") == [("a cat", -1.0)]
    assert split_and("a cat ") == [("a cat ", 1.0)]  # a plain prompt is left exactly as written
    assert split_and("BANDAGE and ANDROID") == [("BANDAGE and ANDROID", 1.0)]  # AND is a whole word


# -- real pictures on the tiny model ------------------------------------------------------------------------------


def _image(services, **fields) -> np.ndarray:
    return pixels(services.run(txt2img(**fields)).images[0].image)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def _differ(a: np.ndarray, b: np.ndarray) -> bool:
    return _distance(a, b) > 0.5


def test_prompt_editing_blends_and_its_ends_are_the_plain_prompts(services, one_thread):
    red, blue = _image(services, prompt="red"), _image(services, prompt="blue")
    assert _differ(red, blue)
    half = _image(services, prompt="[red:blue:0.5]")
    assert not np.array_equal(half, red) and not np.array_equal(half, blue)
    # The early steps set the composition, so each edit stays nearer the prompt it starts from.
    assert _distance(half, red) < _distance(half, blue)
    reverse = _image(services, prompt="[blue:red:0.5]")
    assert not np.array_equal(reverse, blue) and _distance(reverse, blue) < _distance(reverse, red)
    assert np.array_equal(_image(services, prompt="[red:blue:0]"), blue)
    assert np.array_equal(_image(services, prompt="[red:blue:1.0]"), red)
    assert np.array_equal(_image(services, prompt="[red:blue:2]"), half)  # step 2 of 4 is the fraction 0.5
    alternating = _image(services, prompt="[red|blue]")
    assert not np.array_equal(alternating, red) and not np.array_equal(alternating, half)


def test_negative_prompt_editing(services, one_thread):
    plain = _image(services, prompt="a circle", negative_prompt="red")
    other = _image(services, prompt="a circle", negative_prompt="blue")
    edited = _image(services, prompt="a circle", negative_prompt="[red:blue:0.5]")
    assert not np.array_equal(edited, plain) and not np.array_equal(edited, other)
    assert np.array_equal(_image(services, prompt="a circle", negative_prompt="[red:blue:0]"), other)


def test_plain_prompts_keep_their_pixels_and_nothing_leaks_into_the_next_job(services, one_thread, monkeypatch):
    from modules.image import prompt_conditioning
    from modules.image.prompt_embeddings import encode_prompt_pair

    prompt = "a (red:1.2) circle, [blue] background"
    before = _image(services, prompt=prompt, negative_prompt="blurry")
    _image(services, prompt="red AND [blue:green:0.5] :0.7", negative_prompt="[a|b]")
    after = _image(services, prompt=prompt, negative_prompt="blurry")
    assert np.array_equal(before, after)
    loaded = services.engine.pipelines.get(services.engine.resolve_model(None))
    assert "forward" not in loaded.base.unet.__dict__  # the wrapper is gone once the job ends

    def the_old_path(pipe, prompt, negative, *, clip_skip, scope, **_ignored):
        return encode_prompt_pair(pipe, prompt, negative, clip_skip=clip_skip)

    monkeypatch.setattr(prompt_conditioning, "conditioning_kwargs", the_old_path)
    assert np.array_equal(_image(services, prompt=prompt, negative_prompt="blurry"), before)


def test_composable_and(services, one_thread):
    red, blue = _image(services, prompt="red"), _image(services, prompt="blue")
    both = _image(services, prompt="red AND blue")
    assert _differ(both, red) and _differ(both, blue)
    assert not np.array_equal(both, _image(services, prompt="red blue"))
    # Halves of the same sub-prompt add up to the prompt itself; a weight scales the guidance like cfg does.
    halves = _image(services, prompt="red :0.5 AND red :0.5")
    assert np.abs(halves - red).max() <= 2
    doubled = _image(services, prompt="red :2", cfg_scale=3.5)
    assert np.abs(doubled - red).max() <= 2
    assert np.array_equal(_image(services, prompt="red :1"), red)  # one sub-prompt of weight 1 is the prompt


def test_and_and_editing_keep_each_image_of_a_batch_on_its_own_seed(services, one_thread):
    prompt = "[red:blue:0.5] AND green :0.6"
    batch = services.run(txt2img(prompt=prompt, batch_size=2, seed=40)).images
    alone = _image(services, prompt=prompt, seed=41)
    assert np.abs(pixels(batch[1].image) - alone).max() <= 1
    assert not np.array_equal(pixels(batch[0].image), pixels(batch[1].image))


def test_img2img_inpaint_and_no_guidance_take_the_syntax_too(services, one_thread):
    from PIL import Image

    source = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    prompt = "[red:blue:0.5] AND green"
    for fields in ({"task": "img2img", "init_image": source, "denoising_strength": 0.8},
                   {"task": "inpaint", "init_image": source, "mask": mask, "denoising_strength": 0.9},
                   {"cfg_scale": 1.0}):
        edited = _image(services, prompt=prompt, **fields)
        assert not np.array_equal(edited, _image(services, prompt="red", **fields)), fields


def test_prompts_of_different_lengths_share_a_batch(services, one_thread):
    long = ", ".join(f"a small red circle number {index}" for index in range(20))  # three 75-token chunks
    for prompt in (f"[red:{long}:0.5]", f"red AND {long} :0.5", f"[{long}|blue]"):
        edited = _image(services, prompt=prompt, negative_prompt="[a|b]")
        assert edited.shape == (64, 64, 3) and not np.array_equal(edited, _image(services, prompt="red"))


def test_infotext_keeps_the_prompt_as_written(services, one_thread):
    from modules.image.infotext import parse_infotext

    written = "a [cat:dog:0.5] AND a [red|blue] ball :0.8"
    item = services.run(txt2img(prompt=written, negative_prompt="[ugly::2]")).images[0]
    parsed = parse_infotext(item.infotext)
    assert parsed["Prompt"] == written and parsed["Negative prompt"] == "[ugly::2]"


def test_hires_second_pass_has_its_own_timeline(services, one_thread):
    hires = HiresFix(scale=2.0, upscaler="Latent", steps=2, denoising_strength=0.6)
    red = _image(services, prompt="red", hires=hires)
    # 1.0 ends the first pass: red there, blue for the whole second pass (as A1111's timeline has it).
    edited = _image(services, prompt="[red:blue:1.0]", hires=hires)
    assert edited.shape == (128, 128, 3) and not np.array_equal(edited, red)
    assert np.array_equal(_image(services, prompt="[red:blue:4]", hires=hires), edited)


def test_sdxl_steps_get_their_own_hidden_states_and_pooled_embeddings(one_thread):
    import torch

    from modules.image.prompt_conditioning import UnetScope, conditioning_kwargs
    from modules.image.prompt_embeddings import encode_texts
    from tools.tiny_model import build_tiny_pipeline

    pipe = build_tiny_pipeline("sdxl")
    pipe.set_progress_bar_config(disable=True)
    unet = pipe.unet
    seen = []
    original = unet.forward

    def spy(sample, timestep, *args, **kwargs):
        seen.append((sample.shape[0], kwargs["encoder_hidden_states"], kwargs["added_cond_kwargs"]["text_embeds"]))
        return original(sample, timestep, *args, **kwargs)

    unet.forward = spy  # an earlier wrapper (say, an offload hook) must survive the scope
    (red, red_pooled), (blue, blue_pooled), (empty, empty_pooled) = encode_texts(pipe, ["red", "blue", ""])

    def run(prompt: str) -> np.ndarray:
        seen.clear()
        with UnetScope() as scope:
            kwargs = conditioning_kwargs(pipe, prompt, "", clip_skip=1, steps=4, first_pass_steps=None, images=1,
                                         scope=scope)
            image = pipe(height=64, width=64, num_inference_steps=4, guidance_scale=7.0, output_type="np",
                         generator=torch.Generator().manual_seed(5), **kwargs).images[0]
        assert unet.forward is spy
        return image

    run("[red:blue:0.5]")  # steps 0-2 red, step 3 blue, the negative always ""
    assert [count for count, _hidden, _pooled in seen] == [2] * 4
    for step, (_count, hidden, pooled) in enumerate(seen):
        want, want_pooled = (red, red_pooled) if step <= 2 else (blue, blue_pooled)
        assert torch.equal(hidden[1:], want) and torch.equal(pooled[1:], want_pooled)
        assert torch.equal(hidden[:1], empty) and torch.equal(pooled[:1], empty_pooled)
    both = run("red AND blue :0.5")  # one batch: uncond, red, blue
    assert [count for count, _hidden, _pooled in seen] == [3] * 4
    assert torch.equal(seen[0][2], torch.cat([empty_pooled, red_pooled, blue_pooled]))
    assert np.isfinite(both).all()
    del unet.forward


# -- computed schedule types --------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["Polyexponential", "KL Optimal", "Align Your Steps"])
def test_computed_schedules_run_with_euler_and_round_trip_the_infotext(services, one_thread, schedule):
    from modules.image.infotext import infotext_to_request_fields, parse_infotext

    default = _image(services, prompt="red", sampler_name="Euler")
    item = services.run(txt2img(prompt="red", sampler_name="Euler", scheduler=schedule)).images[0]
    assert _differ(pixels(item.image), default)
    assert f"Sampler: Euler, Schedule type: {schedule}," in item.infotext
    fields = infotext_to_request_fields(parse_infotext(item.infotext))
    assert fields["sampler_name"] == "Euler" and fields["scheduler"] == schedule


def test_computed_schedules_in_img2img_and_the_hires_pass(services, one_thread):
    from PIL import Image

    source = Image.new("RGB", (64, 64), (40, 40, 200))
    for fields in ({"task": "img2img", "init_image": source, "denoising_strength": 0.6},
                   {"hires": HiresFix(scale=2.0, upscaler="Latent", steps=3, denoising_strength=0.5)}):
        default = _image(services, prompt="red", **fields)
        kl = _image(services, prompt="red", scheduler="KL Optimal", **fields)
        assert kl.shape == default.shape and not np.array_equal(kl, default), fields


def test_computed_sigma_lists_follow_a1111():
    from diffusers import EulerDiscreteScheduler

    from modules.image.samplers import SamplerChoice, custom_sigmas
    from tools.tiny_model import SCHEDULER_CONFIG

    scheduler = EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    trained = np.sqrt((1 - scheduler.alphas_cumprod.numpy()) / scheduler.alphas_cumprod.numpy())
    low, high = trained.min(), trained.max()
    poly = custom_sigmas(SamplerChoice("Euler", "Polyexponential"), scheduler, 5)["sigmas"]
    assert len(poly) == 6 and poly[-1] == 0 and np.isclose(poly[0], high) and np.isclose(poly[-2], low)
    assert np.allclose(np.diff(np.log(poly[:-1])), np.log(low / high) / 4)  # rho 1: evenly spaced in log sigma
    kl = custom_sigmas(SamplerChoice("Euler", "KL Optimal"), scheduler, 5)["sigmas"]
    assert len(kl) == 6 and np.isclose(kl[0], high) and np.isclose(kl[-1], low)  # KL ends at sigma_min, not 0
    assert np.allclose(np.diff(np.arctan(kl)), (np.arctan(low) - np.arctan(high)) / 5)
    # A1111's list is the published one ending at sigma_min (11 levels, native at 11 steps), then 0.
    ays = custom_sigmas(SamplerChoice("Euler", "Align Your Steps"), scheduler, 11)["sigmas"]
    assert np.allclose(ays, [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, low, 0])
    longer = custom_sigmas(SamplerChoice("Euler", "align_your_steps"), scheduler, 25)["sigmas"]
    assert len(longer) == 26 and longer[-1] == 0 and np.all(np.diff(longer) < 0)
    assert custom_sigmas(SamplerChoice("Euler", "Karras"), scheduler, 5) == {}


def test_computed_schedules_are_refused_with_samplers_that_cannot_take_sigmas():
    import inspect

    import diffusers

    from modules.image.samplers import SAMPLERS, UnsupportedScheduleError, resolve_sampler

    for spec in SAMPLERS:  # the table says what diffusers' classes really accept
        accepts = "sigmas" in inspect.signature(getattr(diffusers, spec.scheduler_class).set_timesteps).parameters
        assert spec.custom_sigmas == (accepts and spec.scheduler_class != "UniPCMultistepScheduler"), spec.name
    with pytest.raises(UnsupportedScheduleError, match="'Align Your Steps' is not available with sampler 'DPM"):
        resolve_sampler("DPM++ 2M", "align_your_steps")
    with pytest.raises(UnsupportedScheduleError, match="Euler"):
        resolve_sampler("Heun KL Optimal")
    assert resolve_sampler("Euler Polyexponential").schedule == "Polyexponential"
