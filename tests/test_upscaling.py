"""The upscaling engine on real spandrel models: three architectures with random weights, saved as users get them.

Each model is tiny (a few thousand to a few hundred thousand weights) so a 40x24 picture upscales in milliseconds,
but it is built from spandrel's own architecture classes, saved as ``.pth`` and ``.safetensors``, found by the
registry and recognised by spandrel exactly as a downloaded model would be.
"""

from __future__ import annotations

import gc
import math
import os
import pickle
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules.errors import RequestError
from modules.upscaling import (
    TileOptions,
    UpscaleInterrupted,
    UpscalerLoadError,
    UpscalerModels,
    UpscalerRegistry,
    check_scale,
    default_tile_options,
    output_size,
    pick_dtype,
    plan_passes,
    scale_from_name,
    upscale,
    upscale_blended,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# name -> (folder, spandrel's architecture name, scale)
MODELS = {
    "4x-TinyCompact": ("RealESRGAN", "RealESRGAN Compact", 4),
    "2x-TinyRRDB": ("ESRGAN", "ESRGAN", 2),
    "2x-TinySPAN": ("ESRGAN", "SPAN", 2),
}
UNTILED = TileOptions(tile_size=0, overlap=0)  # the model sees the picture exactly as given


def _calibrated(model: torch.nn.Module, last_conv: torch.nn.Conv2d) -> torch.nn.Module:
    """Rescale the last (linear) layer so the random model's output sits around 0.5 with a spread of 0.2.

    Untrained ESRGAN/SPAN weights otherwise produce an all-black or all-saturated picture, where seams and wrong
    channel orders would go unnoticed.
    """
    model.eval()
    probe = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(probe)
        factor = 0.2 / out.std()
        last_conv.weight.mul_(factor)
        last_conv.bias.sub_(out.mean()).mul_(factor).add_(0.5)
    return model


def _build(name: str) -> dict[str, torch.Tensor]:
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(0)
    if name == "4x-TinyCompact":
        model = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4)
    elif name == "2x-TinyRRDB":
        model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2)
        _calibrated(model, model.model[-1])
    else:
        model = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2)
        _calibrated(model, model.upsampler[0])
    return {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}


def _save_half(source: Path, target: Path) -> None:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """models/ in A1111 layout: each model as .pth and (in a sub-folder) .safetensors, plus broken and stray files."""
    root = tmp_path_factory.mktemp("upscalers") / "models"
    for name, (folder, _, _) in MODELS.items():
        state = _build(name)
        (root / folder / "safetensors").mkdir(parents=True, exist_ok=True)
        torch.save(state, root / folder / f"{name}.pth")
        save_file(state, root / folder / "safetensors" / f"{name}-st.safetensors")
    esrgan = root / "ESRGAN"
    _save_half(esrgan / "safetensors" / "2x-TinyRRDB-st.safetensors", esrgan / "broken-half.safetensors")
    _save_half(esrgan / "2x-TinyRRDB.pth", esrgan / "broken-half.pth")
    (esrgan / "notes.pth").write_text("download the real model from the link in the README\n" * 20)
    save_file({"lora_unet_down.alpha": torch.ones(1), "lora_unet_down.lora_up.weight": torch.zeros(4, 2)},
              esrgan / "not-an-upscaler.safetensors")
    (esrgan / ".hidden.pth").write_bytes(b"")
    (esrgan / ".cache").mkdir()
    (esrgan / ".cache" / "4x-cached.pth").write_bytes(b"")
    (esrgan / "README.txt").write_text("not listed")
    (root / "Stable-diffusion").mkdir()
    (root / "Stable-diffusion" / "sd15.safetensors").write_bytes(b"")
    return root


@pytest.fixture
def registry(models_dir) -> UpscalerRegistry:
    return UpscalerRegistry(models_dir)


@pytest.fixture
def models() -> UpscalerModels:
    return UpscalerModels("cpu", None, max_loaded=3)


