"""The model-free ControlNet preprocessors: what a user would check on the control image they get back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.controlnet.preprocessors import (
    PREPROCESSORS,
    PreprocessorNeedsModel,
    check_runnable,
    find,
    module_detail,
    module_names,
)
from modules.controlnet.preprocessors import run as run_preprocessor
from modules.errors import RequestError

pytest.importorskip("cv2")

MODEL_FREE = [p.name for p in PREPROCESSORS.values() if p.model_free]


def white_square(size: int = 128, inset: int = 32) -> Image.Image:
    """A white square on black: its border is the only edge in the picture."""
    image = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(image).rectangle((inset, inset, size - inset - 1, size - inset - 1), fill="white")
    return image


def drawing(width: int = 160, height: int = 96) -> Image.Image:
    """Black strokes on white, as a user's sketch."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.line((10, 10, width - 10, height - 10), fill="black", width=3)
    draw.ellipse((20, 20, 70, 70), outline="black", width=2)
    return image


def noisy(size: int = 96, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def roughness(image: Image.Image) -> float:
    """Mean absolute difference between neighbouring pixels: lower is smoother."""
    pixels = np.asarray(image, dtype=np.float32)
    return float(np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean())


@pytest.mark.parametrize("name", MODEL_FREE)
def test_every_preprocessor_answers_rgb_at_the_resolution_rule(name):
    preprocessor = find(name)
    out = run_preprocessor(name, drawing(160, 96), resolution=192)
    assert out.mode == "RGB"
    if name == "tile_resample":  # keeps the size at its default rate of 1
        assert out.size == (160, 96)
    elif preprocessor.uses_resolution:  # the shorter side becomes the resolution, the aspect kept
        assert out.size == (320, 192)
    else:
        assert out.size == (160, 96)


def test_a_portrait_image_gets_its_width_set_by_the_resolution():
    assert run_preprocessor("canny", drawing(96, 160), resolution=64).size == (64, 107)


def test_canny_draws_the_square_border_and_nothing_inside_or_outside():
    out = np.asarray(run_preprocessor("canny", white_square(128, 32), resolution=128))
    edges = out[:, :, 0] > 0
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()  # grey, as RGB
    assert not edges[40:88, 40:88].any()  # inside the square
    assert not edges[:24].any() and not edges[104:].any() and not edges[:, :24].any() and not edges[:, 104:].any()
    for band in (edges[30:34, 40:88], edges[94:98, 40:88]):  # top and bottom sides: an edge in every column
        assert band.any(axis=0).all()
    for band in (edges[40:88, 30:34], edges[40:88, 94:98]):  # left and right sides: an edge in every row
        assert band.any(axis=1).all()


def test_canny_thresholds_come_from_threshold_a_and_b():
    """A faint square (grey 40 on black) has edges at the default thresholds only when they are low enough."""
    faint = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(faint).rectangle((16, 16, 47, 47), fill=(40, 40, 40))
    assert not np.asarray(run_preprocessor("canny", faint, 64, 250, 255)).any()
    assert np.asarray(run_preprocessor("canny", faint, 64, 10, 20)).any()


def test_invert_inverts():
    image = noisy(48)
    out = run_preprocessor("invert", image, resolution=512)
    assert (np.asarray(out) == 255 - np.asarray(image)).all()


def test_transparent_areas_count_as_white_background():
    sketch = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(sketch).line((0, 16, 31, 16), fill=(0, 0, 0, 255), width=2)
    out = np.asarray(run_preprocessor("invert", sketch))
    assert out[0, 0].tolist() == [0, 0, 0]  # transparent -> white -> inverted to black
    assert out[16, 10].tolist() == [255, 255, 255]  # the black stroke -> white line


@pytest.mark.parametrize("name", ["lineart_standard", "scribble_xdog"])
def test_line_preprocessors_answer_white_lines_on_black(name):
    out = np.asarray(run_preprocessor(name, drawing(160, 96), resolution=96))[:, :, 0]
    assert out[48, 80] > 64  # on the diagonal stroke, from (10, 10) to (150, 86)
    assert out[85, 20] == 0 and out[5, 150] == 0  # the white background far from any stroke
    assert (out > 64).mean() < 0.1  # mostly black


def test_shuffle_is_deterministic_for_a_seed_and_keeps_the_colours():
    stripes = np.zeros((256, 256, 3), dtype=np.uint8)
    palette = np.array([[230, 20, 20], [20, 200, 40], [30, 40, 220]], dtype=np.uint8)
    for index in range(256 // 8):
        stripes[:, index * 8:(index + 1) * 8] = palette[index % 3]
    image = Image.fromarray(stripes)
    first = np.asarray(run_preprocessor("shuffle", image, resolution=256, seed=7))
    assert (first == np.asarray(run_preprocessor("shuffle", image, resolution=256, seed=7))).all()
    assert (first != np.asarray(run_preprocessor("shuffle", image, resolution=256, seed=8))).any()
    assert (first != stripes).any()  # moved around
    nearest = np.argmin(((first[:, :, None, :].astype(int) - palette[None, None].astype(int)) ** 2).sum(-1), axis=-1)
    shares = np.bincount(nearest.ravel(), minlength=3) / nearest.size
    original = np.bincount([i % 3 for i in range(32)], minlength=3) / 32
    assert np.abs(shares - original).max() < 0.08
    assert np.abs(first.reshape(-1, 3).mean(0) - stripes.reshape(-1, 3).mean(0)).max() < 12


def test_blur_and_tile_make_the_image_smoother():
    image = noisy(96)
    blurred = run_preprocessor("blur_gaussian", image, resolution=96)
    assert roughness(blurred) < roughness(image) / 4
    assert roughness(run_preprocessor("blur_gaussian", image, 96, threshold_a=0.5)) > roughness(blurred)
    tile = run_preprocessor("tile_resample", image, threshold_a=4)
    assert tile.size == (24, 24)
    assert roughness(tile.resize(image.size, Image.BICUBIC)) < roughness(image) / 2


def test_threshold_whitens_what_is_brighter_than_it():
    ramp = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (64, 1))).convert("RGB")
    out = np.asarray(run_preprocessor("threshold", ramp, resolution=64, threshold_a=100))
    assert out.shape == (64, 256, 3)
    assert (out[:, :95] == 0).all() and (out[:, 105:] == 255).all()


