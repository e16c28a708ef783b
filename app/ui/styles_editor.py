"""The style editor under each generation tab's prompts: pick a style, edit it, save or delete it, or write the
selected styles into the prompt, as A1111's "Edit styles" does.

It sits in each tab (a closed accordion right under the prompt row) rather than in Settings because that is where
A1111 users look for it and because "apply the selected styles to the prompt" needs that tab's prompt. A save or a
delete in any tab gives every tab's Styles dropdown and style picker the new list at once, and each page load reads
the list again, so a style appears without a restart. The handlers are plain functions over values by name
(``"<tab>.<name>"``, as in ``Ui.joined()``), so tests call them without Gradio; they write only through the
engine's ``StyleStore`` (atomic, in A1111's CSV format).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.ui.accessible import NO_GENERATE_CLASS
from app.ui.form import INFO, WARNING, Values
from app.ui.generate import error_html, status_html
from modules.errors import RequestError
from modules.image.styles import MAX_TEXT_LENGTH, PROMPT_PLACEHOLDER, Style, StylesFileError, UnknownStyleError

if TYPE_CHECKING:
    from app.ui import Ui
    from app.ui.controls import GenerationTab
    from modules.image.styles import StyleStore
    from modules.runtime.services import Services

# The editor's fields as the user sees them, by the store's field names: a refusal names the field by its label.
LABELS = {"name": "Style name", "prompt": "Style prompt", "negative_prompt": "Style negative prompt"}
PROMPT_INFO = (f"{PROMPT_PLACEHOLDER} marks where your prompt goes; without it the style is added after your "
               f"prompt with a comma. At most {MAX_TEXT_LENGTH:,} characters.")
EDITOR_NAMES = ("style_pick", "style_name", "style_prompt", "style_negative", "style_save", "style_delete",
                "style_apply", "style_status")


def build_style_editor(services: Services, tab: GenerationTab) -> None:
    """The tab's "Edit styles" accordion (call inside the tab's layout, under its prompt row); its components join
    the tab's form under ``EDITOR_NAMES``, none of them a request field."""
    names = style_names(services.engine.styles)
    with gr.Accordion("Edit styles", open=False, elem_classes=[NO_GENERATE_CLASS]):
        with gr.Row(equal_height=True):
            tab.add("style_pick", gr.Dropdown(label="Style to edit", choices=names, value=None, scale=2,
                                              info="Fills the fields below; Save under a new name to copy it"),
                    request_field=False)
            tab.add("style_name", gr.Textbox(label=LABELS["name"], max_lines=1, scale=2), request_field=False)
        tab.add("style_prompt", gr.Textbox(label=LABELS["prompt"], lines=2, info=PROMPT_INFO,
                                           placeholder=f"e.g. cinematic still of {PROMPT_PLACEHOLDER}, film grain"),
                request_field=False)
        tab.add("style_negative", gr.Textbox(label=LABELS["negative_prompt"], lines=1), request_field=False)
        with gr.Row():
            tab.add("style_save", gr.Button("Save style", variant="primary", size="sm"), request_field=False)
            tab.add("style_delete", gr.Button("Delete style", variant="stop", size="sm"), request_field=False)
            tab.add("style_apply", gr.Button("Apply selected styles to the prompt", size="sm"),
                    request_field=False)
        tab.add("style_status", gr.HTML(""), request_field=False)


def wire_style_editors(services: Services, ui: Ui) -> None:
    """Every tab's editor events, plus the page-load refresh of every style list (call inside the Blocks)."""
    store = services.engine.styles
    tasks = tuple(task for task, tab in ui.generation.items() if "style_save" in tab.form)
    if not tasks:
        return
    joined = ui.joined()
    lists = [f"{task}.{name}" for task in tasks for name in ("styles", "style_pick")]
    for task in tasks:
        fields = [f"{task}.{name}" for name in ("style_name", "style_prompt", "style_negative")]
        joined.connect(joined[f"{task}.style_pick"].input, partial(pick_style, store, task), [f"{task}.style_pick"],
                       [*fields, f"{task}.style_status"], api_name=False, queue=False)
        joined.connect(joined[f"{task}.style_save"].click, partial(save_style, store, task, tasks), fields,
                       [*lists, f"{task}.style_status"], api_name=False)
        joined.connect(joined[f"{task}.style_delete"].click, partial(delete_style, store, task, tasks),
                       [f"{task}.style_name", *lists], [*lists, f"{task}.style_status"], api_name=False)
        prompts = [f"{task}.{name}" for name in ("prompt", "negative_prompt", "styles")]
        joined.connect(joined[f"{task}.style_apply"].click, partial(apply_styles, store, task), prompts,
                       [*prompts, f"{task}.style_status"], api_name=False)
    joined.connect(ui.blocks.load, partial(refresh_style_lists, store, tasks), [], lists, api_name=False,
                   queue=False)


def style_names(store: StyleStore) -> list[str]:
    return [style.name for style in store.list()]


