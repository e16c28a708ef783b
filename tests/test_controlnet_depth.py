"""The depth and normal preprocessors on tiny depth models saved as the Hugging Face folders a user puts under
``models/ControlNet/annotators/``: they run when the folder is there, answer the extension's image conventions,
are deterministic, keep loaded models in a small cache, and name the folder to put when it is not there."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.controlnet import annotators
from modules.controlnet.preprocessors import PreprocessorNeedsModel, check_runnable, find, module_detail
from modules.controlnet.preprocessors import run as run_preprocessor
from modules.errors import RequestError
from tests.tiny_depth import save_tiny_depth_anything, save_tiny_dpt, save_tiny_zoedepth

pytest.importorskip("cv2")
pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def fresh_cache():
    annotators.clear_cache()
    yield
    annotators.clear_cache()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder with a tiny hybrid DPT as ``dpt-hybrid-midas``, a tiny Depth Anything as
    ``depth-anything-small`` and a tiny ZoeDepth as ``zoedepth-nyu``; ``depth-anything-v2-*`` is left out."""
    root = tmp_path_factory.mktemp("annotators") / "models"
    save_tiny_dpt(root)
    save_tiny_depth_anything(root)
    save_tiny_zoedepth(root)
    return root


def scene(width: int = 160, height: int = 96) -> Image.Image:
    """A bright disc on a darker gradient: something for a depth model to look at."""
    ramp = np.tile(np.linspace(30, 120, width, dtype=np.float32), (height, 1))
    image = Image.fromarray(np.stack([ramp, ramp * 0.8, ramp * 0.6], axis=2).astype(np.uint8))
    ImageDraw.Draw(image).ellipse((40, 20, 100, 80), fill=(230, 200, 180))
    return image


@pytest.mark.parametrize("module", ["depth_midas", "depth", "depth_anything", "depth_zoe"])
def test_depth_runs_from_its_folder_as_grey_at_the_working_size(models, module):
    out = run_preprocessor(module, scene(160, 96), resolution=96, models_dir=models)
    assert out.mode == "RGB" and out.size == (160, 96)  # the shorter side at the resolution, the aspect kept
    pixels = np.asarray(out)
    assert (pixels[:, :, 0] == pixels[:, :, 1]).all() and (pixels[:, :, 1] == pixels[:, :, 2]).all()
    assert pixels.min() == 0 and pixels.max() == 255  # stretched: the farthest black, the nearest white
    again = run_preprocessor(module, scene(160, 96), resolution=96, models_dir=models)
    assert np.array_equal(pixels, np.asarray(again))  # deterministic


def test_the_resolution_sets_the_control_image_size(models):
    assert run_preprocessor("depth_anything", scene(96, 160), resolution=64, models_dir=models).size == (64, 107)
    assert run_preprocessor("depth_midas", scene(160, 96), resolution=128, models_dir=models).size == (213, 128)


def test_normal_midas_is_flat_in_the_background_per_threshold_a(models):
    image = scene(128, 96)
    out = np.asarray(run_preprocessor("normal_midas", image, resolution=96, models_dir=models))
    assert out.shape == (96, 128, 3)
    flat = (out == [127, 127, 255]).all(axis=2)  # pointing at the viewer: (0, 0, 1)
    assert flat.any() and not flat.all()  # the default threshold (0.4) flattens the far part only
    everything = np.asarray(run_preprocessor("normal_map", image, 96, threshold_a=1.0, models_dir=models))
    assert (everything == [127, 127, 255]).all(axis=2).mean() > 0.99  # all but the nearest pixel is background
    nothing = np.asarray(run_preprocessor("normal_map", image, 96, threshold_a=0.0, models_dir=models))
    assert (nothing == [127, 127, 255]).all(axis=2).mean() < flat.mean()
    assert np.array_equal(out, np.asarray(run_preprocessor("normal_map", image, 96, -1, models_dir=models)))


