"""The Video tab in the browser: the default motion model brings its checkpoint's size, choosing another family
fills that family's defaults, Generate makes a short clip that plays in the page, and the Queue tab lists it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest
from server_process import ServerProcess

from .conftest import missing

if missing():
    pytest.skip(missing(), allow_module_level=True)
expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def studio(tmp_path_factory, video_model_store) -> Iterator[dict]:
    """A studio of its own, whose models folder has the tiny video models too (the suite's shared one has none)."""
    root = tmp_path_factory.mktemp("video-studio")
    shutil.copytree(video_model_store, root / "models")
    server = ServerProcess(["--models-dir", str(root / "models"), "--data-dir", str(root / "data"), "--outdir",
                            str(root / "outputs"), "--ckpt", "tiny-sd1", "--threads", "1", "--api"],
                           root / "studio.log")
    try:
        server.start().wait_ready("/")
        yield {"url": server.url, "outputs": root / "outputs", "data": root / "data", "root": root,
               "server": server}
    finally:
        server.stop()


def number(tab, label: str):
    return tab.get_by_label(label, exact=True)


def past_job(queue, text: str):
    """The job's row in the Queue tab's past jobs (rows that start with a date), not in "Waiting and running",
    which may still list a job that just ended until the tab's next push."""
    return (queue.get_by_role("row").filter(has_text=re.compile(r"^\s*\d{4}-\d\d-\d\d \d\d:\d\d"))
            .filter(has_text=text))


def test_the_video_tab_makes_a_clip_that_plays(page):
    page.get_by_role("tab", name="Video", exact=True).click()
    tab = page.get_by_role("tabpanel").filter(visible=True).first
    expect(tab.get_by_role("combobox", name="Video model")).to_have_value("tiny-motion (AnimateDiff)")
    expect(number(tab, "Width")).to_have_value("64")  # tiny-sd1 was trained at 64 px
    model = tab.get_by_role("combobox", name="Video model")
    model.click()
    page.get_by_role("option", name="tiny-svd (Stable Video Diffusion)", exact=True).click()
    expect(number(tab, "Width")).to_have_value("1024")
    expect(number(tab, "Frames")).to_have_value("14")
    model.click()
    page.get_by_role("option", name="tiny-motion (AnimateDiff)", exact=True).click()
    expect(number(tab, "Width")).to_have_value("64")

    tab.get_by_label("Prompt", exact=True).fill("a red circle moving right")
    for label, value in (("Frames", "4"), ("FPS", "8"), ("Sampling steps", "2"), ("Seed", "5")):
        number(tab, label).fill(value)
        number(tab, label).press("Tab")
    ending = tab.get_by_role("spinbutton", name="Motion end (AnimateDiff)")
    expect(ending).to_have_value("1")  # tiny-motion recommends nothing: the adapter acts in every step
    ending.fill("0.5")
    ending.press("Tab")
    tab.get_by_role("button", name="Generate", exact=True).click()
    # the first clip loads the checkpoint and the motion adapter: minutes on a busy 2-core machine
    expect(tab.get_by_text(re.compile(r"4 frames at 8 fps in [\d.]+ s · seed 5"))).to_be_visible(timeout=240_000)
    video = tab.locator("video").first
    expect(video).to_have_attribute("src", re.compile(r"\.mp4"))
    video.evaluate("element => element.readyState >= 1 || new Promise(done => "
                   "element.addEventListener('loadedmetadata', done, {once: true}))")
    size = video.evaluate("element => [element.videoWidth, element.videoHeight, element.duration]")
    assert size[:2] == [64, 64] and size[2] == pytest.approx(0.5, abs=0.05), size  # 4 frames at 8 fps
    expect(tab.get_by_label("Parameters")).to_have_value(re.compile(r"Seed: 5.*Video model: tiny-motion"))
    expect(tab.get_by_label("Parameters")).to_have_value(re.compile(r"Motion end: 0\.5"))

    page.get_by_role("tab", name="Queue", exact=True).click()
    queue = page.get_by_role("tabpanel").filter(visible=True).first
    row = past_job(queue, "a red circle moving right (4 frames")
    expect(row).to_be_visible()
    expect(row.get_by_role("gridcell", name="txt2vid", exact=True)).to_be_visible()
    expect(row.get_by_role("gridcell", name="done", exact=True)).to_be_visible()


def playable(video) -> list:
    """[width, height, duration] of a page's video element once its metadata loaded (an error if it cannot)."""
    return video.evaluate("""async (element) => {
        if (element.readyState < 1) await new Promise((done, fail) => {
            element.addEventListener('loadedmetadata', done, {once: true});
            element.addEventListener('error', () => fail(new Error('the clip cannot be loaded')), {once: true});
            element.load();
        });
        return [element.videoWidth, element.videoHeight, element.duration];
    }""")


def test_history_plays_a_clip_and_reuse_fills_the_video_tab_with_its_seed(page):
    page.get_by_role("tab", name="Video", exact=True).click()
    tab = page.get_by_role("tabpanel").filter(visible=True).first
    tab.get_by_label("Prompt", exact=True).fill("a green triangle growing")
    for label, value in (("Frames", "6"), ("FPS", "12"), ("Sampling steps", "2"), ("Seed", "-1")):
        number(tab, label).fill(value)
        number(tab, label).press("Tab")
    tab.get_by_role("button", name="Generate", exact=True).click()
    done = tab.get_by_text(re.compile(r"6 frames at 12 fps in [\d.]+ s · seed \d+"))
    expect(done).to_be_visible(timeout=240_000)
    seed = re.search(r"seed (\d+)", done.inner_text()).group(1)  # the one the studio picked for "-1"
    # Another model on the tab, whose family defaults differ: reuse must bring the job's own values back.
    tab.get_by_role("combobox", name="Video model").click()
    page.get_by_role("option", name="tiny-svd (Stable Video Diffusion)", exact=True).click()
    expect(number(tab, "Frames")).to_have_value("14")
    # SVD makes video from an image only: Generate without one is a notice naming the field (and it replaces
    # the status line, so the "seed" line below can only come from a new clip)
    tab.get_by_role("button", name="Generate", exact=True).click()
    expect(tab.get_by_role("alert").filter(has_text="init_image")).to_be_visible()
    expect(done).to_have_count(0)

    page.get_by_role("tab", name="Queue", exact=True).click()
    queue = page.get_by_role("tabpanel").filter(visible=True).first
    past_job(queue, "a green triangle growing (6 frames").get_by_role("gridcell").nth(4).click()  # its prompt
    player = page.locator("#queue-video video")
    expect(player).to_have_attribute("src", re.compile(r"\.mp4"))
    width, height, duration = playable(player)
    assert (width, height) == (64, 64) and duration == pytest.approx(0.5, abs=0.05)  # 6 frames at 12 fps
    in_gallery = page.locator("#queue-gallery video").first  # the gallery lists the clip as a video too
    expect(in_gallery).to_be_attached()
    assert playable(in_gallery)[2] == pytest.approx(0.5, abs=0.05)
    expect(queue.get_by_role("textbox", name="Job", exact=True)).to_have_value(re.compile(rf"Seed: {seed}.*Frames: 6"))

    queue.get_by_role("button", name="Reuse in the Video tab").click()
    expect(page.get_by_role("tab", name="Video", exact=True)).to_have_attribute("aria-selected", "true")
    tab = page.get_by_role("tabpanel").filter(visible=True).first
    expect(tab.get_by_role("combobox", name="Video model")).to_have_value("tiny-motion (AnimateDiff)")
    expect(tab.get_by_label("Prompt", exact=True)).to_have_value("a green triangle growing")
    for label, value in (("Seed", seed), ("Frames", "6"), ("FPS", "12"), ("Sampling steps", "2"), ("Width", "64"),
                         ("Height", "64")):
        expect(number(tab, label)).to_have_value(value)
    tab.get_by_role("button", name="Generate", exact=True).click()  # the same clip again, with the same seed
    expect(tab.get_by_text(re.compile(rf"6 frames at 12 fps in [\d.]+ s · seed {seed}$"))).to_be_visible()
