"""Handler-level checks of what the browser suite (tests/browser/) found: the starting size, the seed notice, the
preview shown in the gallery, a toast-only handler that must not fail the event. No browser needed."""

from __future__ import annotations

import gradio as gr
import pytest

from app.ui import choices
from app.ui.controls import keep_later_job, preview_in_gallery
from app.ui.form import WARNING, Form
from app.ui.request_form import request_from_form
from app.ui.send import send_image
from modules.errors import RequestError


def test_txt2img_starts_at_the_default_models_size_unless_a_size_was_saved(services):
    assert choices.start_size(services, "width") == 64 and choices.start_size(services, "height") == 64
    services.settings.update({"width": 128})
    assert choices.start_size(services, "width") == 128
    assert choices.model_size(services, "no such model") is None


@pytest.mark.parametrize("name", ["seed", "subseed"])
def test_a_seed_out_of_range_is_named_in_whole_numbers_with_minus_one_as_the_way_out(name):
    with pytest.raises(RequestError) as caught:
        request_from_form({"prompt": "a red circle", name: 99999999999.0})
    assert caught.value.field == name
    message = caught.value.message
    assert "99999999999" in message and "4294967295" in message and "-1" in message and "e+" not in message
    assert getattr(request_from_form({"prompt": "x", name: 4294967295}), name) == 4294967295
    assert getattr(request_from_form({"prompt": "x", name: -7}), name) == -1


def test_the_live_preview_is_shown_in_the_gallery_and_the_results_replace_it():
    preview = object()
    assert preview_in_gallery({"progress": "p", "preview": preview}) == {"progress": "p", "gallery": [preview]}
    assert preview_in_gallery({"preview": None, "status": "s"}) == {"status": "s"}
    final = {"preview": None, "gallery": ["a.png"]}
    assert preview_in_gallery(final) == {"gallery": ["a.png"]}


def test_an_ended_job_leaves_the_tabs_job_to_a_later_click():
    assert keep_later_job({"job": None, "status": "done"}) == {"status": "done"}
    assert keep_later_job({"job": "abc", "progress": ""}) == {"job": "abc", "progress": ""}


def test_a_handler_that_only_raises_a_toast_changes_nothing_instead_of_failing_the_event():
    """Send to img2img before any image: a notice, and one "no change" per output (an empty dict made Gradio
    answer HTTP 500: "didn't return enough output values")."""
    with gr.Blocks():
        form = Form({"result": gr.State({"items": [], "selected": 0}), "image": gr.Image(), "prompt": gr.Textbox()})
    registered = {}

    def trigger(fn, inputs, outputs, **_options):
        registered["fn"] = fn

    def send(values):
        return send_image({f"txt2img.{key}": value for key, value in values.items()}, "txt2img", "img2img")

    assert send({"result": {"items": [], "selected": 0}}) == {WARNING: "Nothing to send yet: generate an image first."}
    form.connect(trigger, send, ["result"], ["image", "prompt"])
    with pytest.warns(UserWarning):  # gr.Warning outside a request is a Python warning
        answer = registered["fn"]({form["result"]: {"items": [], "selected": 0}})
    assert isinstance(answer, tuple) and len(answer) == 2
    assert all(isinstance(item, dict) and item.get("__type__") == "update" and len(item) == 1 for item in answer)


def test_a_page_opens_with_one_load_answer_that_carries_the_saved_defaults(services):
    """Every control whose start is read at page load (saved defaults, the model list) is set by one load event,
    not one round trip each, and a saved setting is in that answer."""
    from app.ui import build_layout

    services.settings.update({"steps": 13})
    ui = build_layout(services)
    loads = [fn for fn in ui.blocks.fns.values()
             if any(target[1] == "load" for target in fn.targets) and not fn.inputs]
    # the saved defaults, the style lists (styles_editor), each tab's extension groups: not one per control
    assert len(loads) <= 6, [fn.name for fn in loads]
    steps = ui.generation["txt2img"].form["steps"]
    defaults = next(fn for fn in loads if steps in fn.outputs)
    values = dict(zip(defaults.outputs, defaults.fn(), strict=True))
    assert values[steps] == 13 and len(values) > 30
