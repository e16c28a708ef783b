"""The style editor's handlers (app/ui/styles_editor.py), called with values by name on a real styles.csv, and
once through the registered Gradio events of the built studio: what the user sees in the status line, the toasts,
every tab's Styles list, and the file A1111 reads."""

from __future__ import annotations

import html
import re

import pytest

from app.ui.form import INFO, WARNING
from app.ui.styles_editor import (
    EDITOR_NAMES,
    apply_styles,
    delete_style,
    pick_style,
    refresh_style_lists,
    save_style,
)
from modules.image.styles import MAX_TEXT_LENGTH, Style, StyleStore

TASKS = ("txt2img", "img2img", "inpaint")


@pytest.fixture
def store(tmp_path) -> StyleStore:
    path = tmp_path / "styles.csv"
    path.write_text("name,prompt,negative_prompt\nnoir,\"film noir still of {prompt}\",colour\nsharp,sharp,\n",
                    encoding="utf-8")
    return StyleStore(path)


def shown(markup: str) -> str:
    """A status line's text as the page shows it."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def editor(task: str = "txt2img", **fields: str) -> dict[str, str]:
    return {f"{task}.style_{name}": value for name, value in fields.items()}


def test_save_creates_a_style_and_every_tab_lists_it(store):
    updates = save_style(store, "txt2img", TASKS, editor(name="watercolour", prompt="{prompt}, watercolour",
                                                         negative="photo"))
    assert store.get("watercolour") == Style("watercolour", "{prompt}, watercolour", "photo")
    for task in TASKS:
        assert updates[f"{task}.styles"]["choices"] == ["noir", "sharp", "watercolour"]
        assert "value" not in updates[f"{task}.styles"]  # a tab's selection is left as it was
        assert updates[f"{task}.style_pick"]["choices"] == ["noir", "sharp", "watercolour"]
    assert updates["txt2img.style_pick"]["value"] == "watercolour"
    assert "Created style 'watercolour'" in shown(updates["txt2img.style_status"]) and "Created" in updates[INFO]
    assert "watercolour,\"{prompt}, watercolour\",photo" in store.path.read_text(encoding="utf-8")


def test_save_over_an_existing_name_updates_it_in_place(store):
    updates = save_style(store, "img2img", TASKS, editor("img2img", name="noir", prompt="noir {prompt}",
                                                         negative=""))
    assert "Updated style 'noir'" in shown(updates["img2img.style_status"])
    assert StyleStore(store.path).list() == [Style("noir", "noir {prompt}"), Style("sharp", "sharp")]


@pytest.mark.parametrize(("fields", "label"), [
    ({"name": "", "prompt": "p"}, "Style name"),
    ({"name": "  ", "prompt": "p"}, "Style name"),
    ({"name": "two\nlines", "prompt": "p"}, "Style name"),
    ({"name": "long", "prompt": "p" * (MAX_TEXT_LENGTH + 1)}, "Style prompt"),
    ({"name": "long", "prompt": "", "negative": "n" * (MAX_TEXT_LENGTH + 1)}, "Style negative prompt"),
])
def test_a_refused_style_names_the_field_and_changes_nothing(store, fields, label):
    before = store.path.read_bytes()
    updates = save_style(store, "txt2img", TASKS, editor(**fields))
    assert set(updates) == {"txt2img.style_status", WARNING}  # no list is touched
    assert f"<b>{label}</b>" in updates["txt2img.style_status"] and 'role="alert"' in updates["txt2img.style_status"]
    assert updates[WARNING].startswith(f"Style not saved: {label}: ")
    assert store.path.read_bytes() == before


def test_an_unreadable_file_is_reported_and_left_alone(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(b"name,prompt\nx,\xff\n")
    store = StyleStore(path)
    updates = save_style(store, "txt2img", TASKS, editor(name="new", prompt="p"))
    assert "cannot be read" in updates[WARNING] and "styles.csv" in updates["txt2img.style_status"]
    assert path.read_bytes() == b"name,prompt\nx,\xff\n"


def test_picking_a_style_fills_the_fields(store):
    assert pick_style(store, "inpaint", {"inpaint.style_pick": "noir"}) == {
        "inpaint.style_name": "noir", "inpaint.style_prompt": "film noir still of {prompt}",
        "inpaint.style_negative": "colour", "inpaint.style_status": ""}
    assert pick_style(store, "inpaint", {"inpaint.style_pick": None}) == {}
    store.delete("noir")  # deleted from another tab meanwhile
    gone = pick_style(store, "inpaint", {"inpaint.style_pick": "noir"})
    assert "no longer saved" in shown(gone["inpaint.style_status"])


def test_delete_removes_it_everywhere_and_save_puts_it_back(store):
    values = {**editor("img2img", name="noir", prompt="film noir still of {prompt}", negative="colour"),
              "txt2img.styles": ["noir", "sharp"], "img2img.styles": ["sharp"], "inpaint.styles": ["noir"],
              "txt2img.style_pick": "noir", "img2img.style_pick": "noir", "inpaint.style_pick": None}
    updates = delete_style(store, "img2img", TASKS, values)
    assert store.names() == ["sharp"]
    assert updates["txt2img.styles"] == {"__type__": "update", "choices": ["sharp"], "value": ["sharp"]}
    assert updates["inpaint.styles"]["value"] == []
    assert "value" not in updates["img2img.styles"]  # its selection did not hold the deleted style
    assert updates["txt2img.style_pick"]["value"] is None and updates["img2img.style_pick"]["value"] is None
    assert "Save style to put it back" in shown(updates["img2img.style_status"]) and "puts it back" in updates[INFO]
    assert "img2img.style_name" not in updates  # the fields keep the text: the undo is one click on Save
    save_style(store, "img2img", TASKS, values)
    assert StyleStore(store.path).get("noir") == Style("noir", "film noir still of {prompt}", "colour")


def test_delete_without_a_name_or_of_an_unknown_style_says_so(store):
    before = store.path.read_bytes()
    assert "no style name" in delete_style(store, "txt2img", TASKS, editor(name=" "))[WARNING]
    updates = delete_style(store, "txt2img", TASKS, editor(name="nope"))
    assert "no style is called 'nope'" in updates[WARNING] and set(updates) == {"txt2img.style_status", WARNING}
    assert store.path.read_bytes() == before


def test_apply_writes_the_selected_styles_into_the_prompt_and_clears_the_selection(store):
    values = {"txt2img.prompt": "a cat", "txt2img.negative_prompt": "blurry", "txt2img.styles": ["sharp", "noir"]}
    updates = apply_styles(store, "txt2img", values)
    assert updates["txt2img.prompt"] == "film noir still of a cat, sharp"
    assert updates["txt2img.negative_prompt"] == "blurry, colour"
    assert updates["txt2img.styles"] == []
    assert INFO in apply_styles(store, "txt2img", {**values, "txt2img.styles": []})


def test_each_page_load_reads_the_list_again(store):
    store.path.write_text("name,prompt,negative_prompt\nby hand,x,\n", encoding="utf-8")
    updates = refresh_style_lists(store, TASKS, {})
    assert {updates[f"{task}.{name}"]["choices"][0] for task in TASKS for name in ("styles", "style_pick")} == {
        "by hand"}


def test_the_built_studio_wires_the_editor_of_every_tab(services):
    """The registered events, called as Gradio calls them (component-keyed dicts): a save in txt2img reaches
    every tab's Styles dropdown, and the page-load event lists the styles saved after the page was built."""
    from app.ui import build_layout

    ui = build_layout(services)
    joined = ui.joined()
    for task in TASKS:
        assert set(EDITOR_NAMES) <= set(ui.generation[task].form.names())
        assert not set(EDITOR_NAMES) & set(ui.generation[task].inputs)  # none of them goes into a request
    save = next(fn for fn in ui.blocks.fns.values() if joined["txt2img.style_save"]._id in
                [target[0] for target in fn.targets])
    values = {"txt2img.style_name": "moody", "txt2img.style_prompt": "{prompt}, moody light",
              "txt2img.style_negative": "flat"}
    by_component = save.fn({joined[name]: value for name, value in values.items()})
    assert set(by_component) <= set(save.outputs)
    for task in TASKS:
        assert by_component[joined[f"{task}.styles"]]["choices"] == ["moody"]
    assert services.engine.styles.get("moody").negative_prompt == "flat"

    load = next(fn for fn in ui.blocks.fns.values() if any(target[1] == "load" for target in fn.targets)
                and joined["txt2img.styles"] in fn.outputs)
    services.engine.styles.save(Style("later", "later"))
    refreshed = load.fn()
    assert refreshed[joined["inpaint.styles"]]["choices"] == ["moody", "later"]
