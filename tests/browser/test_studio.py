"""What an artist checks in the browser: each tab does its job, with elements found by their visible names.

Every test starts on a fresh page of the one studio the suite shares (see conftest.py), so it may not rely on what
an earlier test left in a tab; a test that changes a saved setting puts it back.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from .conftest import missing, reload

if missing():
    pytest.skip(missing(), allow_module_level=True)
expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = pytest.mark.slow  # 55-75 s on a busy 2-core machine, 10-15 s of it starting the studio

DONE = re.compile(r"\d+ images? in [\d.]+ s")


def open_tab(page, name: str):
    """Select a top-level tab; the visible tab panel (Gradio keeps every tab in the page, only one shown)."""
    page.get_by_role("tab", name=name, exact=True).click()
    return visible_panel(page)


def visible_panel(page):
    return page.get_by_role("tabpanel").filter(visible=True).first


def set_number(scope, label: str, value: float) -> None:
    """A slider's number box (Gradio names it "number input for <label>")."""
    box = scope.get_by_role("spinbutton", name=f"number input for {label}", exact=True)
    box.fill(str(value))
    box.press("Enter")


def choose(scope, label: str, option: str) -> None:
    """Pick an option of a Gradio dropdown by typing it and choosing it from the list."""
    box = scope.get_by_role("combobox", name=label, exact=True)
    box.click()
    box.fill(option)
    scope.page.get_by_role("option", name=option, exact=True).click()


def generate(tab, prompt: str, steps: int = 2) -> None:
    tab.get_by_label("Prompt", exact=True).fill(prompt)
    set_number(tab, "Sampling steps", steps)
    tab.get_by_role("button", name="Generate", exact=True).click()


