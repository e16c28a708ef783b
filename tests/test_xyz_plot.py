"""The built-in X/Y/Z plot extension: A1111's axis and value syntax, cells ordered so a checkpoint loads once, and
labelled grids (one per Z value) made from real generations on the tiny models, with failed cells marked."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from app.api.a1111_models import a1111_info
from modules.errors import RequestError
from modules.extensions.api import Catalog
from modules.extensions.manager import ExtensionManager, engine_catalog
from modules.image.request import GenerationRequest
from modules.image.results import GeneratedImage, GenerationResult
from modules.jobs.control import JobControl

ROOT = Path(__file__).resolve().parent.parent
SIDE = 64


def manager_for(tmp_path: Path, catalog: Catalog | None = None) -> ExtensionManager:
    manager = ExtensionManager(builtin_dir=ROOT / "extensions", user_dir=tmp_path / "user",
                               state_file=tmp_path / "data" / "extensions.json", data_dir=tmp_path / "data",
                               catalog=catalog or Catalog())
    manager.load()
    item = manager.get("xyz_plot")
    assert item.status == "active", item.error
    return manager


@pytest.fixture
def xyz(tmp_path):
    """The extension's own modules, imported the way the studio loads them."""
    manager_for(tmp_path)

    class Modules:
        axes = importlib.import_module("sfumato_extension_xyz_plot.axes")
        plan = importlib.import_module("sfumato_extension_xyz_plot.plan")
        controls = importlib.import_module("sfumato_extension_xyz_plot.controls")

    return Modules


def small(**fields) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red circle", "steps": 2, "width": SIDE, "height": SIDE, "seed": 3,
                                **fields})


def plot_request(settings: dict, **fields) -> GenerationRequest:
    return small(extensions={"xyz_plot": settings}, **fields)


def engine_runner(services):
    from modules.image.generation import generate

    return lambda request, control: generate(request, services.engine, control)


def never_runs(request, control):
    raise AssertionError("no cell may run when the plot is refused")


def fake_runner(calls: list):
    """A stand-in for the engine where the subject is the plot's bookkeeping, not the model: each cell's image is
    a flat colour that encodes its steps and CFG scale, so the test can tell where each cell landed."""

    def run(request: GenerationRequest, control: JobControl) -> GenerationResult:
        calls.append(request)
        colour = (request.steps * 20, int(request.cfg_scale * 20), 0)
        infotext = (f"{request.prompt}\nSteps: {request.steps}, Sampler: Euler, CFG scale: {request.cfg_scale}, "
                    f"Seed: {request.seed}, Size: 64x64, Version: test")
        image = GeneratedImage(Image.new("RGB", (SIDE, SIDE), colour), request.seed, request.subseed,
                               request.prompt, request.negative_prompt, infotext)
        return GenerationResult(images=[image], grid=None)

    return run


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def tile(grid: Image.Image, columns: int, rows: int, x: int, y: int) -> Image.Image:
    """Cell (x, y) of a grid whose legends sit on top and on the left (so the cells fill its bottom-right)."""
    left, top = grid.width - columns * SIDE, grid.height - rows * SIDE
    return grid.crop((left + x * SIDE, top + y * SIDE, left + (x + 1) * SIDE, top + (y + 1) * SIDE))


def has_ink(image: Image.Image) -> bool:
    """Whether anything was drawn on this (white) region: legend text is dark."""
    low, _high = image.convert("L").getextrema()
    return low < 128


# -- value syntax and axis names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind", "expected"), [
    ("1-5", int, [1, 2, 3, 4, 5]),
    ("1-10 (+2)", int, [1, 3, 5, 7, 9]),
    ("10-1 (-3)", int, [10, 7, 4, 1]),
    ("5-3", int, [5, 4, 3]),
    ("1-10 [5]", int, [1, 3, 5, 7, 10]),  # evenly spread, rounded down, as A1111's linspace + int
    ("0.5-1.5 (+0.25)", float, [0.5, 0.75, 1.0, 1.25, 1.5]),
    ("1-2 [3]", float, [1.0, 1.5, 2.0]),
    (" 7, 3.5 ,12 ", float, [7.0, 3.5, 12.0]),
    ("1 - 3, 10, 20-22 ( +2 )", int, [1, 2, 3, 10, 20, 22]),
    ("-1, 5,", int, [-1, 5]),
    ('cat, "dog, big", bird', str, ["cat", "dog, big", "bird"]),
    ([1, "3-4", 2.0], int, [1, 3, 4, 2]),
])
def test_value_syntax_follows_a1111(xyz, text, kind, expected):
    assert xyz.axes.parse_values(text, kind, "xyz_plot.x_values") == expected


