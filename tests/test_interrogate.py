"""Interrogate (image -> prompt) on tiny random BLIP and CLIP models: through the queue, A1111's
``/sdapi/v1/interrogate`` with the unmodified ``webuiapi`` client, the native API's ``interrogate`` jobs and the
img2img/inpaint button.

Random weights write gibberish, so what is checked is what a user relies on: a caption string comes back, the same
image gives the same words, the appended terms are the best matches from our own lists (as many as each list
asks), a missing model is refused naming the folder to fill, and the job is kept like any other.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.ui.form import WARNING
from app.ui.interrogate import interrogate_prompt
from app.ui.queue_tab import history_view, show_job
from modules.errors import RequestError
from modules.interrogate.kind import InterrogateResult
from modules.interrogate.request import InterrogateRequest
from modules.interrogate.terms import BUILTIN_DIR, load_categories
from tests.api_studio import b64, picture, running_studio

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def interrogate_models(tmp_path_factory) -> Path:
    """models/BLIP/tiny-blip, models/interrogate/tiny-clip and a second captioner, models/interrogate/tiny-git,
    built once (a few seconds, mostly imports)."""
    from tools.tiny_interrogate import save_tiny_blip, save_tiny_clip, save_tiny_git

    root = tmp_path_factory.mktemp("interrogate-models")
    save_tiny_blip(root / "BLIP" / "tiny-blip", seed=0)
    save_tiny_clip(root / "interrogate" / "tiny-clip", seed=0)
    save_tiny_git(root / "interrogate" / "tiny-git", seed=0)
    return root


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_model_store, interrogate_models):
    with running_studio(tmp_path_factory.mktemp("interrogate"), tiny_model_store) as running:
        shutil.copytree(interrogate_models, running.services.config.models_dir, dirs_exist_ok=True)
        yield running


@pytest.fixture
def services(studio):
    return studio.services


@contextmanager
def hidden(models_dir: Path, *folders: str) -> Iterator[None]:
    """The named model folders out of the way for one test (folders are re-read on each request)."""
    paths = [models_dir / name for name in folders]
    for path in paths:
        path.rename(path.with_name(f".{path.name}-hidden"))
    try:
        yield
    finally:
        for path in paths:
            path.with_name(f".{path.name}-hidden").rename(path)


NO_CAPTIONER = ("BLIP", "interrogate/tiny-git")


def builtin_terms() -> dict[str, tuple[set[str], int]]:
    return {category.name: (set(category.terms), category.top) for category in load_categories(BUILTIN_DIR)}


# -- through the queue ----------------------------------------------------------------------------------------------
def test_clip_interrogation_is_a_caption_then_the_best_terms_of_each_list(services):
    job = services.queue.submit(InterrogateRequest(image=picture()))
    assert (job.request.captioner, job.request.clip_model) == ("tiny-blip", "tiny-clip")  # resolved at submission
    result = services.queue.wait(job, timeout=120)
    assert isinstance(result, InterrogateResult) and not result.interrupted
    assert isinstance(result.sentence, str) and result.sentence.strip()
    lists = builtin_terms()
    assert [name for name, _term in result.terms] == [name for name in sorted(lists) for _ in range(lists[name][1])]
    assert all(term in lists[name][0] for name, term in result.terms)
    assert result.caption == ", ".join([result.sentence, *(term for _name, term in result.terms)])
    assert job.progress.steps == 1 + len(lists) and job.progress.step == job.progress.steps
    assert result.artifacts == [] and result.counted_images == 0

    again = services.run(InterrogateRequest(image=picture()), timeout=120)
    assert again.caption == result.caption  # greedy decoding and a fixed ranking: the same image, the same words


def test_blip_gives_the_caption_alone_and_needs_no_clip_model(services):
    full = services.run(InterrogateRequest(image=picture()), timeout=120)
    with hidden(services.config.models_dir, "interrogate"):
        alone = services.run(InterrogateRequest(image=picture(), model="BLIP"), timeout=120)
    assert alone.caption == alone.sentence == full.sentence and alone.terms == () and alone.clip_model is None


def test_another_captioner_is_found_by_its_config_and_chosen_by_name(services):
    """GIT is a decoder-only captioner that transformers loads as image-text-to-text, like Florence-2: any such
    folder is a captioner, in models/BLIP or (as here) models/interrogate beside the CLIP model."""
    blip = services.run(InterrogateRequest(image=picture(), model="blip"), timeout=120)
    git = services.run(InterrogateRequest(image=picture(), model="clip", captioner="TINY-GIT"), timeout=120)
    assert (git.captioner, git.clip_model) == ("tiny-git", "tiny-clip")
    assert git.sentence and git.sentence != blip.sentence
    assert [term for _name, term in git.terms] == [term for _name, term in services.run(
        InterrogateRequest(image=picture()), timeout=120).terms]  # the ranking does not depend on the captioner


def test_an_interrupted_job_keeps_its_caption_and_ranks_nothing(services):
    from modules.jobs.control import JobControl

    control = JobControl()
    control.interrupted.set()
    request = services.queue.kinds.get("interrogate").resolve(InterrogateRequest(image=picture()))
    result = services.queue.kinds.get("interrogate").run(request, control)
    assert result.interrupted and result.sentence and result.terms == () and result.caption == result.sentence


def test_a_list_in_models_interrogate_replaces_the_builtin_one(services):
    own = services.config.models_dir / "interrogate" / "mediums.top2.txt"
    own.write_text("# my mediums\nan etching\na mosaic of tiles\n\nan etching\n", encoding="utf-8")
    try:
        result = services.run(InterrogateRequest(image=picture()), timeout=120)
    finally:
        own.unlink()
    mediums = [term for name, term in result.terms if name == "mediums"]
    assert sorted(mediums) == ["a mosaic of tiles", "an etching"]


def test_missing_models_are_refused_before_queueing_naming_the_folder(services):
    before = len(services.queue.jobs())
    with hidden(services.config.models_dir, *NO_CAPTIONER), pytest.raises(RequestError) as caught:
        services.queue.submit(InterrogateRequest(image=picture()))
    assert caught.value.field == "model" and "models/BLIP/" in caught.value.message
    with hidden(services.config.models_dir, "interrogate"), pytest.raises(RequestError) as caught:
        services.queue.submit(InterrogateRequest(image=picture(), model="clip"))
    assert caught.value.field == "model" and "models/interrogate/" in caught.value.message
    with pytest.raises(RequestError) as caught:
        services.queue.submit(InterrogateRequest(image=picture(), captioner="no-such-blip"))
    assert caught.value.field == "captioner" and "tiny-blip" in caught.value.message
    for bad, field in ((InterrogateRequest(image=None), "image"), (InterrogateRequest(image=picture(),
                                                                                       model="deepdanbooru"), "model")):
        with pytest.raises(RequestError) as caught:
            services.queue.submit(bad)
        assert caught.value.field == field
    assert len(services.queue.jobs()) == before


def test_a_broken_model_folder_fails_its_job_naming_it_and_the_worker_goes_on(services):
    broken = services.config.models_dir / "BLIP" / "aaa-broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "blip"}', encoding="utf-8")
    try:
        job = services.queue.submit(InterrogateRequest(image=picture(), captioner="aaa-broken", model="blip"))
        with pytest.raises(RequestError) as caught:
            services.queue.wait(job, timeout=120)
        assert "models/BLIP/aaa-broken" in caught.value.message
    finally:
        shutil.rmtree(broken)
    assert services.run(InterrogateRequest(image=picture(), model="blip"), timeout=120).sentence


def test_the_job_and_its_caption_survive_a_restart(tmp_path, tiny_model_store, interrogate_models):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    shutil.copytree(interrogate_models, tmp_path / "models")
    config = AppConfig(models_dir=tmp_path / "models", outdir=tmp_path / "outputs", data_dir=tmp_path / "data")
    first = build_services(config)  # not started: the job waits in the store, with its image
    queued = first.queue.submit(InterrogateRequest(image=picture(), model="blip"))
    first.stop()

    second = build_services(config)
    second.start()
    try:
        job = second.queue.get(queued.id)
        result = second.queue.wait(job, timeout=120)
        assert job.kind == "interrogate" and result.sentence
    finally:
        second.stop()
    third = build_services(config)
    try:
        kept = third.queue.get(queued.id)
        assert kept.state == "done" and kept.result.caption == result.caption
        assert kept.request.captioner == "tiny-blip" and kept.request.image.size == (64, 64)
    finally:
        third.stop()


# -- A1111 and native APIs ------------------------------------------------------------------------------------------
def test_webuiapi_interrogate_returns_the_caption(studio):
    import webuiapi

    client = webuiapi.WebUIApi(host="127.0.0.1", port=studio.server.port)
    answer = client.interrogate(picture(), model="clip")
    expected = studio.services.run(InterrogateRequest(image=picture()), timeout=120).caption
    assert answer.info == expected and answer.json == {"caption": expected}


@pytest.mark.parametrize("body, status, words", [
    ({"model": "deepdanbooru"}, 404, "model not found"),
    ({"model": "clip", "image": ""}, 422, "image"),
    ({"model": "clip", "image": "bm90IGFuIGltYWdl"}, 422, "image"),
])
def test_interrogate_refuses_what_it_cannot_do(studio, body, status, words):
    answer = httpx.post(f"{studio.url}/sdapi/v1/interrogate", json={"image": b64(picture()), **body}, timeout=60)
    assert answer.status_code == status and words in answer.json()["detail"]


def test_interrogate_without_models_is_a_400_naming_the_folder(studio):
    models = studio.services.config.models_dir
    with hidden(models, *NO_CAPTIONER):
        answer = httpx.post(f"{studio.url}/sdapi/v1/interrogate", json={"image": b64(picture())}, timeout=60)
    assert answer.status_code == 400 and "models/BLIP/" in answer.json()["detail"]
    with hidden(models, "interrogate"):
        clip = httpx.post(f"{studio.url}/sdapi/v1/interrogate", json={"image": b64(picture())}, timeout=60)
        blip = httpx.post(f"{studio.url}/sdapi/v1/interrogate", json={"image": b64(picture()), "model": "blip"},
                          timeout=60)
    assert clip.status_code == 400 and "models/interrogate/" in clip.json()["detail"]
    assert blip.status_code == 200 and blip.json()["caption"]


def test_native_interrogate_job_gives_its_caption_in_the_result(studio):
    submitted = httpx.post(f"{studio.url}/api/v1/jobs", json={"kind": "interrogate", "image": b64(picture()),
                                                              "model": "clip"}, timeout=60)
    assert submitted.status_code == 202
    url = submitted.json()["urls"]["self"]
    for _ in range(600):
        view = httpx.get(url, timeout=60).json()
        if view["state"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert view["state"] == "done" and view["kind"] == "interrogate"
    expected = studio.services.run(InterrogateRequest(image=picture()), timeout=120)
    assert view["result"]["caption"] == expected.caption and view["result"]["captioner"] == "tiny-blip"
    assert [item["term"] for item in view["result"]["terms"]] == [term for _name, term in expected.terms]
    refused = httpx.post(f"{studio.url}/api/v1/jobs", json={"kind": "interrogate", "image": b64(picture()),
                                                            "bogus": 1}, timeout=60)
    assert refused.status_code == 422 and "bogus" in refused.json()["detail"]


# -- the img2img / inpaint button -----------------------------------------------------------------------------------
def test_the_interrogate_button_fills_the_prompt_from_the_input_image(services):
    expected = services.run(InterrogateRequest(image=picture()), timeout=120).caption
    assert interrogate_prompt(services, "init_image", {"init_image": picture(), "prompt": "old"}) == \
        {"prompt": expected}
    editor = {"background": picture().convert("RGBA"), "layers": [Image.new("RGBA", (64, 64))], "composite": None}
    assert interrogate_prompt(services, "inpaint_editor", {"inpaint_editor": editor}) == {"prompt": expected}
    listed = history_view(services, {})  # the click was a job like any other: in the history, with its words
    shown = show_job(services, {"history_ids": listed["history_ids"]}, 0)
    assert listed["history"][0][2] == "interrogate" and expected in shown["job_info"]


def test_the_interrogate_button_says_what_is_missing(services, tmp_path):
    assert "put an image in first" in interrogate_prompt(services, "init_image", {"init_image": None})[WARNING]
    with hidden(services.config.models_dir, *NO_CAPTIONER):
        notice = interrogate_prompt(services, "init_image", {"init_image": picture()})
    assert set(notice) == {WARNING} and "models/BLIP/" in notice[WARNING]
    text = tmp_path / "not-an-image.png"
    text.write_text("hello")
    assert "not a readable image" in interrogate_prompt(services, "init_image", {"init_image": str(text)})[WARNING]
