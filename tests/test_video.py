"""The video kind end to end on tiny random-weight models: AnimateDiff (SD 1.x UNet + motion adapter), Stable
Video Diffusion and Wan run through the queue, and the written file is decoded to check what a user would: the
frame count, size and rate asked for, the parameters readable from the file, the seed reproducing the clip."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.errors import RequestError
from modules.video.encode import probe, read_frames, read_video_infotext, read_video_parameters
from modules.video.request import VideoRequest
from tests.helpers import running_services


@pytest.fixture(scope="module")
def video_services(tmp_path_factory, video_model_store, one_thread):
    with running_services(tmp_path_factory.mktemp("video-studio"), video_model_store,
                          default_ckpt="tiny-sd1") as services:
        yield services


def run(services, **fields):
    return services.run(VideoRequest(**fields), timeout=300)


def frames_of(result) -> np.ndarray:
    return np.stack([np.asarray(frame, dtype=np.int16) for frame in read_frames(result.videos[0].path)])


def test_animatediff_text_to_video_takes_its_checkpoints_size_and_writes_what_was_asked(video_services):
    result = run(video_services, prompt="a red circle moving right", frames=8, fps=10, steps=2, seed=7)
    video = result.videos[0].path
    assert video.suffix == ".mp4" and video.is_relative_to(video_services.config.outdir)
    info = probe(video)
    # tiny-sd1 was trained at 64 px: AnimateDiff's default size is its checkpoint's
    assert (info.frames, info.width, info.height, info.fps) == (8, 64, 64, 10.0)
    text = read_video_infotext(video)
    assert text.startswith("a red circle moving right\n") and "Seed: 7" in text and "Frames: 8" in text
    assert "Video model: tiny-motion" in text and "Model: tiny-sd1" in text
    parameters = read_video_parameters(video)
    assert parameters["Seed"] == 7 and parameters["FPS"] == 10 and parameters["prompt"] == "a red circle moving right"
    assert result.artifacts[0].type == "video" and result.artifacts[0].media_type == "video/mp4"
    # the job record holds the parameters too
    jobs, _total = video_services.queue.history(limit=1)
    record = video_services.queue.store.get(jobs[0].id)
    assert record.kind == "video" and record.request["width"] == 64 and record.request["frames"] == 8
    assert record.result["parameters"]["Seed"] == 7 and record.result["videos"][0]["file"] == str(video)


def test_a_seed_reproduces_the_clip_and_another_seed_changes_it(video_services):
    fields = dict(prompt="a blue square", frames=4, fps=8, steps=2, width=64, height=64)
    first = frames_of(run(video_services, seed=3, **fields))
    again = frames_of(run(video_services, seed=3, **fields))
    other = frames_of(run(video_services, seed=4, **fields))
    assert first.shape == (4, 64, 64, 3)
    assert np.array_equal(first, again)
    assert np.abs(first - other).mean() > 1.0
    # decoding a frame at a time (less memory) makes the same clip
    chunked = run(video_services, seed=3, decode_chunk_size=1, **fields)
    assert np.abs(frames_of(chunked) - first).mean() < 0.5
    assert read_video_parameters(chunked.videos[0].path)["Decode chunk size"] == 1


def test_a_single_file_motion_module_in_a1111s_folder_animates_without_the_hub(video_services):
    from modules.video.registry import VideoModelRegistry

    listed = {model.name: model for model in VideoModelRegistry(video_services.config.models_dir).list()}
    assert listed["v2-motion-module"].kind == "safetensors" and listed["v2-motion-module"].channels == (32, 64)
    result = run(video_services, model="v2-motion-module", prompt="a circle", frames=4, fps=8, steps=2, seed=1)
    info = probe(result.videos[0].path)
    assert (info.frames, info.width, info.height) == (4, 64, 64)
    assert "Video model: v2-motion-module" in read_video_infotext(result.videos[0].path)


def test_animatediff_on_an_sdxl_checkpoint(video_services):
    result = run(video_services, checkpoint="tiny-sdxl", prompt="a circle", frames=4, fps=8, steps=2, seed=1)
    info = probe(result.videos[0].path)
    assert (info.frames, info.width, info.height) == (4, 64, 64)
    assert "Model: tiny-sdxl" in read_video_infotext(result.videos[0].path)


def test_svd_makes_a_clip_from_an_image(video_services):
    image = Image.new("RGB", (80, 48), (200, 30, 30))
    result = run(video_services, model="tiny-svd", init_image=image, width=64, height=64, frames=6, fps=6, steps=2,
                 seed=1, motion_bucket_id=60, noise_aug_strength=0.1)
    info = probe(result.videos[0].path)
    assert (info.frames, info.width, info.height, info.fps) == (6, 64, 64, 6.0)
    parameters = read_video_parameters(result.videos[0].path)
    assert parameters["Motion bucket"] == 60 and parameters["Decode chunk size"] == 8  # resolved at submission


def test_wan_text_and_image_to_video(video_services):
    text = run(video_services, model="tiny-wan", prompt="a cat", width=32, height=32, frames=5, fps=16, steps=2,
               seed=1)
    info = probe(text.videos[0].path)
    assert (info.frames, info.width, info.height, info.fps) == (5, 32, 32, 16.0)
    image = run(video_services, model="tiny-wan-i2v", prompt="a cat", init_image=Image.new("RGB", (32, 32), "red"),
                width=48, height=32, frames=5, fps=16, steps=2, seed=1)
    info = probe(image.videos[0].path)
    assert (info.frames, info.width, info.height) == (5, 48, 32)
    assert "Video mode: img2vid" in read_video_infotext(image.videos[0].path)


def test_animatediff_video_to_video_keeps_the_input_frame_count(video_services):
    source = tuple(Image.new("RGB", (64, 64), (40 * index, 0, 200)) for index in range(6))
    result = run(video_services, prompt="a red circle", init_video=source, strength=0.5, steps=4, seed=2)
    info = probe(result.videos[0].path)
    assert (info.frames, info.width, info.height) == (6, 64, 64)
    assert read_video_parameters(result.videos[0].path)["Denoising strength"] == 0.5


def test_other_formats_and_frames_as_pngs_carry_the_parameters(video_services):
    result = run(video_services, prompt="a green circle", frames=4, fps=8, steps=2, seed=9,
                 output_formats=("webm", "gif", "webp"), save_frames=True)
    formats = [video.format for video in result.videos]
    assert formats == ["webm", "gif", "webp"]
    for video in result.videos:
        info = probe(video.path)
        assert (info.frames, info.width, info.height) == (4, 64, 64), video.path
        assert "Seed: 9" in read_video_infotext(video.path)
    assert len(result.frames) == 4
    with Image.open(result.frames[2]) as frame:
        assert frame.size == (64, 64) and "Seed: 9" in frame.info["parameters"]
    assert [artifact.type for artifact in result.artifacts] == ["video"] * 3 + ["image"] * 4


@pytest.mark.parametrize(("fields", "field"), [
    (dict(frames=1000), "frames"),
    (dict(width=4096), "width"),
    (dict(width=2048, height=2048), "width"),
    (dict(output_formats=("avi",)), "output_format"),
    (dict(model="tiny-svd"), "init_image"),  # SVD asked for text-to-video
    (dict(model="tiny-motion", init_image=Image.new("RGB", (64, 64))), "init_image"),  # AnimateDiff: no image
    (dict(model="xl-motion"), "checkpoint"),  # an SDXL motion adapter on an SD 1.x checkpoint
    (dict(model="tiny-wan", frames=6), "frames"),  # Wan makes 4k+1 frames
    (dict(model="tiny-wan", width=40), "width"),
    (dict(model="tiny-wan", sampler="Euler a"), "sampler"),
    (dict(sampler="no such sampler"), "sampler"),
    (dict(model="no-such-model"), "model"),
    (dict(checkpoint="missing.safetensors"), "checkpoint"),
    (dict(frames=40), "frames"),  # over the motion adapter's longest sequence
    (dict(motion_end=1.5), "motion_end"),
    (dict(model="tiny-wan", motion_end=0.5), "motion_end"),  # no motion adapter to end
    (dict(checkpoint="tiny-sdxl", init_video=(Image.new("RGB", (64, 64)),) * 2), "init_video"),  # SD 1.x only
])
def test_bad_input_is_refused_naming_the_field_and_nothing_is_queued(video_services, fields, field):
    before = len(video_services.queue.jobs())
    with pytest.raises(RequestError) as refused:
        video_services.queue.submit(VideoRequest(prompt="a circle", steps=2, **fields))
    assert refused.value.field == field, refused.value
    assert len(video_services.queue.jobs()) == before


def test_interrupting_a_clip_stops_between_steps_and_writes_nothing(video_services):
    import time

    job = video_services.queue.submit(VideoRequest(prompt="a slow one", frames=4, steps=150, seed=1))
    deadline = time.monotonic() + 120
    while job.progress.step < 1 and job.state != "done" and time.monotonic() < deadline:
        time.sleep(0.005)
    assert job.state == "running", "the job ended before it could be interrupted"
    job.control.interrupt()
    result = video_services.queue.wait(job, 120)
    assert result.interrupted and result.videos == [] and job.progress.step < 150
    # the worker goes on
    after = run(video_services, prompt="after", frames=2, steps=1, seed=1)
    assert probe(after.videos[0].path).frames == 2


def test_the_embedded_motion_model_leads_and_brings_its_recommended_settings(tmp_path):
    import json

    from modules.video.defaults import VideoDefaults, model_defaults
    from modules.video.registry import VideoModelRegistry

    for name in ("another", "sfumato-shapes-motion"):
        folder = tmp_path / "animatediff" / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"_class_name": "MotionAdapter",
                                                        "block_out_channels": [32, 64]}))
    (tmp_path / "animatediff" / "sfumato-shapes-motion" / "training_config.json").write_text(json.dumps(
        {"recommended": {"sampler": "Euler", "steps": 20, "guidance": 4.5, "frames": 16, "fps": 8,
                         "motion_end": 0.6}}))
    registry = VideoModelRegistry(tmp_path)
    assert [model.name for model in registry.list()] == ["sfumato-shapes-motion", "another"]
    expected = VideoDefaults(16, 8, 20, 4.5, 64, 64, "Euler", motion_end=0.6)
    assert model_defaults(registry.find("sfumato-shapes-motion"), 64) == expected
    assert model_defaults(registry.find("another"), 64) == VideoDefaults(16, 8, 25, 7.5, 64, 64, None)
