"""The Video tab's handlers on real services and tiny models: choosing a model fills its family's defaults, a
Generate click follows the job to a playable clip with its parameters, a bad field is a notice naming it, and
PNG info reads a clip's parameters back."""

from __future__ import annotations

import pytest

from app.ui.video_tab import fill_defaults, video_events
from tests.helpers import running_services


@pytest.fixture(scope="module")
def video_services(tmp_path_factory, video_model_store, one_thread):
    with running_services(tmp_path_factory.mktemp("video-ui"), video_model_store,
                          default_ckpt="tiny-sd1") as services:
        yield services


def test_the_tab_builds_with_the_default_motion_model_and_its_checkpoints_size(video_services):
    from app.ui import build_layout

    build_layout(video_services)
    assert fill_defaults(video_services, {"model": "tiny-motion", "checkpoint": "Automatic"}) == {
        "width": 64, "height": 64, "frames": 16, "fps": 8, "steps": 25, "cfg_scale": 7.5, "motion_end": 1.0}
    assert fill_defaults(video_services, {"model": "tiny-svd", "checkpoint": "Automatic"}) == {
        "width": 1024, "height": 576, "frames": 14, "fps": 7, "steps": 25, "cfg_scale": 3.0,
        "motion_end": 1.0}
    assert fill_defaults(video_services, {"model": "tiny-wan", "checkpoint": "Automatic"})["frames"] == 81


def test_generate_follows_the_job_to_a_clip_and_png_info_reads_it_back(video_services):
    from app.ui.pnginfo import read_video_info
    from modules.video.encode import probe

    values = {"model": "tiny-motion", "checkpoint": "Automatic", "prompt": "a yellow star", "width": 64,
              "height": 64, "frames": 4, "fps": 8, "steps": 2, "cfg_scale": 7, "seed": 21, "sampler": "Euler a",
              "output_formats": ["mp4", "gif"], "save_frames": False, "motion_bucket_id": 127,
              "noise_aug_strength": 0.02, "decode_chunk_size": 0, "strength": 0.6}
    updates = list(video_events(video_services, values))
    final = updates[-1]
    assert final["video"].endswith(".mp4") and len(final["files"]) == 2, final
    assert probe(final["video"]).frames == 4 and "Sampler: Euler a" in final["infotext"]
    assert "4 frames at 8 fps" in final["status"] and "seed 21" in final["status"]
    read = read_video_info({"video": final["files"][1]})  # the GIF
    assert read["parameters"]["Seed"] == "21" and read["parameters"]["Prompt"] == "a yellow star"
    assert read["parameters"]["Frames"] == "4" and read["parameters"]["Video model"] == "tiny-motion"


def test_the_motion_end_slider_reaches_the_clip_and_comes_back_from_its_parameters(video_services):
    from app.ui.video_reuse import fields_from_infotext
    from modules.image.infotext import parse_infotext

    values = {"model": "tiny-motion", "checkpoint": "Automatic", "prompt": "a red circle moving up", "width": 64,
              "height": 64, "frames": 4, "fps": 8, "steps": 4, "cfg_scale": 7, "seed": 3, "motion_end": 0.5,
              "output_formats": ["mp4"]}
    final = list(video_events(video_services, values))[-1]
    assert "Motion end: 0.5" in final["infotext"], final
    assert fields_from_infotext(parse_infotext(final["infotext"]))["motion_end"] == 0.5
    # a clip made with the adapter in every step says nothing, and reusing it sets the slider back to 1
    whole = list(video_events(video_services, {**values, "motion_end": 1.0}))[-1]
    assert "Motion end" not in whole["infotext"]
    assert fields_from_infotext(parse_infotext(whole["infotext"]))["motion_end"] == 1.0


def test_a_bad_field_is_a_notice_naming_it(video_services):
    [update] = list(video_events(video_services, {"model": "tiny-svd", "prompt": "no image", "frames": 4,
                                                  "output_formats": ["mp4"]}))
    assert "init_image" in update["status"] and "_warning" in update