def _picture(width: int = 40, height: int = 24, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth picture with some texture: blurred noise plus fine noise, like a photo more than static."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).resize((width, height),
                                                                                     Image.Resampling.BICUBIC)
    fine = rng.integers(-20, 21, (height, width, 3))
    image = Image.fromarray(np.clip(np.asarray(coarse, dtype=np.int64) + fine, 0, 255).astype(np.uint8))
    if mode == "RGBA":
        alpha = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
        image.putalpha(Image.fromarray(alpha))
    return image


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _raw_model_output(models: UpscalerModels, registry: UpscalerRegistry, name: str, image: Image.Image,
                      passes: int = 1) -> np.ndarray:
    """What spandrel's descriptor itself makes of the picture, rounded to 8 bits: the reference for the engine."""
    loaded = models.get(registry.find(name))
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    for _ in range(passes):
        tensor = loaded.descriptor(tensor)
    return (tensor[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# --- registry ------------------------------------------------------------------------------------------------------

def test_registry_lists_built_ins_first_then_model_files_by_folder(registry):
    infos = registry.list()
    names = [info.name for info in infos]
    assert names[:3] == ["None", "Lanczos", "Nearest"]
    assert all(info.path is None and info.builtin for info in infos[:3])
    # ESRGAN's folder before RealESRGAN's; sub-folders searched; hidden files/folders, other suffixes and other
    # model folders left out
    assert names[3:] == ["2x-TinyRRDB", "2x-TinySPAN", "broken-half", "ESRGAN/broken-half.safetensors",
                         "not-an-upscaler",
                         "notes", "2x-TinyRRDB-st", "2x-TinySPAN-st", "4x-TinyCompact", "4x-TinyCompact-st"]
    by_name = {info.name: info for info in infos}
    compact = by_name["4x-TinyCompact-st"]
    assert compact.folder == "RealESRGAN" and compact.scale == 4
    assert compact.path.name == "4x-TinyCompact-st.safetensors" and compact.path.is_file()
    assert compact.display_path == "models/RealESRGAN/safetensors/4x-TinyCompact-st.safetensors"
    assert by_name["notes"].scale is None


def test_registry_sees_files_added_and_removed_while_running(tmp_path):
    registry = UpscalerRegistry(tmp_path / "models")
    assert registry.names() == ["None", "Lanczos", "Nearest"]  # no folders yet: built-ins only
    (tmp_path / "models" / "HAT").mkdir(parents=True)
    model = tmp_path / "models" / "HAT" / "HAT-L_SRx4_ImageNet.safetensors"
    model.write_bytes(b"")
    assert registry.find("hat-l_srx4_imagenet").scale == 4
    model.unlink()
    with pytest.raises(RequestError):
        registry.find("HAT-L_SRx4_ImageNet")


def test_find_matches_any_case_and_file_names_and_names_the_choices_when_unknown(registry):
    assert registry.find("2X-tinyrrdb").path.name == "2x-TinyRRDB.pth"
    assert registry.find("2x-TinyRRDB-st.safetensors").name == "2x-TinyRRDB-st"
    assert registry.find("lanczos").builtin
    with pytest.raises(RequestError) as caught:
        registry.find("R-ESRGAN 4x+")
    assert caught.value.field == "upscaler"
    assert "unknown upscaler 'R-ESRGAN 4x+'" in str(caught.value)
    assert "Lanczos" in caught.value.message and "4x-TinyCompact" in caught.value.message


@pytest.mark.parametrize(("stem", "scale"), [
    ("4x-UltraSharp", 4), ("4x_NMKD-Siax_200k", 4), ("2xNomosUni_span_multijpg", 2), ("RealESRGAN_x2plus", 2),
    ("realesr-general-x4v3", 4), ("HAT-L_SRx4_ImageNet-pretrain", 4), ("DAT_x3", 3), ("1x-ITF-SkinDiffDetail", 1),
    ("ESRGAN", None), ("max2000", None)])
def test_scale_is_read_from_the_usual_file_names(stem, scale):
    assert scale_from_name(stem) == scale


# --- loading and running each architecture -------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_each_architecture_loads_from_pth_and_safetensors_and_upscales_as_spandrel_does(registry, models, name):
    folder, architecture, scale = MODELS[name]
    image = _picture()
    results = []
    for variant in (name, f"{name}-st"):
        loaded = models.get(registry.find(variant))
        assert (loaded.architecture, loaded.scale, loaded.dtype) == (architecture, scale, torch.float32)
        result = upscale(image, registry.find(variant), scale=scale, models=models, tile=UNTILED)
        assert result.size == (40 * scale, 24 * scale) and result.mode == "RGB"
        results.append(_pixels(result))
    # both files hold the same weights, and the engine feeds the model the picture as spandrel expects it
    assert np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], _raw_model_output(models, registry, name, image))
    # ... and the model really ran: it is not a Lanczos resize
    lanczos = _pixels(image.resize((40 * scale, 24 * scale), Image.Resampling.LANCZOS))
    assert np.abs(results[0] - lanczos).mean() > 5


