"""Video jobs in history, on real services and tiny models: a finished clip is listed, shows in the Queue tab's
gallery and player as files that decode to the asked shape, and "Reuse in the Video tab" (history) or "Send to
video" (PNG info) puts its seed and parameters back into the Video tab, where Generate makes the same clip again.
Bad input in the tab (a corrupt upload, an image model as the video model) is a notice naming the field, and the
worker goes on."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.ui.form import INFO, WARNING
from app.ui.queue_tab import history_view, show_job
from app.ui.video_reuse import reuse_job, send_infotext
from app.ui.video_tab import checkpoints, video_events
from modules.video.encode import probe, read_frames
from modules.video.request import VideoRequest
from tests.helpers import running_services

# The Video tab's values a user leaves as they are; a test sets the rest.
TAB = {"model": "tiny-motion", "checkpoint": "Automatic", "prompt": "", "negative_prompt": "", "init_image": None,
       "width": 64, "height": 64, "frames": 4, "fps": 8, "steps": 2, "cfg_scale": 7, "seed": -1,
       "sampler": "Automatic", "motion_bucket_id": 127, "noise_aug_strength": 0.02, "decode_chunk_size": 0,
       "init_video": None, "strength": 0.6, "output_formats": ["mp4"], "save_frames": False}


@pytest.fixture(scope="module")
def video_services(tmp_path_factory, video_model_store, one_thread):
    with running_services(tmp_path_factory.mktemp("video-history"), video_model_store,
                          default_ckpt="tiny-sd1") as services:
        yield services


def generate(services, **values) -> dict:
    """One Generate click in the Video tab; its last update."""
    return list(video_events(services, {**TAB, **values}))[-1]


def newest_row(services) -> dict:
    """The history's newest row, selected as a click would."""
    listed = history_view(services, {"page": 1, "state_filter": "all"})
    return show_job(services, listed, 0)


def tab_values(updates: dict) -> dict:
    """The Video tab's values after a reuse: its updates by field name over the untouched tab."""
    return {**TAB, **{name.removeprefix("video."): value for name, value in updates.items()
                      if name.startswith("video.")}}


def frames(path) -> np.ndarray:
    return np.stack([np.asarray(frame, dtype=np.int16) for frame in read_frames(path)])


def test_a_clip_plays_in_history_and_reuse_remakes_it(video_services):
    from app.ui import build_layout

    build_layout(video_services)  # the tabs and the cross-tab wiring build
    made = generate(video_services, prompt="a green triangle", negative_prompt="blur", frames=6, fps=12, steps=2,
                    cfg_scale=6.5, sampler="Euler a", output_formats=["mp4", "gif"])  # seed -1: the studio picks
    assert made["video"].endswith(".mp4"), made

    shown = newest_row(video_services)
    clip = shown["clip"]
    assert clip["visible"] and clip["value"] == made["video"]
    info = probe(clip["value"])
    assert (info.frames, info.width, info.height, info.fps) == (6, 64, 64, 12.0)  # 0.5 s
    assert sorted(path.rsplit(".", 1)[1] for path in shown["gallery"]) == ["gif", "mp4"]
    assert probe(next(path for path in shown["gallery"] if path.endswith(".gif"))).frames == 6
    assert "Frames: 6" in shown["job_info"] and "Video model: tiny-motion" in shown["job_info"]
    assert shown["reuse_video"]["visible"] and shown["status"] == ""

    reused = reuse_job(video_services, {"queue.selected_job": shown["selected_job"]})
    job = video_services.queue.get(shown["selected_job"])
    assert reused["tabs"]["selected"] == "video" and INFO in reused and WARNING not in reused
    values = tab_values(reused)
    assert values["seed"] == job.request.seed != -1  # the seed it was made with, not "random" again
    assert {name: values[name] for name in ("prompt", "negative_prompt", "frames", "fps", "steps", "cfg_scale",
                                            "sampler", "model", "width", "height")} == {
        "prompt": "a green triangle", "negative_prompt": "blur", "frames": 6, "fps": 12, "steps": 2,
        "cfg_scale": 6.5, "sampler": "Euler a", "model": "tiny-motion", "width": 64, "height": 64}
    assert values["checkpoint"] in checkpoints(video_services) and values["checkpoint"].startswith("tiny-sd1 [")
    assert values["output_formats"] == ["mp4", "gif"] and values["init_image"] is None

    again = generate(video_services, **values)
    assert f"seed {job.request.seed}" in again["status"]
    assert np.array_equal(frames(again["video"]), frames(made["video"]))  # the same clip, pixel for pixel

    # after a restart the history (read back from the job store) still plays the clip and reuses its seed
    from modules.runtime.services import build_services

    restarted = build_services(video_services.config)
    listed = history_view(restarted, {"page": 1, "state_filter": "all"})
    row = listed["history_ids"].index(job.id)
    shown = show_job(restarted, listed, row)
    assert shown["clip"]["value"] == made["video"] and shown["reuse_video"]["visible"]
    assert tab_values(reuse_job(restarted, {"queue.selected_job": job.id}))["seed"] == job.request.seed


