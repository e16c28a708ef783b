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


def test_the_token_counter_follows_the_prompt_without_holding_up_generate(page):
    """The "3/75" counter is computed in the page: typing, then Ctrl+Enter at once, still generates that prompt."""
    tab = visible_panel(page)
    set_number(tab, "Sampling steps", 2)
    counter, negative_counter = tab.locator(".prose.sf-token-count").all()
    expect(counter).to_have_text("0/75")
    prompt = tab.get_by_label("Prompt", exact=True)
    prompt.press_sequentially("a red circle")
    prompt.press("Control+Enter")
    expect(counter).to_have_text("3/75")
    expect(tab.get_by_text(DONE)).to_be_visible()
    expect(tab.get_by_label("Generation parameters")).to_have_value(re.compile(r"^a red circle\nSteps: 2, "))
    prompt.fill("word " * 80)
    expect(counter).to_have_text("80/150")  # past 75 tokens a second chunk begins, as A1111 shows it
    tab.get_by_label("Negative prompt", exact=True).fill("blurry, low quality")
    expect(negative_counter).to_have_text("4/75")


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


def test_a_typed_value_over_the_limit_is_put_back_and_said(page):
    """Gradio's number box clamps a typed 500 to the slider's 150 when it loses focus; the page says so."""
    tab = visible_panel(page)
    box = tab.get_by_role("spinbutton", name="number input for Sampling steps", exact=True)
    box.fill("500")
    box.press("Tab")
    expect(box).to_have_value("150")
    expect(page.get_by_role("status").filter(has_text="Sampling steps")).to_have_text(
        "Sampling steps 500 is over this studio's limit of 150: set to 150.")
    cfg = tab.get_by_role("spinbutton", name="number input for CFG scale", exact=True)
    cfg.fill("-3")
    cfg.press("Tab")
    expect(cfg).to_have_value("0")
    expect(page.get_by_role("status").filter(has_text="CFG scale")).to_contain_text("CFG scale -3 is under the "
                                                                                     "minimum of 0: set to 0.")


def test_on_a_400_px_screen_the_result_comes_right_after_generate(page):
    """On a phone-sized window the gallery comes under the prompt and Generate, not after every setting."""
    page.set_viewport_size({"width": 400, "height": 800})
    tab = visible_panel(page)
    generate(tab, "a red circle")
    expect(tab.get_by_text(DONE)).to_be_visible()
    top = "(node) => node.getBoundingClientRect().top + window.scrollY"
    gallery = tab.get_by_role("button", name="Thumbnail 1 of 1").evaluate(top)
    assert gallery < 1.5 * 800, gallery
    assert gallery < tab.get_by_role("combobox", name="Sampling method").evaluate(top)
    assert gallery > tab.get_by_role("button", name="Generate", exact=True).evaluate(top)


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


def test_the_inpaint_brush_is_sized_for_the_uploaded_image(page, tmp_path):
    """A 25 px brush would cover a 64 px image in three strokes: the radius is the shorter side / 20."""
    tab = open_tab(page, "inpaint")
    expect(tab.locator("canvas").last).to_be_visible()
    page.wait_for_timeout(1500)  # the editor's own set-up (see the drawing test above)
    tab.locator("input[type=file]").first.set_input_files(picture(tmp_path / "wide.png", (1000, 800)))
    tab.get_by_role("button", name="Brush Size").click()
    expect(tab.locator("input[type=range]").first).to_have_value("40")
    page.keyboard.press("Escape")
    tab.locator("input[type=file]").first.set_input_files(picture(tmp_path / "small.png", (64, 48)))
    tab.get_by_role("button", name="Brush Size").click()
    expect(tab.locator("input[type=range]").first).to_have_value("2")


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
    set_number(tab, "Batch count", 100)  # minutes: still running when the second job is cancelled, however
    set_number(tab, "Batch size", 4)     # slow the machine is (the page fixture cancels it at the end)
    generate(tab, "a long job", steps=150)
    expect(tab.get_by_text(re.compile(r"step \d+/150"))).to_be_visible()
    expect(tab.get_by_role("button", name="Interrupt")).to_be_visible()  # shown while the tab's job runs
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
    tab = open_tab(page, "txt2img")  # the tab shows its newest job: the one cancelled while it waited
    expect(tab.get_by_text("Cancelled before it started.")).to_be_visible()
    expect(tab.get_by_role("button", name="Interrupt")).to_be_hidden()


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


def test_skip_then_interrupt_end_the_tab_job_without_server_warnings(page, studio):
    log = studio["root"] / "studio.log"
    before = log.read_text(errors="replace") if log.exists() else ""
    tab = visible_panel(page)
    set_number(tab, "Batch count", 20)
    generate(tab, "a skipped batch", steps=150)
    expect(tab.get_by_text(re.compile(r"step \d+/150 · batch 1/20"))).to_be_visible()
    skip = tab.get_by_role("button", name="Skip", exact=True)
    expect(skip).to_be_visible()  # shown while the tab's job runs
    skip.click()
    expect(tab.get_by_text(re.compile(r"batch ([2-9]|1\d)/20"))).to_be_visible()
    tab.get_by_role("button", name="Interrupt", exact=True).click()
    expect(tab.get_by_text(re.compile(r"interrupted"))).to_be_visible()
    expect(tab.get_by_role("button", name="Skip", exact=True)).to_be_hidden()
    if log.exists():  # absent when the suite drives a studio started by hand
        added = log.read_text(errors="replace")[len(before):]
        assert "Warning" not in added and "Traceback" not in added, added