def test_thresholds_out_of_range_are_clamped_and_negative_means_default():
    image = drawing()
    assert np.array_equal(np.asarray(run_preprocessor("canny", image, 96, -1, -1)),
                          np.asarray(run_preprocessor("canny", image, 96, 100, 200)))
    assert np.array_equal(np.asarray(run_preprocessor("scribble_xdog", image, 96, 640)),
                          np.asarray(run_preprocessor("scribble_xdog", image, 96, 64)))


def test_unknown_module_names_the_field_and_lists_the_known_ones():
    with pytest.raises(RequestError) as caught:
        run_preprocessor("no_such_thing", drawing(), field_name="controlnet[0].module")
    assert caught.value.field == "controlnet[0].module"
    assert "unknown preprocessor 'no_such_thing'" in caught.value.message and "canny" in caught.value.message


def test_model_based_preprocessor_names_the_missing_file(tmp_path):
    with pytest.raises(PreprocessorNeedsModel) as caught:
        run_preprocessor("openpose", drawing(), models_dir=tmp_path)
    assert caught.value.field == "module"
    assert caught.value.missing == ("models/ControlNet/annotators/body_pose_model.pth",)
    assert "models/ControlNet/annotators/body_pose_model.pth is missing" in caught.value.message
    present = tmp_path / "ControlNet" / "annotators" / "body_pose_model.pth"
    present.parent.mkdir(parents=True)
    present.write_bytes(b"weights")
    with pytest.raises(PreprocessorNeedsModel) as again:  # there, but not runnable yet: it says so
        run_preprocessor("openpose", drawing(), models_dir=tmp_path)
    assert again.value.missing == () and "cannot run it yet" in again.value.message


@pytest.mark.parametrize(("sent", "meant"), [
    ("Canny", "canny"), (" CANNY ", "canny"), ("invert (from white bg & black line)", "invert"),
    ("lineart_standard (from white bg & black line)", "lineart_standard"), ("depth_midas", "depth"),
    ("scribble", "invert"), ("fake_scribble", "scribble_hed"), ("", "none"), (None, "none"),
])
def test_aliases(sent, meant):
    assert find(sent).name == meant


