"""The one generation path, end to end on tiny real pipelines, through the job queue as every front end uses it."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.api.a1111_models import a1111_info
from modules.errors import RequestError
from modules.image.request import GenerationRequest, HiresFix, Outpaint
from tests.helpers import pixels, txt2img


def test_same_seed_same_pixels_and_different_seeds_differ(services):
    first = services.run(txt2img()).images[0]
    again = services.run(txt2img()).images[0]
    other = services.run(txt2img(seed=99)).images[0]
    assert first.seed == again.seed == 1234
    assert np.array_equal(pixels(first.image), pixels(again.image))
    assert np.abs(pixels(first.image) - pixels(other.image)).mean() > 1.0


def test_batch_image_i_uses_seed_plus_i_and_random_seed_is_reported(services):
    result = services.run(txt2img(batch_size=2, n_iter=2, seed=500))
    assert result.seeds == [500, 501, 502, 503]
    alone = services.run(txt2img(seed=502)).images[0]
    # The same picture, not bit for bit: a batch of two takes other BLAS kernels than one image on some CPUs
    # (AVX2 EPYC: at most one level apart on a few pixels), while another seed is some 40 levels away on average.
    assert np.abs(pixels(result.images[2].image) - pixels(alone.image)).max() <= 2
    assert result.grid is not None and result.grid.image.size == (128, 128)
    assert a1111_info(result)["all_seeds"] == [500, 501, 502, 503]

    random_result = services.run(txt2img(seed=-1))
    used = random_result.images[0].seed
    assert 0 <= used <= 4294967294
    replay = services.run(txt2img(seed=used)).images[0]
    assert np.array_equal(pixels(random_result.images[0].image), pixels(replay.image))


def test_variation_seed_blends_towards_the_subseed(services):
    base = services.run(txt2img(seed=7)).images[0]
    none = services.run(txt2img(seed=7, subseed=8, subseed_strength=0.0)).images[0]
    full = services.run(txt2img(seed=7, subseed=8, subseed_strength=1.0)).images[0]
    target = services.run(txt2img(seed=8)).images[0]
    half = services.run(txt2img(seed=7, subseed=8, subseed_strength=0.5)).images[0]
    assert np.array_equal(pixels(base.image), pixels(none.image))
    assert np.abs(pixels(full.image) - pixels(target.image)).max() <= 1
    assert not np.array_equal(pixels(half.image), pixels(base.image))
    assert "Variation seed: 8, Variation seed strength: 0.5" in half.infotext


def test_images_are_saved_with_an_infotext_that_parses_back(services, app_config):
    from modules.image.infotext import parse_infotext, read_infotext

    result = services.run(txt2img(prompt="a (yellow:1.2) star, on the left", negative_prompt="blurry", cfg_scale=5.5))
    item = result.images[0]
    assert item.path is not None and item.path.is_file()
    assert item.path.parent == app_config.outdir / "txt2img" / dt.date.today().isoformat()
    with Image.open(item.path) as saved:
        text = read_infotext(saved)
    assert text == item.infotext
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "a (yellow:1.2) star, on the left"
    assert parsed["Negative prompt"] == "blurry"
    assert str(parsed["Steps"]) == "4" and str(parsed["Seed"]) == "1234" and str(parsed["CFG scale"]) == "5.5"
    assert parsed["Size"] == "64x64" and parsed["Model"] == "tiny-sd1"
    assert text.splitlines()[-1].startswith("Steps: 4, Sampler: Euler, CFG scale: 5.5, Seed: 1234, Size: 64x64")


def test_long_weighted_prompt_and_samplers_run(services):
    long_prompt = ", ".join(f"a (small:1.1) [red] circle number {i}" for i in range(30))
    result = services.run(txt2img(prompt=long_prompt, sampler_name="DPM++ 2M Karras"))
    assert result.images[0].image.size == (64, 64)
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in result.images[0].infotext


def test_img2img_resize_modes_and_size(services):
    source = Image.new("RGB", (96, 64), (200, 30, 30))
    for mode in (0, 1, 2):
        request = GenerationRequest(task="img2img", prompt="a circle", init_image=source, width=64, height=64,
                                    resize_mode=mode, steps=4, seed=3, denoising_strength=0.5)
        assert services.run(request).images[0].image.size == (64, 64)
    # no size given: the init image's own size
    own = services.run(GenerationRequest(task="img2img", init_image=source, steps=4, seed=3))
    assert own.images[0].image.size == (96, 64)
    assert "Denoising strength: 0.75" in own.images[0].infotext


def _picture() -> Image.Image:
    image = Image.new("RGB", (64, 64), (20, 40, 200))
    ImageDraw.Draw(image).ellipse((8, 8, 40, 40), fill=(230, 20, 20))
    return image


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sd1-inpainting"])
@pytest.mark.parametrize("only_masked", [False, True])
def test_inpaint_keeps_every_unmasked_pixel(services, model, only_masked):
    image = _picture()
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((32, 32, 55, 55), fill=255)
    request = GenerationRequest(task="inpaint", model=model, prompt="a green square", init_image=image, mask=mask,
                                steps=4, seed=5, denoising_strength=1.0, inpaint_full_res=only_masked,
                                inpaint_full_res_padding=8, mask_blur=4, inpainting_fill=0)
    out = services.run(request).images[0].image
    assert out.size == image.size
    keep = np.asarray(mask) == 0
    assert np.array_equal(pixels(out)[keep], pixels(image)[keep])
    assert np.abs(pixels(out)[~keep] - pixels(image)[~keep]).mean() > 1.0


def test_inpaint_mask_from_alpha_and_inverted_mask(services):
    image = _picture().convert("RGBA")
    alpha = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(alpha).rectangle((0, 0, 15, 63), fill=0)  # transparent strip = repaint
    image.putalpha(alpha)
    out = services.run(GenerationRequest(task="inpaint", init_image=image, steps=4, seed=1,
                                         denoising_strength=1.0)).images[0].image
    opaque = np.asarray(alpha) == 255
    flat = pixels(image.convert("RGB"))
    assert np.array_equal(pixels(out)[opaque], flat[opaque])

    mask = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=0)
    inverted = services.run(GenerationRequest(task="inpaint", init_image=_picture(), mask=mask, steps=4, seed=1,
                                              inpainting_mask_invert=True, denoising_strength=1.0)).images[0].image
    kept = np.asarray(mask) == 255  # inverted: the white part is kept
    assert np.array_equal(pixels(inverted)[kept], pixels(_picture())[kept])


def test_outpaint_enlarges_and_keeps_the_original(services):
    image = _picture()
    request = GenerationRequest(task="outpaint", prompt="a blue background", init_image=image, steps=4, seed=2,
                                denoising_strength=1.0, outpaint=Outpaint(left=16, right=0, top=0, bottom=12))
    result = services.run(request).images[0]
    assert result.image.size == (80, 80)  # 64+16 wide; 64+12 rounded up to a multiple of 8
    inner = pixels(result.image)[0:64, 16:80]
    assert np.array_equal(inner, pixels(image))


def test_hires_fix_doubles_the_size(services):
    for upscaler in ("Latent", "Lanczos"):
        result = services.run(txt2img(hires=HiresFix(scale=2.0, upscaler=upscaler, steps=2, denoising_strength=0.5)))
        item = result.images[0]
        assert item.image.size == (128, 128)
        assert f"Hires upscale: 2, Hires steps: 2, Hires upscaler: {upscaler}" in item.infotext
        assert "Size: 64x64" in item.infotext


def test_txt2img_with_an_inpainting_checkpoint(services):
    result = services.run(txt2img(model="tiny-sd1-inpainting"))
    assert result.images[0].image.size == (64, 64)


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"width": 100}, "width"),
        ({"width": 8192, "height": 8192}, "width"),
        ({"steps": -1}, "steps"),  # 0 is "the model's default", like width 0
        ({"cfg_scale": 99}, "cfg_scale"),
        ({"sampler_name": "Nonexistent"}, "sampler_name"),
        ({"scheduler": "Wobbly"}, "scheduler"),
        ({"model": "no-such-model"}, "model"),
        ({"styles": ("no-such-style",)}, "styles"),
    ],
)
def test_bad_request_is_refused_at_submission_and_the_worker_goes_on(services, fields, field):
    before = services.queue.stats()["queued"], len(services.queue.jobs())
    with pytest.raises(RequestError) as caught:
        services.queue.submit(txt2img(**fields))
    assert caught.value.field == field and caught.value.message
    assert (services.queue.stats()["queued"], len(services.queue.jobs())) == before  # nothing was queued
    assert services.run(txt2img(), timeout=60).images[0].image.size == (64, 64)


def test_mask_of_the_wrong_size_is_refused(services):
    request = GenerationRequest(task="inpaint", init_image=_picture(), mask=Image.new("L", (32, 32), 255))
    with pytest.raises(RequestError, match="mask is 32x32 but the image is 64x64"):
        services.run(request)


def test_interrupt_ends_a_long_job_early(services):
    started = threading.Event()
    job = services.queue.submit(txt2img(steps=150, n_iter=3))
    original = job.control.on_progress

    def watch(progress):
        original(progress)
        if progress.step >= 2:
            started.set()

    job.control.on_progress = watch
    assert started.wait(60)
    services.queue.interrupt_current()
    result = services.queue.wait(job, timeout=60)
    assert result.interrupted
    assert len(result.images) == 1  # the running batch finishes early, the others never start


def test_a_sampler_choice_never_leaks_into_the_next_request(services):
    plain = services.run(txt2img(seed=11)).images[0]
    services.run(txt2img(seed=11, sampler_name="DPM++ 2M SDE", scheduler="Karras"))
    again = services.run(txt2img(seed=11)).images[0]
    assert np.array_equal(pixels(plain.image), pixels(again.image))


def test_outpaint_ignores_an_explicit_size_and_checks_the_canvas_against_the_limits(services):
    request = GenerationRequest(task="outpaint", init_image=_picture(), width=64, height=64, steps=2, seed=2,
                                outpaint=Outpaint(left=32))
    item = services.run(request).images[0]
    assert item.image.size == (96, 64) and "Size: 96x64" in item.infotext
    huge = GenerationRequest(task="outpaint", init_image=_picture(), steps=2, outpaint=Outpaint(left=4000, right=4000))
    with pytest.raises(RequestError) as caught:
        services.run(huge)
    assert caught.value.field == "width"


def test_variation_seed_is_only_claimed_where_it_is_applied(services):
    request = GenerationRequest(task="img2img", init_image=_picture(), steps=4, seed=5, subseed=6,
                                subseed_strength=1.0)
    assert "Variation seed" not in services.run(request).images[0].infotext


def test_images_of_finished_batches_are_on_disk_when_a_later_batch_is_interrupted(services, app_config):
    job = services.queue.submit(txt2img(steps=60, n_iter=3, seed=40))
    original = job.control.on_progress

    def stop_in_second_batch(progress):
        original(progress)
        if progress.job_no == 1 and progress.step >= 1:
            job.control.interrupt()

    job.control.on_progress = stop_in_second_batch
    result = services.queue.wait(job, timeout=120)
    assert [item.seed for item in result.images] == [40, 41]
    assert all(item.path is not None and item.path.is_file() for item in result.images)


def test_hires_to_another_aspect_ratio_crops_instead_of_stretching():
    # A square first pass to a wide target keeps its proportions: it is covered and centre-cropped (A1111), so a
    # band along the top edge falls outside the crop, where stretching would have kept it.
    import torch

    from modules.image.generation import cover_latents

    latents = torch.zeros(1, 4, 8, 8)
    latents[..., :2, :] = 1.0  # a bright band: the top quarter
    latents[..., :, 3:5] = 0.5  # a vertical stripe in the middle
    wide = cover_latents(latents, 8, 16, "nearest")
    assert wide.shape[-2:] == (8, 16)
    assert wide.max() < 1.0  # the top band was cropped away, not squeezed in
    assert (wide[0, 0, :, 6:10] == 0.5).all()  # the middle stripe is twice as wide, not stretched out of shape
    tall = cover_latents(latents, 16, 8, "nearest")
    assert tall.shape[-2:] == (16, 8) and (tall[0, 0, :4, :2] == 1.0).all()  # the band, now 4 rows of 16


def test_hires_with_both_resize_sides_returns_that_size(services):
    for upscaler in ("Latent", "Lanczos"):
        hires = HiresFix(upscaler=upscaler, steps=2, denoising_strength=0.5, resize_x=128, resize_y=64)
        assert services.run(txt2img(hires=hires)).images[0].image.size == (128, 64)


def test_sdxl_runs_the_whole_path_with_weighted_long_prompts(tmp_path, app_config):
    # SDXL's two text encoders, pooled embeddings and size conditioning, through the same queue and generate()
    import dataclasses

    from modules.runtime.services import build_services
    from tools.tiny_model import save_tiny_model

    save_tiny_model(app_config.models_dir / "Stable-diffusion" / "tiny-sdxl", family="sdxl", seed=0)
    services = build_services(dataclasses.replace(app_config, default_ckpt="tiny-sdxl"))
    services.start()
    try:
        long_prompt = "a (red:1.4) circle, " + ", ".join(f"detail {i}" for i in range(40))  # over 77 tokens
        first = services.run(txt2img(prompt=long_prompt, steps=2))
        again = services.run(txt2img(prompt=long_prompt, steps=2))
        other = services.run(txt2img(prompt="a [blue] square", steps=2))
        inpainted = services.run(txt2img(task="inpaint", init_image=first.images[0].image,
                                         mask=Image.new("L", (64, 64), 255), steps=2))
    finally:
        services.stop()
    assert first.images[0].image.size == (64, 64) and "Model: tiny-sdxl" in first.images[0].infotext
    assert np.array_equal(pixels(first.images[0].image), pixels(again.images[0].image))
    assert not np.array_equal(pixels(first.images[0].image), pixels(other.images[0].image))
    assert inpainted.images[0].image.size == (64, 64)


def test_a_width_with_height_0_takes_the_models_default_height(services):
    result = services.run(txt2img(width=96, height=0, steps=2, save_images=False))
    assert result.images[0].image.size == (96, 64)  # the tiny model's default side is 64
    with pytest.raises(RequestError) as caught:
        services.queue.submit(txt2img(width=100, height=0))
    assert caught.value.field == "width"
    with pytest.raises(RequestError) as caught:
        services.queue.submit(txt2img(width=0, height=-8))
    assert caught.value.field == "height"


def test_the_first_job_on_a_model_says_it_is_loading_it(services):
    from app.ui.generate import progress_text

    texts: list[str] = []
    services.queue.submit(txt2img(steps=40, save_images=False))  # keeps the worker busy while we start watching
    job = services.queue.submit(txt2img(model="tiny-sd1-inpainting", steps=2, save_images=False))
    original = job.control.on_progress

    def watch(progress):
        original(progress)
        texts.append(progress_text(services, job))

    job.control.on_progress = watch
    services.queue.wait(job, timeout=60)
    assert texts[0] == "Loading model tiny-sd1-inpainting …" and texts[-1].startswith("step 2/2")