@pytest.mark.parametrize(("text", "kind", "message"), [
    ("abc", int, "not a number"),
    ("1.5", int, "whole numbers"),
    ("1-5 (-1)", int, "never goes"),
    ("1-100000", int, "at most 1000"),
    ("1-10 [0]", int, "no values"),
    ("", float, "no values"),
])
def test_bad_values_are_refused_naming_the_setting(xyz, text, kind, message):
    with pytest.raises(RequestError, match=message) as caught:
        xyz.axes.parse_values(text, kind, "xyz_plot.y_values")
    assert caught.value.field == "xyz_plot.y_values"


def test_axes_by_name_alias_a1111_index_or_request_field(xyz):
    find = xyz.axes.find_axis
    assert find("cfg scale", "txt2img", "f").label == "CFG Scale"
    assert find("Checkpoint", "txt2img", "f").label == "Checkpoint name"
    assert find("Nothing", "txt2img", "f") is None and find("", "txt2img", "f") is None
    # A1111 clients send indexes into the list their tab shows (txt2img has Hires steps, img2img Image CFG Scale)
    assert [find(index, "txt2img", "f").label for index in (1, 4, 6, 7, 9, 11, 17, 24, 25, 29, 41)] == [
        "Seed", "Steps", "CFG Scale", "Prompt S/R", "Sampler", "Checkpoint name", "Schedule type", "Clip skip",
        "Denoising", "VAE", "Size"]
    assert [find(str(index), "img2img", "f").label for index in (5, 7, 9, 10, 16, 24)] == [
        "CFG Scale", "Prompt S/R", "Sampler", "Checkpoint name", "Schedule type", "Denoising"]
    mask_blur = find("mask_blur", "inpaint", "f")
    assert mask_blur.kind is int and mask_blur.apply(small(), 9, [9]).mask_blur == 9
    with pytest.raises(RequestError, match="no equivalent"):
        find("Eta", "txt2img", "xyz_plot.x_type")
    with pytest.raises(RequestError, match="unknown axis type 'Bogus'"):
        find("Bogus", "txt2img", "xyz_plot.x_type")
    with pytest.raises(RequestError, match="out of range"):
        find(99, "txt2img", "xyz_plot.x_type")


def test_reload_reads_the_extensions_own_modules_again(tmp_path):
    import shutil

    shutil.copytree(ROOT / "extensions" / "xyz_plot", tmp_path / "user" / "xyz_plot")
    manager = ExtensionManager(builtin_dir=tmp_path / "no-builtins", user_dir=tmp_path / "user",
                               state_file=tmp_path / "state.json", data_dir=tmp_path)
    manager.load()
    axes = tmp_path / "user" / "xyz_plot" / "axes.py"
    axes.write_text(axes.read_text().replace("MAX_VALUES = 1000", "MAX_VALUES = 7"))
    manager.reload()
    assert manager.get("xyz_plot").status == "active"
    assert importlib.import_module("sfumato_extension_xyz_plot.axes").MAX_VALUES == 7


# -- planning: order, seeds, Prompt S/R, limits -------------------------------------------------------------------


def test_prompt_search_replace_replaces_the_first_value_in_both_prompts(xyz):
    request = small(negative_prompt="red blur")
    plot = xyz.plan.read_plot(request, {"x_type": "Prompt S/R", "x_values": "red, blue, green"}, Catalog())
    sweep = xyz.plan.build_sweep(request, plot)
    assert [(r.prompt, r.negative_prompt) for r in sweep.requests] == [
        ("a red circle", "red blur"), ("a blue circle", "blue blur"), ("a green circle", "green blur")]
    with pytest.raises(RequestError, match="neither the prompt") as caught:
        xyz.plan.read_plot(request, {"y_type": "Prompt S/R", "y_values": "square, circle"}, Catalog())
    assert caught.value.field == "xyz_plot.y_values"
    with pytest.raises(RequestError, match="empty"):
        xyz.plan.read_plot(request, {"x_type": "Prompt S/R", "x_values": ", red"}, Catalog())