def test_depth_image_is_near_white_far_black():
    inverse_depth = np.tile(np.linspace(0.5, 3.0, 64, dtype=np.float32), (8, 1))  # nearer to the right
    image = annotators.depth_image(inverse_depth)
    assert image[0, 0] == 0 and image[0, -1] == 255 and (np.diff(image[0].astype(int)) >= 0).all()
    assert not annotators.depth_image(np.full((4, 4), 2.0, dtype=np.float32)).any()  # a flat estimate: no NaN


def test_metric_depth_image_is_near_white_and_saturates_the_far_background():
    metres = np.tile(np.linspace(1.0, 10.0, 100, dtype=np.float32), (4, 1))  # farther to the right
    image = annotators.metric_depth_image(metres)[0]
    assert image[0] == 255 and image[-1] == 0 and (np.diff(image.astype(int)) <= 0).all()
    assert (image[86:] == 0).all()  # beyond the 85th percentile: black
    assert not annotators.metric_depth_image(np.ones((4, 4), dtype=np.float32)).any()


def test_normal_image_leans_with_the_depth_gradient_and_is_flat_behind_the_threshold():
    inverse_depth = np.tile(np.linspace(0.0, 64.0, 64, dtype=np.float32), (16, 1))  # a plane, nearer to the right
    normal = annotators.normal_image(inverse_depth, background_threshold=0.5)
    assert (normal[4:12, 2:28] == [127, 127, 255]).all()  # the far half: background, flat
    leaning = normal[4:12, 36:60].reshape(-1, 3)
    assert (leaning[:, 0] > 160).all() and (np.abs(leaning[:, 1].astype(int) - 127) <= 1).all()
    assert (leaning == leaning[0]).all()  # a plane has one normal


def test_without_the_folder_the_error_names_it_and_where_to_get_it(tmp_path):
    with pytest.raises(PreprocessorNeedsModel) as caught:
        run_preprocessor("depth_midas", scene(), models_dir=tmp_path, field_name="controlnet[0].module")
    assert caught.value.field == "controlnet[0].module"
    assert caught.value.missing == ("models/ControlNet/annotators/dpt-hybrid-midas/",)
    assert "models/ControlNet/annotators/dpt-hybrid-midas/ is missing (or dpt-large/)" in caught.value.message
    assert "Intel/dpt-hybrid-midas" in caught.value.message
    with pytest.raises(PreprocessorNeedsModel) as anything:
        check_runnable("depth_anything_v2", "module", tmp_path)
    assert anything.value.missing == ("models/ControlNet/annotators/depth-anything-v2-small/",)
    assert "depth-anything/Depth-Anything-V2-Small-hf" in anything.value.message
    with pytest.raises(PreprocessorNeedsModel) as zoe:
        check_runnable("depth_zoe", "module", tmp_path)
    assert "models/ControlNet/annotators/zoedepth-nyu/ is missing (or zoedepth-nyu-kitti/)" in zoe.value.message


def test_the_extensions_own_file_is_named_as_unreadable(tmp_path):
    single = tmp_path / "ControlNet" / "annotators" / "dpt_hybrid-midas-501f0c75.pt"
    single.parent.mkdir(parents=True)
    single.write_bytes(b"weights")
    with pytest.raises(PreprocessorNeedsModel) as caught:
        run_preprocessor("normal_midas", scene(), models_dir=tmp_path)
    assert caught.value.missing == ("models/ControlNet/annotators/dpt-hybrid-midas/",)
    assert ("models/ControlNet/annotators/dpt_hybrid-midas-501f0c75.pt is the extension's own file, which this "
            "studio cannot read: put the folder instead") in caught.value.message


def test_an_empty_folder_is_missing_and_a_broken_one_says_it_cannot_be_loaded(tmp_path):
    folder = tmp_path / "ControlNet" / "annotators" / "dpt-hybrid-midas"
    folder.mkdir(parents=True)
    assert not find("depth").available_in(tmp_path)  # no config.json: not a model folder
    (folder / "config.json").write_text('{"model_type": "dpt"}')  # no weights
    assert find("depth").available_in(tmp_path)
    with pytest.raises(RequestError) as caught:
        run_preprocessor("depth", scene(), models_dir=tmp_path)
    assert caught.value.field == "module"
    assert "the depth model in models/ControlNet/annotators/dpt-hybrid-midas/ cannot be loaded" in caught.value.message