def test_a_scale_beyond_the_model_runs_it_again_then_resizes_exactly(registry, models):
    image = _picture()
    result = upscale(image, registry.find("2x-TinyRRDB"), scale=3, models=models, tile=UNTILED)
    assert result.size == (120, 72)
    twice = Image.fromarray(_raw_model_output(models, registry, "2x-TinyRRDB", image, passes=2))
    assert twice.size == (160, 96)
    assert np.array_equal(_pixels(result), _pixels(twice.resize((120, 72), Image.Resampling.LANCZOS)))


def test_an_explicit_size_is_met_exactly_whatever_the_aspect(registry, models):
    for name in MODELS:
        result = upscale(_picture(), registry.find(name), size=(50, 37), models=models)
        assert result.size == (50, 37)


def test_passes_follow_a1111_and_stay_within_the_pixel_budget():
    assert [p.input_size for p in plan_passes((40, 24), (120, 72), 2)] == [(40, 24), (80, 48)]
    assert [p.input_size for p in plan_passes((40, 24), (320, 192), 2)] == [(40, 24), (80, 48), (160, 96)]
    assert [p.input_size for p in plan_passes((40, 24), (120, 72), 4)] == [(40, 24)]
    assert [p.input_size for p in plan_passes((40, 24), (20, 12), 4)] == [(40, 24)]  # the model still runs once
    assert [p.input_size for p in plan_passes((40, 24), (80, 48), 1)] == [(40, 24)]  # a 1x model runs once
    # a 4x model asked for 4.1x would make 16x; with a budget the second pass starts from a shrunk picture
    budget = 164 * 98
    shrunk = plan_passes((40, 24), (164, 98), 4, max_pixels=budget)
    assert len(shrunk) == 2 and shrunk[1].shrunk_from == (160, 96)
    assert shrunk[1].output_size[0] * shrunk[1].output_size[1] <= budget
    assert shrunk[1].output_size[0] >= 160  # still at least as large as the first pass made it


# --- tiling --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_tiled_output_matches_untiled_output(registry, models, name):
    image = _picture()
    info = registry.find(name)
    whole = _pixels(upscale(image, info, scale=MODELS[name][2], models=models, tile=TileOptions(0, 8)))
    counts = []
    tiled = _pixels(upscale(image, info, scale=MODELS[name][2], models=models, tile=TileOptions(20, 8),
                            on_progress=lambda done, total: counts.append(total)))
    assert counts and counts[-1] == len(counts) == 8  # 4 x 2 tiles of 20 px over the 48x32 padded picture
    difference = np.abs(tiled - whole)
    # measured: mean 0.006-0.015, max 1 (a rounding step); a cosine over the whole overlap gives up to 0.17 and 4,
    # plain averaging (as A1111 does) 2.0 and 62
    assert difference.mean() < 0.1 and difference.max() <= 2, (difference.mean(), difference.max())
    # the comparison does see seams: tiles that do not overlap leave them, well past the tolerance
    seams = np.abs(_pixels(upscale(image, info, scale=MODELS[name][2], models=models, tile=TileOptions(20, 0)))
                   - _pixels(upscale(image, info, scale=MODELS[name][2], models=models, tile=UNTILED)))
    assert seams.max() > 12