def test_costliest_axis_is_the_outer_loop_and_seeds_stay_fixed(xyz):
    request = small(seed=-1)
    settings = {"x_type": "Checkpoint name", "x_values": "a, b", "y_type": "Steps", "y_values": "2,3",
                "z_type": "VAE", "z_values": "Automatic, v.safetensors"}
    sweep = xyz.plan.build_sweep(request, xyz.plan.read_plot(request, settings, Catalog()))
    cells = [(r.model, r.vae, r.steps) for r in sweep.requests]
    # checkpoint (cost 1) outermost, then VAE (0.7), then steps: each model and VAE is switched to as few times
    assert cells == [("a", None, 2), ("a", None, 3), ("a", "v.safetensors", 2), ("a", "v.safetensors", 3),
                     ("b", None, 2), ("b", None, 3), ("b", "v.safetensors", 2), ("b", "v.safetensors", 3)]
    assert [(label["x"], label["y"], label["z"]) for label in sweep.labels][:3] == [(0, 0, 0), (0, 1, 0), (0, 0, 1)]
    seeds = {r.seed for r in sweep.requests}
    assert len(seeds) == 1 and seeds != {-1}  # one random seed, picked once for the whole plot
    assert all(not r.make_grid for r in sweep.requests)


def test_seed_axis_fixes_random_values_and_vary_seeds_counts_up(xyz):
    request = small(seed=100)
    plot = xyz.plan.read_plot(request, {"x_type": "Seed", "x_values": "-1, 7"}, Catalog())
    seeds = [r.seed for r in xyz.plan.build_sweep(request, plot).requests]
    assert seeds[1] == 7 and seeds[0] not in (-1, 100)
    assert plot.infotext_params()["Fixed X Values"] == f"{seeds[0]}, 7"
    varied = xyz.plan.read_plot(request, {"x_type": "Steps", "x_values": "2,3", "y_type": "CFG Scale",
                                          "y_values": "3,7", "vary_seeds_x": True, "vary_seeds_y": "true"}, Catalog())
    assert [r.seed for r in xyz.plan.build_sweep(request, varied).requests] == [100, 101, 102, 103]


def test_a_runaway_plot_is_refused_with_a_clear_message(tmp_path):
    manager = manager_for(tmp_path)
    huge = plot_request({"x_type": "Steps", "x_values": "1-1000", "y_type": "Seed", "y_values": "1-1000"})
    with pytest.raises(RequestError, match=r"megapixels .*over the limit of 200\.0 megapixels") as caught:
        manager.run_job(huge, JobControl(), never_runs)
    assert caught.value.field == "xyz_plot" and "1000x1000 cells" in caught.value.message
    # a request's own limit may be lower than the studio's, never higher
    lowered = plot_request({"x_type": "Steps", "x_values": "2,3", "max_pixels": 2 * SIDE * SIDE - 1})
    with pytest.raises(RequestError, match="over the limit"):
        manager.run_job(lowered, JobControl(), never_runs)


def test_unknown_names_are_refused_before_anything_runs(tmp_path, services):
    manager = manager_for(tmp_path, engine_catalog(services.engine))
    cases = [({"x_type": "Sampler", "x_values": "Euler a, Eulr"}, "xyz_plot.x_values", "Eulr"),
             ({"y_type": "Checkpoint name", "y_values": "tiny-sd1, missing-model"}, "xyz_plot.y_values",
              "missing-model"),
             ({"z_type": "Schedule type", "z_values": "Karras, Wobbly"}, "xyz_plot.z_values", "Wobbly"),
             ({"x_type": "Hires steps", "x_values": "2,3"}, "xyz_plot.x_type", "hires fix"),
             ({"x_type": "Size", "x_values": "64x64, big"}, "xyz_plot.x_values", "big")]
    for settings, field, word in cases:
        with pytest.raises(RequestError, match=word) as caught:
            manager.run_job(plot_request(settings), JobControl(), never_runs)
        assert caught.value.field == field


def test_values_hint_lists_the_studios_choices(xyz, services):
    catalog = engine_catalog(services.engine)
    assert "Euler a" in xyz.controls.values_hint("Sampler", "txt2img", catalog)
    assert "tiny-sd1-inpainting" in xyz.controls.values_hint("Checkpoint name", "txt2img", catalog)
    assert "1-10 (+2)" in xyz.controls.values_hint("Steps", "txt2img", catalog)


