"""The "Extra networks" accordion: the LoRAs and embeddings of the models folder, searchable, a click writing the
A1111 syntax into the prompt (driven through the handlers Gradio registered, no browser)."""

from __future__ import annotations

import shutil

import pytest

from app.ui.extra_networks import add, insert, matching


@pytest.fixture(scope="module")
def ui_and_services(tmp_path_factory, network_files):
    from app.ui import build_layout
    from tests.helpers import studio_services

    root = tmp_path_factory.mktemp("extra-networks-ui")
    for folder in ("Lora", "embeddings"):
        shutil.copytree(network_files / folder, root / "models" / folder)
    services = studio_services(root)  # no model is needed to list files
    return build_layout(services), services


def handler(ui, tab, inputs):
    """The registered function whose inputs are exactly ``inputs`` (components of ``tab``)."""
    wanted = [tab.form[name] for name in inputs]
    return next(fn for fn in ui.blocks.fns.values() if list(fn.inputs) == wanted)


def test_insert_and_search_rules():
    assert insert("", "<lora:ink:1>") == "<lora:ink:1>"
    assert insert("a cat", "<lora:ink:1>") == "a cat <lora:ink:1>"
    assert insert("a cat", "shinyemb") == "a cat, shinyemb"
    assert insert("a cat,", "shinyemb") == "a cat, shinyemb"
    assert insert("a cat <lora:ink:1>", "<lora:ink:1>") == "a cat <lora:ink:1>"  # a second click adds nothing
    assert matching(["PeftStyle", "kohyastyle", "other"], "STYLE koh") == ["kohyastyle"]
    assert add(["ink"], True, "a cat", "blurry", tag=True) == ("a cat", "blurry <lora:ink:1>")


@pytest.mark.parametrize("task", ["txt2img", "img2img", "inpaint"])
def test_each_tab_lists_the_files_and_a_click_writes_the_prompt(ui_and_services, task):
    ui, services = ui_and_services
    tab = ui.generation[task]
    loras, embeddings = tab.form["extra_networks_loras"], tab.form["extra_networks_embeddings"]
    assert ["peftstyle"] in loras.samples and ["other"] in loras.samples
    assert ["shinyemb"] in embeddings.samples

    search = handler(ui, tab, ["extra_networks_search"])
    found_loras, found_embeddings = search.fn("kohya")
    assert found_loras["samples"] == [["kohyastyle"]] and found_embeddings["samples"] == []

    click_lora = handler(ui, tab, ["extra_networks_loras", "extra_networks_negative", "prompt", "negative_prompt"])
    assert click_lora.fn(["peftstyle"], False, "a cat", "") == ("a cat <lora:peftstyle:1>", "")
    click_embedding = next(fn for fn in ui.blocks.fns.values()
                           if list(fn.inputs)[:1] == [embeddings] and len(fn.inputs) == 4)
    assert click_embedding.fn(["shinyemb"], True, "a cat", "blurry") == ("a cat", "blurry, shinyemb")