def test_tile_options_refuse_overlaps_that_leave_no_progress():
    with pytest.raises(RequestError) as caught:
        TileOptions(tile_size=32, overlap=16)
    assert caught.value.field == "tile_overlap"
    with pytest.raises(RequestError) as caught:
        TileOptions(tile_size=-1)
    assert caught.value.field == "tile_size"
    small = default_tile_options("cuda", 4 * 1024**3)
    large = default_tile_options("cuda", 24 * 1024**3)
    assert large.tile_size > small.tile_size and default_tile_options("cpu", None).tile_size > 0


def test_stopping_after_the_second_tile_interrupts_the_upscale(registry, models):
    seen: list[tuple[int, int]] = []
    with pytest.raises(UpscaleInterrupted) as caught:
        upscale(_picture(), registry.find("4x-TinyCompact"), scale=4, models=models, tile=TileOptions(16, 4),
                on_progress=lambda done, total: seen.append((done, total)), should_stop=lambda: len(seen) >= 2)
    total = 4 * 2  # the 44x28 padded picture in 16 px tiles overlapping by at least 4
    assert seen == [(1, total), (2, total)]
    assert (caught.value.done, caught.value.total) == (2, total)


# --- broken files --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "file", "reason"), [
    ("broken-half", "ESRGAN/broken-half.pth", "truncated, damaged or not a model file"),
    ("ESRGAN/broken-half.safetensors", "ESRGAN/broken-half.safetensors", "truncated, damaged or not a model file"),
    ("notes", "ESRGAN/notes.pth", "truncated, damaged or not a model file"),
    ("not-an-upscaler", "ESRGAN/not-an-upscaler.safetensors", "architecture is not one spandrel"),
])
def test_a_file_that_is_not_a_usable_model_is_listed_but_fails_clearly(registry, models, name, file, reason):
    info = registry.find(name)
    with pytest.raises(UpscalerLoadError) as caught:
        upscale(_picture(), info, scale=2, models=models)
    assert isinstance(caught.value, RequestError) and caught.value.field == "upscaler"
    assert caught.value.message.startswith(f"models/{file} cannot be read as an upscaler model: ")
    assert reason in caught.value.message
    assert str(registry.models_dir.parent) not in caught.value.message  # no server paths in what clients see
    # the failure leaves nothing behind: a good model still works
    assert upscale(_picture(), registry.find("2x-TinySPAN"), scale=2, models=models).size == (80, 48)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, models):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "ran.txt"), "w"))

    folder = tmp_path / "models" / "ESRGAN"
    folder.mkdir(parents=True)
    torch.save({"params_ema": {"conv_first.weight": Payload()}}, folder / "4x-Evil.pth")
    with open(folder / "4x-EvilRaw.pth", "wb") as file:  # a bare pickle, not torch's zip format
        pickle.dump({"params_ema": {"conv_first.weight": Payload()}}, file, protocol=4)
    registry = UpscalerRegistry(tmp_path / "models")
    with pytest.raises(UpscalerLoadError) as caught:
        models.get(registry.find("4x-Evil"))
    assert "could run code" in caught.value.message and "refused" in caught.value.message
    with pytest.raises(UpscalerLoadError):
        models.get(registry.find("4x-EvilRaw"))
    assert not (tmp_path / "ran.txt").exists()