def test_controls_give_settings_the_plan_reads(xyz):
    import gradio as gr

    with gr.Blocks():
        components = xyz.controls.build_controls("txt2img", Catalog())
    assert {"x_type", "x_values", "y_type", "y_values", "z_type", "z_values", "draw_legend", "include_cells",
            "no_fixed_seeds", "margin_size"} <= set(components)
    assert components["x_type"].value == "Nothing" and "Checkpoint name" in str(components["x_type"].choices)


# -- A1111's positional script args, and an interrupted plot ------------------------------------------------------


def test_a1111_script_args_by_position_with_axis_indexes(tmp_path):
    manager = manager_for(tmp_path)
    # run(p, x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
    #     z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x,
    #     vary_seeds_y, vary_seeds_z, margin_size, csv_mode)
    args = [4, "2,3", [], 6, "3, 7", [], 0, "", [], "true", False, False, False, False, False, False, 0, False]
    name, settings = manager.script_settings("X/Y/Z plot", args)
    assert name == "xyz_plot" and settings["x_type"] == 4 and settings["include_lone_images"] is False
    calls: list[GenerationRequest] = []
    result = manager.run_job(plot_request(settings), JobControl(), fake_runner(calls))
    assert [(r.steps, r.cfg_scale) for r in calls] == [(2, 3.0), (3, 3.0), (2, 7.0), (3, 7.0)]
    [grid] = result.images  # include_lone_images False: the grid only
    assert a1111_info(result)["index_of_first_image"] == 1
    for x, steps in enumerate((2, 3)):
        for y, cfg in enumerate((3.0, 7.0)):
            assert tile(grid.image, 2, 2, x, y).getpixel((5, 5)) == (steps * 20, int(cfg * 20), 0)
    assert "X Type: Steps" in grid.infotext and "Y Type: CFG Scale" in grid.infotext


def test_an_interrupted_plot_shows_what_ran(tmp_path):
    manager = manager_for(tmp_path)
    control = JobControl()
    calls: list[GenerationRequest] = []
    run = fake_runner(calls)

    def stop_after_two(request, job_control):
        if len(calls) == 1:
            control.interrupt()
        return run(request, job_control)

    settings = {"x_type": "Steps", "x_values": "2,3", "y_type": "CFG Scale", "y_values": "3,7"}
    result = manager.run_job(plot_request(settings), control, stop_after_two)
    assert len(calls) == 2 and result.interrupted
    grid = result.images[0].image
    assert tile(grid, 2, 2, 1, 0).getpixel((5, 5)) == (60, 60, 0)
    assert tile(grid, 2, 2, 0, 1).getpixel((1, 1)) != (40, 140, 0)  # never ran: a marked blank
    assert len(result.images) == 3  # the grid and the two cells that ran


# -- real generations on the tiny models --------------------------------------------------------------------------