def test_check_runnable_refuses_model_based_ones_before_anything_runs(tmp_path):
    assert check_runnable("Canny").name == "canny"
    with pytest.raises(PreprocessorNeedsModel) as caught:
        check_runnable("openpose_full", "controlnet[1].module", tmp_path)
    assert caught.value.field == "controlnet[1].module" and len(caught.value.missing) == 3
    with pytest.raises(RequestError):
        check_runnable("nope")


def test_a_pixel_perfect_resolution_below_the_slider_minimum_still_runs():
    assert run_preprocessor("canny", drawing(96, 48), resolution=32).size == (64, 32)


def test_resolution_out_of_range_names_processor_res():
    with pytest.raises(RequestError) as caught:
        run_preprocessor("canny", drawing(), resolution=4096)
    assert caught.value.field == "processor_res"
    with pytest.raises(RequestError):  # a long panorama whose control image would be enormous
        run_preprocessor("canny", Image.new("RGB", (2000, 100)), resolution=2048)


def test_module_list_and_detail_follow_the_extension_shape():
    names = module_names()
    assert names[0] == "none" and {"canny", "invert", "depth", "openpose_full"} <= set(names)
    assert "invert (from white bg & black line)" in module_names(alias_names=True)
    detail = module_detail()
    assert set(detail) == set(names)
    canny = detail["canny"]
    assert canny["model_free"] is False and canny["available"] is True
    assert [s["name"] for s in canny["sliders"]] == ["Resolution", "Low Threshold", "High Threshold"]
    assert canny["sliders"][1] == {"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1}
    assert detail["blur_gaussian"]["sliders"][1]["value"] == 9.0
    assert detail["tile_resample"]["sliders"] == [{"name": "Down Sampling Rate", "value": 1.0, "min": 1.0,
                                                   "max": 8.0, "step": 0.01}]
    assert detail["depth"]["available"] is False
    assert detail["depth"]["requires"] == ["models/ControlNet/annotators/dpt-hybrid-midas/"]
    assert detail["depth"]["accepts"] == ["models/ControlNet/annotators/dpt-hybrid-midas/",
                                          "models/ControlNet/annotators/dpt-large/"]
    assert detail["openpose"]["requires"] == ["models/ControlNet/annotators/body_pose_model.pth"]
    assert "depth_midas" in module_detail(alias_names=True)


# -- the UI part: the handlers are plain functions ------------------------------------------------------------------


def test_ui_sliders_follow_the_chosen_preprocessor():
    from app.ui.controlnet_preprocessor import module_choices, slider_updates

    assert module_choices()[0] == "none" and "invert (from white bg & black line)" in module_choices()
    assert "depth_midas" not in module_choices()  # listed by the API, not offered where it could only fail
    resolution, low, high = slider_updates("canny")
    assert resolution["visible"] and resolution["value"] == 512
    assert (low["label"], low["minimum"], low["maximum"], low["value"]) == ("Low Threshold", 1, 255, 100)
    assert high["label"] == "High Threshold" and high["value"] == 200
    resolution, sigma, hidden = slider_updates("blur_gaussian")
    assert sigma["label"] == "Sigma" and sigma["value"] == 9.0 and hidden["visible"] is False
    assert all(update["visible"] is False for update in slider_updates("invert (from white bg & black line)"))


def test_ui_preview_shows_the_control_image_or_warns_naming_the_field(monkeypatch):
    import app.ui.controlnet_preprocessor as ui

    warnings: list[str] = []
    monkeypatch.setattr(ui.gr, "Warning", warnings.append)
    shown = ui.preview("canny", np.asarray(white_square(64, 16)), 64, 100, 200)
    assert shown.size == (64, 64) and np.asarray(shown).any()
    assert ui.preview("canny", None, 64, 100, 200) is None and warnings[-1].startswith("image:")
    assert ui.preview("nope", white_square(64, 16), 64, 0, 0) is None and warnings[-1].startswith("module:")


def test_ui_controls_build_inside_blocks():
    import gradio as gr

    from app.ui.controlnet_preprocessor import build_preprocessor_controls

    with gr.Blocks():
        image = gr.Image(type="pil")
        controls = build_preprocessor_controls(image)
    assert controls.module.value == "none" and controls.threshold_a.visible is False