def test_a_file_deleted_after_listing_says_so(tmp_path, models):
    folder = tmp_path / "models" / "DAT"
    folder.mkdir(parents=True)
    (folder / "DAT_x2.pth").write_bytes(b"x")
    info = UpscalerRegistry(tmp_path / "models").find("DAT_x2")
    (folder / "DAT_x2.pth").unlink()
    with pytest.raises(UpscalerLoadError, match="no longer exists"):
        models.get(info)


# --- the model cache -----------------------------------------------------------------------------------------------

def test_models_stay_loaded_until_evicted_and_eviction_frees_them(registry):
    cache = UpscalerModels("cpu", torch.float16, max_loaded=1)
    first = cache.get(registry.find("2x-TinyRRDB"))
    assert first.dtype == torch.float32  # half precision is for GPUs only
    assert cache.get(registry.find("2x-TinyRRDB")) is first  # no second read of the file
    watcher = weakref.ref(first.descriptor.model)
    del first
    cache.get(registry.find("2x-TinySPAN"))
    gc.collect()
    assert watcher() is None
    assert cache.loaded() == ["2x-TinySPAN"]
    assert cache.known_scale(registry.find("2x-TinyRRDB")) == 2


def test_a_model_file_replaced_under_the_same_name_is_loaded_again(tmp_path, registry):
    folder = tmp_path / "models" / "ESRGAN"
    folder.mkdir(parents=True)
    target = folder / "4x-Mine.pth"
    target.write_bytes((registry.find("2x-TinyRRDB").path).read_bytes())
    cache = UpscalerModels("cpu", None, max_loaded=2)
    info = UpscalerRegistry(tmp_path / "models").find("4x-Mine")
    assert cache.get(info).scale == 2  # the name says 4x; the weights say 2x
    target.write_bytes(registry.find("4x-TinyCompact").path.read_bytes())
    os.utime(target, ns=(1, 1))
    assert cache.get(info).scale == 4
    assert len(cache.loaded()) == 1  # the old version was dropped, not kept next to the new one


def test_half_precision_only_on_cuda_and_only_where_the_architecture_allows_it():
    assert pick_dtype("cpu", torch.float16, supports_half=True, supports_bfloat16=True) == torch.float32
    assert pick_dtype("cuda", torch.float16, supports_half=True, supports_bfloat16=True) == torch.float16
    assert pick_dtype("cuda", torch.float16, supports_half=False, supports_bfloat16=True) == torch.float32
    assert pick_dtype("cuda", torch.bfloat16, supports_half=True, supports_bfloat16=False) == torch.float32
    assert pick_dtype("cuda", torch.bfloat16, supports_half=False, supports_bfloat16=True) == torch.bfloat16


# --- second upscaler -----------------------------------------------------------------------------------------------

def test_visibility_blends_the_second_upscaler_over_the_first(registry, models):
    image = _picture()
    compact, lanczos = registry.find("4x-TinyCompact"), registry.find("Lanczos")
    alone = {info.name: upscale(image, info, scale=2, models=models) for info in (compact, lanczos)}
    blend = {v: upscale_blended(image, compact, lanczos, v, scale=2, models=models) for v in (0.0, 0.5, 1.0)}
    assert np.array_equal(_pixels(blend[0.0]), _pixels(alone["4x-TinyCompact"]))
    assert np.array_equal(_pixels(blend[1.0]), _pixels(alone["Lanczos"]))
    halfway = _pixels(Image.blend(alone["4x-TinyCompact"], alone["Lanczos"], 0.5))
    assert np.array_equal(_pixels(blend[0.5]), halfway)
    assert not np.array_equal(halfway, _pixels(alone["Lanczos"]))
    # A1111: a second upscaler "None" is not blended in
    none = registry.find("None")
    assert np.array_equal(_pixels(upscale_blended(image, compact, none, 0.7, scale=2, models=models)),
                          _pixels(alone["4x-TinyCompact"]))