def test_a_2x2x2_plot_makes_two_labelled_grids_from_real_cells(tmp_path, services):
    manager = manager_for(tmp_path, engine_catalog(services.engine))
    settings = {"x_type": "Steps", "x_values": "2,3", "y_type": "CFG Scale", "y_values": "3, 7",
                "z_type": "Seed", "z_values": "1,2"}
    result = manager.run_job(plot_request(settings), JobControl(), engine_runner(services))
    grids, cells = result.images[:2], result.images[2:]
    assert len(cells) == 8 and a1111_info(result)["index_of_first_image"] == 2 and result.grid is None
    cell = {(x, y, z): cells[z * 4 + y * 2 + x] for z in range(2) for y in range(2) for x in range(2)}
    assert [cell[(0, 0, z)].seed for z in range(2)] == [1, 2]
    assert "Steps: 3," in cell[(1, 0, 0)].infotext and "CFG scale: 7," in cell[(0, 1, 0)].infotext
    for (x, y, z), item in cell.items():
        if x == 0:
            assert not same(item.image, cell[(1, y, z)].image), "cells must differ along X (steps)"
        if y == 0:
            assert not same(item.image, cell[(x, 1, z)].image), "cells must differ along Y (CFG)"
        if z == 0:
            assert not same(item.image, cell[(x, y, 1)].image), "cells must differ along Z (seed)"
    for z, grid in enumerate(grids):
        image = grid.image
        left, top = image.width - 2 * SIDE, image.height - 2 * SIDE
        assert left > 0 and top > 0  # room for the Y legends on the left, the title and X legends on top
        for (x, y, cz), item in cell.items():
            if cz == z:
                assert same(tile(image, 2, 2, x, y), item.image), f"cell {(x, y)} misplaced in grid {z}"
        assert has_ink(image.crop((left, 0, image.width, top))), "X legends and title drawn on top"
        assert has_ink(image.crop((0, top, left, image.height))), "Y legends drawn on the left"
        assert not has_ink(image.crop((0, 0, left, top)))  # the corner stays blank
        infotext = grid.infotext
        for part in ("Script: X/Y/Z plot", "X Type: Steps", 'X Values: "2,3"', "Y Type: CFG Scale",
                     'Y Values: "3, 7"', "Z Type: Seed", 'Fixed Z Values: "1, 2"'):
            assert part in infotext
        assert infotext.rsplit(", ", 1)[-1].startswith("Version: ") and f"Seed: {z + 1}," in infotext
        cells_folder = cell[(0, 0, 0)].path.parent  # outputs/txt2img/<day>; the grids go to txt2img-grids/<day>
        assert grid.path is not None and grid.path.parent == cells_folder.parent.parent / "txt2img-grids" / \
            cells_folder.name
        with Image.open(grid.path) as saved:
            assert saved.info["parameters"] == infotext and saved.size == image.size
    assert grids[0].image.size == grids[1].image.size
    # same X and Y legends; the titles differ (Seed: 1 / Seed: 2)
    top = grids[0].image.height - 2 * SIDE
    assert not same(grids[0].image.crop((0, 0, grids[0].image.width, top)),
                    grids[1].image.crop((0, 0, grids[1].image.width, top)))
    assert a1111_info(result)["xyz_plot"]["x"]["legends"] == ["Steps: 2", "Steps: 3"]
    assert a1111_info(result)["xyz_plot"]["failed"] == []


def test_checkpoint_axis_loads_each_model_once(tmp_path, services):
    manager = manager_for(tmp_path, engine_catalog(services.engine))
    pipelines = services.engine.pipelines
    before = pipelines.load_count
    settings = {"x_type": "Checkpoint name", "x_values": "tiny-sd1-inpainting, tiny-sd1", "y_type": "Steps",
                "y_values": "2,3"}
    result = manager.run_job(plot_request(settings), JobControl(), engine_runner(services))
    # one model in memory at a time (max_loaded_models=1): X varying fastest would load four times
    assert pipelines.load_count - before == 2
    cells = result.images[1:]
    assert ["Model: tiny-sd1-inpainting," in item.infotext for item in cells] == [True, False, True, False]
    assert not same(cells[0].image, cells[1].image)
    assert a1111_info(result)["xyz_plot"]["x"]["legends"] == ["tiny-sd1-inpainting", "tiny-sd1"]


def test_a_failed_cell_is_a_marked_blank_not_a_failed_plot(tmp_path, services):
    manager = manager_for(tmp_path, engine_catalog(services.engine))
    settings = {"x_type": "CFG Scale", "x_values": "5, 999"}  # 999 is over the studio's CFG limit
    result = manager.run_job(plot_request(settings), JobControl(), engine_runner(services))
    grid, made = result.images
    assert same(tile(grid.image, 2, 1, 0, 0), made.image)
    blank = tile(grid.image, 2, 1, 1, 0)
    assert not same(blank, made.image)
    assert any(pixel[0] > 150 and pixel[1] < 60 for pixel in blank.getdata())  # crossed out in red
    [failed] = a1111_info(result)["xyz_plot"]["failed"]
    assert (failed["x"], failed["y"]) == (1, 0) and "cfg_scale" in failed["error"]
    # every cell failing fails the job, with the reason
    with pytest.raises(RuntimeError, match="cfg_scale"):
        manager.run_job(plot_request({"x_type": "CFG Scale", "x_values": "998, 999"}), JobControl(),
                        engine_runner(services))


def test_progress_of_a_sweep_covers_every_cell():
    # the bar and the ETA are for the whole plot, not the cell that happens to be running
    from modules.jobs.control import Progress

    first = Progress(step=10, steps=20, cell=0, cells=4)
    last = Progress(step=10, steps=20, cell=3, cells=4)
    assert first.fraction == pytest.approx(0.125) and last.fraction == pytest.approx(0.875)
    assert Progress(step=10, steps=20).fraction == pytest.approx(0.5)