def picture(path: Path, size: tuple[int, int] = (64, 64), colour=(200, 40, 40)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def gallery_sizes(tab) -> list[list[int]]:
    """The natural size of each image in the tab's result gallery (the files it shows, not their thumbnails)."""
    images = tab.get_by_role("button", name=re.compile(r"^Thumbnail \d+ of \d+$")).locator("img")
    for _ in range(100):  # until every file has arrived
        sizes = images.evaluate_all("(nodes) => nodes.map((n) => [n.naturalWidth, n.naturalHeight])")
        if sizes and all(width for width, _height in sizes):
            return sizes
        tab.page.wait_for_timeout(100)
    return sizes


def test_txt2img_starts_at_the_model_size_and_shows_the_image_with_its_parameters(page):
    tab = visible_panel(page)
    for side in ("Width", "Height"):  # the tiny model's own size, not 0
        expect(tab.get_by_role("spinbutton", name=f"number input for {side}")).to_have_value("64")
    expect(tab.get_by_role("button", name="Random seed (-1)")).to_have_attribute("title", "Random seed (-1)")
    expect(tab.get_by_role("button", name="Reuse the seed of the selected image")).to_be_visible()
    expect(tab.get_by_role("button", name="Refresh the checkpoint and VAE lists")).to_be_visible()
    generate(tab, "a red circle")
    expect(tab.get_by_text(DONE)).to_be_visible()
    expect(tab.get_by_role("button", name="Thumbnail 1 of 1")).to_be_visible()
    parameters = tab.get_by_label("Generation parameters")
    expect(parameters).to_have_value(re.compile(r"^a red circle\nSteps: 2, Sampler: Euler, .*Seed: \d+, "
                                                r"Size: 64x64"))
    assert gallery_sizes(tab) == [[64, 64]]
    seed = re.search(r"Seed: (\d+)", parameters.input_value()).group(1)
    tab.get_by_role("button", name="Reuse the seed of the selected image").click()
    expect(tab.get_by_role("spinbutton", name="Seed")).to_have_value(seed)


def test_ctrl_enter_in_the_prompt_generates(page):
    tab = visible_panel(page)
    set_number(tab, "Sampling steps", 2)
    prompt = tab.get_by_label("Prompt", exact=True)
    prompt.fill("a blue square")
    prompt.press("Control+Enter")
    expect(tab.get_by_text(DONE)).to_be_visible()
    expect(tab.get_by_label("Generation parameters")).to_have_value(re.compile(r"^a blue square\nSteps: 2, "))


def test_a_seed_out_of_range_says_minus_one_is_random(page):
    tab = visible_panel(page)
    seed = tab.get_by_role("spinbutton", name="Seed")
    seed.fill("99999999999")
    generate(tab, "a red circle")
    alert = tab.get_by_role("alert")
    expect(alert).to_contain_text("-1 for a random seed")
    expect(alert).to_contain_text("99999999999")
    assert "e+" not in alert.inner_text()
    tab.get_by_role("button", name="Random seed (-1)").click()
    expect(seed).to_have_value("-1")


def test_send_to_img2img_with_nothing_says_so_then_moves_the_image_and_prompt(page):
    tab = visible_panel(page)
    tab.get_by_role("button", name="Send to img2img").click()
    expect(page.get_by_text("Nothing to send yet: generate an image first.")).to_be_visible()
    expect(page.get_by_role("tab", name="txt2img", exact=True)).to_have_attribute("aria-selected", "true")
    generate(tab, "a blue square")
    expect(tab.get_by_text(DONE)).to_be_visible()
    tab.get_by_role("button", name="Send to img2img").click()
    expect(page.get_by_role("tab", name="img2img", exact=True)).to_have_attribute("aria-selected", "true")
    target = visible_panel(page)
    expect(target.get_by_label("Prompt", exact=True)).to_have_value("a blue square")
    expect(target.get_by_test_id("image").get_by_role("img").first).to_be_visible()


def test_img2img_repaints_an_uploaded_image(page, tmp_path):
    tab = open_tab(page, "img2img")
    tab.locator("input[type=file]").first.set_input_files(picture(tmp_path / "red.png", (48, 32)))
    expect(tab.get_by_test_id("image").get_by_role("img").first).to_be_visible()
    generate(tab, "a green star")
    expect(tab.get_by_text(DONE)).to_be_visible()
    assert gallery_sizes(tab) == [[48, 32]]  # "0 = the image's size"
    expect(tab.get_by_label("Generation parameters")).to_have_value(re.compile(r"Denoising strength: 0\.75"))


def test_inpaint_with_a_mask_drawn_on_the_canvas(page, tmp_path):
    tab = open_tab(page, "inpaint")
    canvas = tab.locator("canvas").last
    expect(canvas).to_be_visible()
    # The editor (PixiJS) sets itself up after its tab is shown; an upload before that is lost (Gradio's
    # "reading 'reset_layers'" page error), and it draws the uploaded background before it takes strokes.
    page.wait_for_timeout(1500)
    tab.locator("input[type=file]").first.set_input_files(picture(tmp_path / "blue.png", colour=(30, 60, 200)))
    page.wait_for_timeout(1500)
    box = canvas.bounding_box()
    centre_x, centre_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(centre_x - 40, centre_y)
    page.mouse.down()
    for step in range(1, 9):
        page.mouse.move(centre_x - 40 + step * 10, centre_y + (step % 2) * 6)
    page.mouse.up()
    generate(tab, "a yellow circle")
    expect(tab.get_by_text(DONE)).to_be_visible()
    assert gallery_sizes(tab) == [[64, 64]]
    expect(tab.get_by_label("Generation parameters")).to_have_value(re.compile(r"Mask blur: 4"))


def test_upscale_tab_doubles_an_uploaded_image_with_a_model(page, tmp_path):
    tab = open_tab(page, "Upscale")
    tab.locator("input[type=file]").first.set_input_files(picture(tmp_path / "small.png", (40, 24)))
    choose(tab, "Upscaler", "2x-TinyCompact")
    expect(tab.get_by_role("button", name="Refresh the upscaler lists")).to_be_visible()
    tab.get_by_role("button", name="Upscale", exact=True).click()
    expect(tab.get_by_role("button", name="Thumbnail 1 of 1")).to_be_visible()
    assert gallery_sizes(tab) == [[80, 48]]
    expect(tab.get_by_label("Parameters")).to_have_value(re.compile(r"2x-TinyCompact"))


def test_png_info_reads_the_parameters_of_a_saved_image(page, studio):
    tab = visible_panel(page)
    generate(tab, "a purple triangle")
    expect(tab.get_by_text(DONE)).to_be_visible()
    saved = max((studio["outputs"] / "txt2img").rglob("*.png"), key=lambda path: path.stat().st_mtime)
    info = open_tab(page, "PNG info")
    info.locator("input[type=file]").first.set_input_files(saved)
    expect(info.get_by_label("Parameters")).to_have_value(re.compile(r"^a purple triangle\nSteps: 2, "))


def test_a_second_generate_click_queues_a_job_that_the_queue_tab_cancels(page):
    tab = visible_panel(page)
    set_number(tab, "Batch count", 40)  # long enough to still run while the second job waits
    generate(tab, "a long job", steps=150)
    expect(tab.get_by_text(re.compile(r"step \d+/150"))).to_be_visible()
    tab.get_by_label("Prompt", exact=True).fill("the queued job")
    tab.get_by_role("button", name="Generate", exact=True).click()
    expect(tab.get_by_text(re.compile(r"waiting in queue · 1 ahead"))).to_be_visible()
    queue = open_tab(page, "Queue")  # no Refresh: the tab is pushed the jobs
    number = pick_job(queue, "the queued job")
    queue.get_by_role("button", name="Cancel job").click()
    expect(queue.get_by_text(f"Cancelled job #{number}.")).to_be_visible()
    number = pick_job(queue, "a long job")  # and the running one: it ends early with what it made
    queue.get_by_role("button", name="Cancel job").click()
    expect(queue.get_by_text(f"Interrupted job #{number}.")).to_be_visible()
    tab = open_tab(page, "txt2img")
    expect(tab.get_by_text(re.compile(r"interrupted"))).to_be_visible()


def pick_job(queue, prompt: str) -> str:
    """Choose the job with this prompt in the Queue tab's "Job" list; its number. The list is redrawn when a job
    is submitted, starts or ends (not on progress), which may close it under the pointer, so the choice is checked
    and made again if it was lost."""
    box = queue.get_by_role("combobox", name="Job", exact=True)
    for _ in range(5):
        box.click()
        option = queue.page.get_by_role("option", name=re.compile(re.escape(prompt)))
        try:
            label = option.inner_text(timeout=5000)
            option.click(timeout=5000)
        except Exception:  # the list was redrawn under the pointer: try again
            continue
        if prompt in box.input_value():
            return re.match(r"#(\d+)", label).group(1)
    raise AssertionError(f"could not choose the job {prompt!r} in the Queue tab")


def test_xyz_plot_under_txt2img_makes_a_grid(page, studio):
    tab = visible_panel(page)
    tab.get_by_role("button", name="X/Y/Z plot").click()
    choose(tab, "X type", "Steps")
    tab.get_by_role("textbox", name=re.compile(r"^X values")).fill("2,3")
    generate(tab, "an orange square")
    expect(tab.get_by_text(DONE)).to_be_visible()
    expect(tab.get_by_role("button", name="Thumbnail 3 of 3")).to_be_visible()  # the grid, then the two cells
    sizes = gallery_sizes(tab)
    assert sizes[1:] == [[64, 64], [64, 64]] and sizes[0][0] >= 128 and sizes[0][1] > 64  # tiles and legends
    expect(tab.get_by_label("Generation parameters")).to_have_value(re.compile(r"Steps: [23]"))
    grids = list((studio["outputs"] / "txt2img-grids").rglob("*xyz-grid.png"))
    assert grids, "the grid is saved under outputs/txt2img-grids/ as in A1111"


def test_a_saved_default_is_kept_after_a_reload(page, studio):
    settings = open_tab(page, "Settings")
    steps = settings.get_by_role("spinbutton", name="number input for Sampling steps", exact=True)
    before = steps.input_value()
    set_number(settings, "Sampling steps", 7)
    settings.get_by_role("button", name="Save settings").click()
    expect(settings.get_by_text(re.compile(r"Saved \d+ settings"))).to_be_visible()
    try:
        reload(page)
        tab = visible_panel(page)
        expect(tab.get_by_role("spinbutton", name="number input for Sampling steps")).to_have_value("7")
        settings = open_tab(page, "Settings")
        expect(settings.get_by_role("spinbutton", name="number input for Sampling steps")).to_have_value("7")
    finally:
        set_number(settings, "Sampling steps", int(before))
        settings.get_by_role("button", name="Save settings").click()
        expect(settings.get_by_text(re.compile(r"Saved \d+ settings"))).to_be_visible()