def test_progress_counts_the_tiles_of_both_upscalers(registry, models):
    seen: list[tuple[int, int]] = []
    upscale_blended(_picture(), registry.find("2x-TinySPAN"), registry.find("2x-TinyRRDB"), 0.5, scale=2,
                    models=models, tile=TileOptions(20, 8), on_progress=lambda *p: seen.append(p))
    assert seen == [(done, 16) for done in range(1, 17)]


# --- validation, built-ins, modes ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"scale": 0}, "upscaling_resize"), ({"scale": -1}, "upscaling_resize"), ({"scale": 8.5}, "upscaling_resize"),
    ({"scale": math.nan}, "upscaling_resize"), ({"scale": "2"}, "upscaling_resize"),
    ({"size": (0, 10)}, "upscaling_resize_w"), ({"size": (10.5, 10)}, "upscaling_resize_w"),
    ({"size": (10, 20000)}, "upscaling_resize_h"),
    ({"scale": 4, "max_pixels": 150 * 90}, "upscaling_resize"),
    ({"size": (400, 400), "max_pixels": 300 * 300}, "upscaling_resize"),
])
def test_bad_sizes_are_refused_naming_their_field_before_any_model_loads(registry, models, kwargs, field):
    broken = registry.find("broken-half")  # loading it would fail: the size check must come first
    with pytest.raises(RequestError) as caught:
        upscale(_picture(), broken, models=models, **kwargs)
    assert caught.value.field == field
    assert not isinstance(caught.value, UpscalerLoadError)


def test_size_checks_accept_the_edges():
    assert check_scale(8) == 8.0
    assert output_size((40, 24), scale=0.05) == (2, 1)
    assert output_size((40, 24), size=(16384, 1), max_pixels=16384) == (16384, 1)
    lanczos = UpscalerRegistry(Path("/nonexistent")).find("Lanczos")
    with pytest.raises(RequestError) as caught:
        upscale_blended(_picture(), lanczos, lanczos, 1.5, scale=2, models=UpscalerModels())
    assert caught.value.field == "extras_upscaler_2_visibility"


@pytest.mark.parametrize("name", ["Lanczos", "Nearest"])
def test_built_in_resizes_are_plain_pillow_resizes(registry, models, name):
    resample = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}[name]
    for mode in ("RGB", "RGBA"):
        image = _picture(mode=mode)
        for kwargs, size in (({"scale": 2.5}, (100, 60)), ({"size": (33, 71)}, (33, 71))):
            result = upscale(image, registry.find(name), models=models, **kwargs)
            assert result.mode == mode
            assert np.array_equal(_pixels(result), _pixels(image.resize(size, resample)))


def test_none_means_no_upscaling(registry, models):
    image = _picture(mode="RGBA")
    result = upscale(image, registry.find("None"), scale=4, models=models)
    assert result.size == image.size and result.mode == "RGBA"
    assert np.array_equal(_pixels(result), _pixels(image))


def test_transparency_is_kept_and_resized_beside_the_model_output(registry, models):
    image = _picture(mode="RGBA")
    result = upscale(image, registry.find("4x-TinyCompact"), scale=4, models=models)
    assert result.mode == "RGBA" and result.size == (160, 96)
    alpha = image.getchannel("A").resize((160, 96), Image.Resampling.LANCZOS)
    assert np.array_equal(_pixels(result.getchannel("A")), _pixels(alpha))
    colour = upscale(image.convert("RGB"), registry.find("4x-TinyCompact"), scale=4, models=models)
    assert np.array_equal(_pixels(result.convert("RGB")), _pixels(colour))


def test_grayscale_and_palette_pictures_come_back_in_colour_modes(registry, models):
    compact = registry.find("4x-TinyCompact")
    gray = _picture().convert("L")
    assert upscale(gray, compact, scale=2, models=models).mode == "RGB"
    palette = _picture().convert("P")
    palette.info["transparency"] = 0
    assert upscale(palette, compact, scale=2, models=models).mode == "RGBA"
