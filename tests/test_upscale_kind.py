"""Upscaling as a kind of work: through the same queue as images, with the studio's real services.

What a user checks: the result has the asked size and looks like the input, it is saved with its parameters,
a folder is upscaled file by file, a bad request is refused before anything is queued (naming the field), and a
broken model file fails its own job with the file named while the worker goes on.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.errors import RequestError
from modules.image.infotext import read_infotext
from modules.image.request import HiresFix
from modules.upscaling.kind import FolderPolicy
from modules.upscaling.request import UpscaleRequest
from tests.helpers import pixels, txt2img

pytestmark = pytest.mark.usefixtures("one_thread")


def picture(width: int = 40, height: int = 24) -> Image.Image:
    image = Image.new("RGB", (width, height), (30, 60, 200))
    ImageDraw.Draw(image).ellipse((8, 4, 28, 20), fill=(220, 40, 40))
    return image


def test_lanczos_doubles_the_size_and_saves_with_its_parameters(services):
    result = services.run(UpscaleRequest(images=(picture(),), names=("cat.png",), upscaler="Lanczos", scale=2))
    [item] = result.images
    assert item.image.size == (80, 48)
    assert np.array_equal(pixels(item.image), pixels(picture().resize((80, 48), Image.Resampling.LANCZOS)))
    assert item.path.parent.parent.name == "extras-images" and item.path.name.endswith("-cat.png")
    saved = Image.open(item.path)
    assert saved.size == (80, 48) and "Postprocess upscale by: 2, Postprocess upscaler: Lanczos" in read_infotext(saved)


def test_a_model_upscaler_follows_the_picture_and_keeps_the_source_parameters(services):
    source = picture()
    source.info["parameters"] = "a red circle\nSteps: 20, Seed: 7"
    result = services.run(UpscaleRequest(images=(source,), upscaler="2x-TinyCompact", scale=2, save_images=False))
    [item] = result.images
    assert item.image.size == (80, 48) and item.path is None
    enlarged = pixels(source.resize((80, 48), Image.Resampling.NEAREST))
    assert np.abs(pixels(item.image) - enlarged).mean() < 20  # the shape and colours are still the input's
    assert item.infotext.startswith("a red circle\nSteps: 20, Seed: 7, Postprocess upscale by: 2")


def test_scale_to_a_box_crops_to_exactly_that_size_and_blends_a_second_upscaler(services):
    request = UpscaleRequest(images=(picture(),), resize_mode=1, width=64, height=64, crop=True,
                             upscaler="Nearest", upscaler_2="4x-TinyCompact", upscaler_2_visibility=0.5,
                             save_images=False)
    [item] = services.run(request).images
    assert item.image.size == (64, 64)
    assert "Postprocess upscaler 2: 4x-TinyCompact" in item.infotext
    uncropped = services.run(dataclasses.replace(request, crop=False)).images[0]
    assert uncropped.image.size == (64, 38)  # fits inside the box, aspect kept


def test_a_folder_is_upscaled_file_by_file_and_an_unreadable_file_is_reported(services, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    picture().save(folder / "a.png")
    picture(16, 16).save(folder / "b.jpg")
    (folder / "c.png").write_bytes(b"not a picture")
    (folder / "notes.txt").write_text("ignored")
    job = services.queue.submit(UpscaleRequest(input_dir=str(folder), scale=1.5, save_images=False))
    result = services.queue.wait(job, timeout=60)
    assert [(item.source, item.image.size) for item in result.images] == [("a.png", (60, 36)), ("b.jpg", (24, 24))]
    assert len(result.skipped) == 1 and result.skipped[0].startswith("c.png")
    assert job.progress.job_count == 3


@pytest.mark.parametrize("fields, field", [
    ({"scale": 0}, "upscaling_resize"),
    ({"scale": float("nan")}, "upscaling_resize"),
    ({"scale": 8.0, "images": (Image.new("RGB", (2048, 2048)),)}, "upscaling_resize"),
    ({"upscaler": "4x-NoSuchModel"}, "upscaler"),
    ({"upscaler_2": "nope", "upscaler_2_visibility": 0.5}, "upscaler_2"),
    ({"upscaler_2_visibility": 1.5}, "upscaler_2_visibility"),
    ({"resize_mode": 1, "width": 0}, "upscaling_resize_w"),
    ({"images": ()}, "image"),
    ({"images": (), "input_dir": "/no/such/folder"}, "input_dir"),
    ({"tile_size": -1}, "tile_size"),
])
def test_bad_requests_are_refused_before_queueing_naming_the_field(services, fields, field):
    queued = len(services.queue.jobs())
    with pytest.raises(RequestError) as caught:
        services.queue.submit(UpscaleRequest(**{"images": (picture(),), **fields}))
    assert caught.value.field == field and caught.value.message
    assert len(services.queue.jobs()) == queued


def test_an_exposed_studio_reads_folders_only_inside_its_outputs(tmp_path, services):
    policy = FolderPolicy(roots=(tmp_path / "outputs",))
    (tmp_path / "outputs" / "old").mkdir(parents=True)
    assert policy.check(str(tmp_path / "outputs" / "old")) == (tmp_path / "outputs" / "old").resolve()
    with pytest.raises(RequestError, match="only inside") as caught:
        policy.check("/etc")
    assert caught.value.field == "input_dir"
    with pytest.raises(RequestError, match="only inside"):
        policy.check(str(tmp_path / "outputs" / ".." / "models"))


def test_a_truncated_model_fails_its_job_naming_the_file_and_the_worker_goes_on(services):
    models = services.config.models_dir
    good = (models / "ESRGAN" / "2x-TinyCompact.safetensors").read_bytes()
    (models / "ESRGAN" / "2x-Broken.safetensors").write_bytes(good[: len(good) // 2])
    job = services.queue.submit(UpscaleRequest(images=(picture(),), upscaler="2x-Broken", save_images=False))
    with pytest.raises(RequestError) as caught:
        services.queue.wait(job, timeout=60)
    assert caught.value.field == "upscaler" and "2x-Broken.safetensors" in caught.value.message
    after = services.run(UpscaleRequest(images=(picture(),), upscaler="2x-TinyCompact", save_images=False))
    assert after.images[0].image.size == (80, 48)


def test_image_and_upscale_jobs_share_the_queue_history_and_artifacts(services):
    image_job = services.queue.submit(txt2img(save_images=False))
    upscale_job = services.queue.submit(UpscaleRequest(images=(picture(),), save_images=False))
    services.queue.wait(image_job, timeout=60)
    services.queue.wait(upscale_job, timeout=60)
    jobs, _total = services.queue.history(limit=2)
    assert [job.kind for job in jobs] == ["upscale", "image"]
    assert [artifact.type for artifact in upscale_job.result.artifacts] == ["image"]
    assert upscale_job.result.counted_images == 1
    reread = services.queue.store.get(upscale_job.id)
    assert reread.kind == "upscale" and reread.result["images"][0]["source"] == "image-1"


def test_hires_fix_can_use_a_model_upscaler(services):
    result = services.run(txt2img(hires=HiresFix(scale=2.0, upscaler="2x-TinyCompact", steps=2,
                                                  denoising_strength=0.5), save_images=False))
    assert result.images[0].image.size == (128, 128)
    assert "Hires upscaler: 2x-TinyCompact" in result.images[0].infotext
    with pytest.raises(RequestError) as caught:
        services.queue.submit(txt2img(hires=HiresFix(upscaler="4x-Missing")))
    assert caught.value.field == "hires.upscaler" and "Latent" in caught.value.message


def test_sd_upscale_enlarges_then_redraws_in_tiles_and_stays_the_same_picture(services):
    from modules.image.request import GenerationRequest, SdUpscale

    request = GenerationRequest(task="img2img", prompt="a red circle on a blue background", init_image=picture(64, 64),
                                steps=4, denoising_strength=0.3, seed=11, save_images=False,
                                sd_upscale=SdUpscale(scale=2, upscaler="2x-TinyCompact", overlap=16))
    [item] = services.run(request).images
    assert item.image.size == (128, 128) and item.seed == 11
    assert "SD upscale upscaler: 2x-TinyCompact, SD upscale tiles: 9" in item.infotext
    enlarged = pixels(picture(64, 64).resize((128, 128)))
    assert 1 < np.abs(pixels(item.image) - enlarged).mean() < 80
    with pytest.raises(RequestError) as caught:
        services.queue.submit(dataclasses.replace(request, task="txt2img"))
    assert caught.value.field == "sd_upscale"
    with pytest.raises(RequestError) as caught:
        services.queue.submit(dataclasses.replace(request, sd_upscale=SdUpscale(upscaler="nope")))
    assert caught.value.field == "sd_upscale.upscaler"