def test_a_style_made_in_the_editor_is_listed_at_once_generates_and_is_deleted(page):
    tab = visible_panel(page)
    tab.get_by_role("button", name="Edit styles").click()
    tab.get_by_label("Style name", exact=True).fill("pastel look")
    tab.get_by_role("textbox", name=re.compile(r"^Style prompt")).fill("{prompt}, in soft pastel")  # + its info
    tab.get_by_label("Style negative prompt", exact=True).fill("gloomy")
    tab.get_by_role("button", name="Save style").click()
    expect(tab.get_by_text("Created style 'pastel look'")).to_be_visible()
    try:
        choose(tab, "Styles", "pastel look")  # listed without a reload
        generate(tab, "a green star")
        expect(tab.get_by_text(DONE)).to_be_visible()
        expect(tab.get_by_label("Generation parameters")).to_have_value(
            re.compile(r"^a green star, in soft pastel\nNegative prompt: gloomy\nSteps: 2, .*Styles array: "))
    finally:
        tab.get_by_role("button", name="Delete style").click()
    expect(tab.get_by_text("Deleted style 'pastel look'")).to_be_visible()
    box = tab.get_by_role("combobox", name="Styles", exact=True)
    box.click()
    expect(page.get_by_role("option", name="pastel look")).to_have_count(0)
    expect(tab.get_by_label("Style name", exact=True)).to_have_value("pastel look")  # Save would put it back


def test_a_disabled_extension_loses_its_controls_at_the_next_page_load(page):
    def set_xyz(action: str) -> None:
        extensions = open_tab(page, "Extensions")
        choose(extensions, "Extension", "xyz_plot")
        extensions.get_by_role("button", name=action, exact=True).click()
        said = "xyz_plot disabled;" if action == "Disable" else "xyz_plot: active"
        expect(extensions.get_by_text(said).first).to_be_visible()

    expect(visible_panel(page).get_by_role("button", name="X/Y/Z plot")).to_be_visible()
    try:
        set_xyz("Disable")
        reload(page)
        tab = visible_panel(page)
        expect(tab.get_by_role("button", name="X/Y/Z plot")).to_have_count(0)
        generate(tab, "a pink circle")  # the page still holds the plot's values; they are left out, not refused
        expect(tab.get_by_text(DONE)).to_be_visible()
    finally:
        set_xyz("Enable")  # the suite shares one studio
    reload(page)
    expect(visible_panel(page).get_by_role("button", name="X/Y/Z plot")).to_be_visible()


@pytest.mark.parametrize("tab_name", ["img2img", "inpaint", "PNG info", "Upscale"])
def test_an_upload_that_is_not_an_image_gets_a_notice_naming_it(page, tmp_path, tab_name):
    """Not a bare "Error" badge: the tab's status names the field and says the file is not an image."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    tab = open_tab(page, tab_name)
    if tab_name == "inpaint":
        page.wait_for_timeout(1500)  # the editor sets itself up after its tab is shown (see the mask test)
    tab.locator("input[type=file]").first.set_input_files(broken)
    if tab_name == "inpaint":  # the editor decodes in the page: the page names the file before anything is sent
        expect(page.get_by_text("broken.png is not a readable image")).to_be_visible()
        return
    if tab_name == "img2img":
        generate(tab, "a red circle")
    elif tab_name == "Upscale":
        tab.get_by_role("button", name="Upscale", exact=True).click()
    expect(tab.get_by_role("alert").first).to_contain_text("not a readable image")
    expect(tab.get_by_text("Error", exact=True)).to_have_count(0)


def test_extra_networks_lists_a_new_lora_after_refresh_and_a_click_uses_it(page, studio, network_files):
    import shutil

    shutil.copytree(network_files / "Lora", studio["root"] / "models" / "Lora", dirs_exist_ok=True)
    tab = visible_panel(page)
    set_number(tab, "Sampling steps", 2)
    tab.get_by_text("Extra networks", exact=True).click()
    tab.get_by_role("button", name="Refresh", exact=True).click()
    search = tab.get_by_label("Search", exact=True)
    search.fill("peft")
    expect(tab.get_by_role("button", name="kohyastyle")).to_have_count(0)
    tab.get_by_role("button", name="peftstyle", exact=True).click()
    prompt = tab.get_by_label("Prompt", exact=True)
    expect(prompt).to_have_value("<lora:peftstyle:1>")
    prompt.press("Control+Enter")
    expect(tab.get_by_text(DONE)).to_be_visible()
    expect(tab.get_by_label("Generation parameters")).to_have_value(re.compile(r'Lora hashes: "peftstyle: '))