def test_the_second_accepted_folder_is_used_when_the_first_is_absent(tmp_path):
    save_tiny_dpt(tmp_path, "dpt-large", hybrid=False)
    assert find("depth").model_folder(tmp_path) == tmp_path / "ControlNet" / "annotators" / "dpt-large"
    assert run_preprocessor("depth", scene(), resolution=64, models_dir=tmp_path).size == (107, 64)


def test_module_detail_and_the_ui_follow_the_folders(models, tmp_path):
    from app.ui.controlnet_preprocessor import module_choices

    present = module_detail(models_dir=models)
    assert present["depth"]["available"] and present["normal_map"]["available"]
    assert present["depth_anything"]["available"] and not present["depth_anything_v2"]["available"]
    assert present["depth_zoe"]["available"] and present["depth_zoe"]["accepts"] == [
        "models/ControlNet/annotators/zoedepth-nyu/", "models/ControlNet/annotators/zoedepth-nyu-kitti/"]
    assert not present["openpose"]["available"] and not present["normal_bae"]["available"]
    assert [s["name"] for s in present["normal_map"]["sliders"]] == ["Resolution", "Normal Background Threshold"]
    assert present["normal_map"]["sliders"][1] == {"name": "Normal Background Threshold", "value": 0.4, "min": 0.0,
                                                   "max": 1.0, "step": 0.01}
    assert not module_detail(models_dir=tmp_path)["depth"]["available"]
    assert {"depth_midas", "normal_midas", "depth_anything"} <= set(module_choices(models))
    assert "depth_anything_v2" not in module_choices(models) and "depth_midas" not in module_choices(tmp_path)


def test_loaded_models_are_cached_by_folder_and_mtime(tmp_path):
    first = save_tiny_dpt(tmp_path, "dpt-hybrid-midas")
    model, _ = annotators.load_depth_model(first)
    assert annotators.load_depth_model(first)[0] is model  # loaded once
    config = first / "config.json"
    stamp = config.stat().st_mtime + 10
    os.utime(config, (stamp, stamp))  # the user replaced the model
    reloaded, _ = annotators.load_depth_model(first)
    assert reloaded is not model
    for seed, name in enumerate(("dpt-large", "third"), start=1):
        annotators.load_depth_model(save_tiny_dpt(tmp_path, name, seed, hybrid=False))
    assert len(annotators._cache) == annotators.CACHE_SIZE  # the least recently used one was dropped
    assert annotators.load_depth_model(first)[0] is not reloaded


def test_importing_the_preprocessors_loads_no_model_library():
    code = ("import sys, modules.controlnet.preprocessors, modules.controlnet.annotators, app.api.controlnet; "
            "print('transformers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.stdout.strip() == "False"


def test_a_generation_units_preprocessing_runs_the_depth_model_and_names_the_unit_when_missing(models, tmp_path):
    """What a txt2img job with a depth unit does before the ControlNet reads its image (pixel-perfect: the
    output's size)."""
    from modules.controlnet.apply import preprocess
    from modules.controlnet.units import ControlNetUnit

    unit = ControlNetUnit(model="control_depth", module="depth_midas", pixel_perfect=True)
    control = preprocess(unit, scene(160, 96), (80, 48), "controlnet[0]", models)
    assert control.size == (80, 48) and control.mode == "RGB"
    with pytest.raises(PreprocessorNeedsModel) as caught:
        check_runnable(unit.module, "controlnet[0].module", tmp_path)
    assert caught.value.field == "controlnet[0].module"
    with pytest.raises(RequestError) as failed:
        preprocess(unit, scene(), (64, 64), "controlnet[1]", tmp_path)
    assert failed.value.field == "controlnet[1].module" and "dpt-hybrid-midas/ is missing" in failed.value.message