def test_png_info_sends_a_clips_parameters_to_the_video_tab(video_services):
    from app.ui.pnginfo import read_video_info

    made = generate(video_services, prompt="a blue square", seed=44, frames=4, fps=8, output_formats=["webp"])
    [webp] = made["files"]
    read = read_video_info({"video": webp})
    sent = send_infotext(video_services, {"pnginfo.infotext": read["infotext"]})
    assert sent["tabs"]["selected"] == "video" and WARNING not in sent, sent
    values = tab_values(sent)
    assert (values["seed"], values["prompt"], values["frames"], values["fps"], values["model"]) == (
        44, "a blue square", 4, 8, "tiny-motion")
    again = generate(video_services, **{**values, "output_formats": ["webp"]})
    assert np.array_equal(frames(again["files"][0]), frames(webp))

    # a model this studio does not have leaves the dropdown alone and says so; nothing to read is a notice
    elsewhere = send_infotext(video_services, {"pnginfo.infotext": read["infotext"].replace(
        "Video model: tiny-motion", "Video model: wan-2.2-a14b")})
    assert "video.model" not in elsewhere and "wan-2.2-a14b" in elsewhere[WARNING]
    assert elsewhere["video.seed"] == 44
    assert set(send_infotext(video_services, {"pnginfo.infotext": "just a prompt"})) == {WARNING}


def test_an_image_to_video_job_brings_its_image_back_and_image_jobs_have_no_reuse(video_services):
    from modules.image.request import GenerationRequest

    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    job = video_services.queue.submit(VideoRequest(model="tiny-svd", init_image=picture, width=64, height=64,
                                                   frames=2, steps=1, seed=5, motion_bucket_id=90))
    video_services.queue.wait(job, 300)
    shown = newest_row(video_services)
    assert shown["selected_job"] == job.id and probe(shown["clip"]["value"]).frames == 2
    values = tab_values(reuse_job(video_services, {"queue.selected_job": job.id}))
    assert values["model"] == "tiny-svd" and values["checkpoint"] == "Automatic" and values["motion_bucket_id"] == 90
    assert np.array_equal(np.asarray(values["init_image"]), np.asarray(picture))

    image_job = video_services.queue.submit(GenerationRequest(prompt="a circle", steps=1, width=64, height=64))
    video_services.queue.wait(image_job, 120)
    shown = newest_row(video_services)
    assert not shown["reuse_video"]["visible"] and not shown["clip"]["visible"] and len(shown["gallery"]) == 1
    assert set(reuse_job(video_services, {"queue.selected_job": image_job.id})) == {WARNING}


@pytest.mark.parametrize(("values", "field"), [
    ({"model": "tiny-sd1"}, "model"),  # an image checkpoint is not a video model
    ({"model": "tiny-wan", "checkpoint": "tiny-sd1"}, "checkpoint"),  # a whole pipeline takes no checkpoint
    ({"model": "tiny-svd", "init_image": "broken.png"}, "init_image"),  # a corrupt upload
    ({"init_video": "broken.mp4"}, "init_video"),
    ({"frames": 1000}, "frames"),
    ({"width": 4096}, "width"),
    ({"output_formats": ["avi"]}, "output_format"),
])
def test_bad_input_in_the_tab_is_a_notice_naming_the_field_and_the_worker_goes_on(video_services, tmp_path, values,
                                                                                   field):
    for name in ("init_image", "init_video"):
        if name in values:
            broken = tmp_path / values[name]
            broken.write_bytes(b"\x00 this is not a picture nor a clip")
            values = {**values, name: str(broken)}
    before = len(video_services.queue.jobs())
    [notice] = list(video_events(video_services, {**TAB, "prompt": "x", **values}))
    assert field in notice["status"] and "sf-error" in notice["status"] and WARNING in notice, notice
    if values.get("model") == "tiny-sd1":
        assert "is an image checkpoint, not a video model" in notice["status"]
    assert len(video_services.queue.jobs()) == before  # nothing queued
    after = generate(video_services, prompt="after", frames=2, steps=1, seed=1)
    assert probe(after["video"]).frames == 2


def test_defaults_follow_a_model_pick_and_a_refresh_that_replaces_the_model_not_a_reuse(video_services):
    from app.ui.video_tab import fill_defaults, refresh_models, video_models

    kept = refresh_models(video_services, {"model": "tiny-svd", "checkpoint": "Automatic"})
    assert set(kept) == {"model", "checkpoint"}  # same model: the shape fields stay as the user (or a reuse) set them
    replaced = refresh_models(video_services, {"model": "a-deleted-model", "checkpoint": "Automatic"})
    first = video_models(video_services)[0][1]
    brought = fill_defaults(video_services, {"model": first, "checkpoint": "Automatic"})
    assert replaced["model"]["value"] == first and brought and {name: replaced[name] for name in brought} == brought