def pick_style(store: StyleStore, task: str, values: Values) -> Values:
    """A style chosen in the picker fills the editor's fields (a style deleted meanwhile says so)."""
    name = values.get(f"{task}.style_pick")
    if not name:
        return {}
    try:
        style = store.get(name)
    except UnknownStyleError:
        return {f"{task}.style_status": error_html(LABELS["name"], f"{name!r} is no longer saved")}
    return {f"{task}.style_name": style.name, f"{task}.style_prompt": style.prompt,
            f"{task}.style_negative": style.negative_prompt, f"{task}.style_status": ""}


def save_style(store: StyleStore, task: str, tasks: Sequence[str], values: Values) -> Values:
    """Save: create the style or overwrite the one of that name; every tab's lists get the new choices. A refused
    style changes nothing and names the field."""
    style = Style(name=_text(values.get(f"{task}.style_name")), prompt=_text(values.get(f"{task}.style_prompt")),
                  negative_prompt=_text(values.get(f"{task}.style_negative")))
    try:
        previous = store.save(style)
    except RequestError as error:
        label = LABELS.get(error.field, error.field)
        return {f"{task}.style_status": error_html(label, error.message),
                WARNING: f"Style not saved: {label}: {error.message}."}
    except (StylesFileError, OSError) as error:
        return {f"{task}.style_status": error_html("styles.csv", str(error)), WARNING: f"Style not saved: {error}"}
    name = style.name.strip()
    verb = "Created" if previous is None else "Updated"
    names = style_names(store)
    updates = _lists(tasks, names, pick={task: name})
    updates[f"{task}.style_status"] = status_html(f"{verb} style {name!r}; it is in every tab's Styles list.")
    updates[INFO] = f"{verb} style {name!r}."
    return updates


def delete_style(store: StyleStore, task: str, tasks: Sequence[str], values: Values) -> Values:
    """Delete the style named in the editor. Its text stays in the fields, so Save puts it back (the undo); the
    style leaves every tab's selection too, since a selection naming a missing style could not generate."""
    name = _text(values.get(f"{task}.style_name")).strip()
    if not name:
        return {f"{task}.style_status": error_html(LABELS["name"], "name the style to delete (pick it above)"),
                WARNING: "Nothing deleted: no style name."}
    try:
        store.delete(name)
    except UnknownStyleError:
        return {f"{task}.style_status": error_html(LABELS["name"], f"no saved style is called {name!r}"),
                WARNING: f"Nothing deleted: no style is called {name!r}."}
    except (StylesFileError, OSError) as error:
        return {f"{task}.style_status": error_html("styles.csv", str(error)), WARNING: f"Style not deleted: {error}"}
    names = style_names(store)
    updates = _lists(tasks, names, pick={task: None})
    for other in tasks:
        selected = list(values.get(f"{other}.styles") or ())
        if name in selected:
            updates[f"{other}.styles"] = gr.update(choices=names, value=[item for item in selected if item != name])
        if values.get(f"{other}.style_pick") == name:
            updates[f"{other}.style_pick"] = gr.update(choices=names, value=None)
    updates[f"{task}.style_status"] = status_html(f"Deleted style {name!r}. Its text is still in the fields above: "
                                                  f"press Save style to put it back.")
    updates[INFO] = f"Deleted style {name!r} (Save style puts it back)."
    return updates


def apply_styles(store: StyleStore, task: str, values: Values) -> Values:
    """Write the selected styles into the prompt and negative prompt and clear the selection, as A1111's button
    does: the prompt can then be edited around the style's text, and the style is not applied twice."""
    selected = list(values.get(f"{task}.styles") or ())
    if not selected:
        return {INFO: "Select one or more styles in the Styles list first."}
    try:
        prompt, negative = store.apply(_text(values.get(f"{task}.prompt")),
                                       _text(values.get(f"{task}.negative_prompt")), selected)
    except UnknownStyleError as error:
        return {f"{task}.style_status": error_html("Styles", str(error)), WARNING: str(error)}
    return {f"{task}.prompt": prompt, f"{task}.negative_prompt": negative, f"{task}.styles": [],
            f"{task}.style_status": status_html(f"Applied {', '.join(selected)} to the prompt.")}


def refresh_style_lists(store: StyleStore, tasks: Sequence[str], _values: Values) -> Values:
    """On each page load: the lists as the file has them now (choices are otherwise fixed when the page is built,
    so a style saved after start-up, or added to styles.csv by hand, would be missing after a reload)."""
    return _lists(tasks, style_names(store))


def _lists(tasks: Sequence[str], names: list[str], pick: dict[str, str | None] | None = None) -> Values:
    """New choices for every tab's Styles dropdown and picker; ``pick`` also sets a tab's picker value."""
    updates: Values = {}
    for task in tasks:
        updates[f"{task}.styles"] = gr.update(choices=names)
        if pick is not None and task in pick:
            updates[f"{task}.style_pick"] = gr.update(choices=names, value=pick[task])
        else:
            updates[f"{task}.style_pick"] = gr.update(choices=names)
    return updates


def _text(value: Any) -> str:
    return "" if value is None else str(value)
