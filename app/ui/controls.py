"""The controls every generation tab shares, built once per tab, and the events that tie them to the engine.

A tab module (txt2img, img2img, inpaint) builds its own image controls and calls these builders; each control
is registered in the tab's ``Form`` under its request field name and listed in ``GenerationTab.inputs`` when its
value belongs in the request. Defaults are read from the persisted settings when a page loads (Gradio calls a
callable ``value`` on load), so a saved default reaches the next browser tab without a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.ui import choices, token_count
from app.ui.accessible import DICE_GLYPH, REFRESH_GLYPH, REUSE_GLYPH, icon_button
from app.ui.following import TabFollowers
from app.ui.form import SESSION, Form, Values
from app.ui.generate import generation_events, interrupt, skip
from app.ui.paste import paste_prompt
from app.ui.results import empty_state, random_seed, random_subseed, reuse_seed, select_image

if TYPE_CHECKING:
    from modules.runtime.services import Services

OUTPUT_NAMES = ("job", "progress", "gallery", "infotext", "status", "result", "interrupt", "skip")
# A tab's row of settings beside results, and its results column: on a narrow screen the results come first, right
# under the prompt and Generate, instead of after every control (see the media query in app/ui/__init__.py).
EXTENSION_GROUP = "ext_group."  # form name prefix of the column holding one extension's controls
WORKSPACE_CLASS = "sf-workspace"
OUTPUT_CLASS = "sf-output"


@dataclass
class GenerationTab:
    """One generation tab: its task, its named components, and which of them make up the request."""

    task: str
    form: Form = field(default_factory=Form)
    inputs: list[str] = field(default_factory=list)
    followers: TabFollowers = field(default_factory=TabFollowers)  # the newest job of each browser session

    def add(self, name: str, component: Any, request_field: bool = True) -> Any:
        self.form[name] = component
        if request_field:
            self.inputs.append(name)
        return component


def extension_controls(services: Services, tab: GenerationTab) -> None:
    """Each active extension's controls for this tab, named ``ext.<extension>.<setting>`` so their values reach
    the extension by name inside the request. A control builder that raises marks its extension failed and the
    tab is built without it."""
    manager = services.extensions
    for name, build in manager.controls(tab.task):
        with gr.Column() as group:  # shown or hidden at each page load: see extension_visibility
            try:
                built = build() or {}
            except Exception as error:  # an extension's UI code must not break the studio's page
                manager.mark_failed(name, f"controls for {tab.task} raised {type(error).__name__}: {error}")
                continue
        tab.add(f"{EXTENSION_GROUP}{name}", group, request_field=False)
        for key, component in built.items():
            tab.add(f"ext.{name}.{key}", component)


def extension_groups(tab: GenerationTab) -> list[str]:
    """The names of the tab's per-extension control groups."""
    return [name for name in tab.form.names() if name.startswith(EXTENSION_GROUP)]


def extension_visibility(services: Services, tab: GenerationTab, values: Values) -> Values:
    """At each page load: only extensions active now show their controls. The Blocks are built once, at launch,
    so an extension disabled later (Extensions tab) would otherwise keep its controls until a restart."""
    active = {item.name for item in services.extensions.active()}
    return {name: gr.update(visible=name[len(EXTENSION_GROUP):] in active) for name in extension_groups(tab)}


def icon(text: str, key: str) -> gr.Button:
    """A small icon button with its tooltip and accessible name (see app/ui/accessible.py)."""
    return gr.Button(text, size="sm", scale=0, min_width=40, **icon_button(key))


def setting(services: Services, key: str) -> Callable[[], Any]:
    """A page-load default: the saved setting, else the default model's own recommendation (see choices)."""
    return lambda: choices.form_default(services, key)


def model_row(services: Services, tab: GenerationTab) -> None:
    with gr.Row(equal_height=True):
        tab.add("model", gr.Dropdown(label="Checkpoint", choices=choices.model_titles(services),
                                     value=partial(choices.default_model, services), scale=4,
                                     allow_custom_value=True))
        tab.add("vae", gr.Dropdown(label="SD VAE", choices=choices.vae_names(services), value=choices.AUTOMATIC_VAE,
                                   scale=2))
        tab.add("refresh_models", icon(REFRESH_GLYPH, "refresh-models"), request_field=False)


def prompt_row(services: Services, tab: GenerationTab, interrogate: bool = False) -> None:
    """Prompt, negative prompt, Generate and its companions; ``interrogate`` adds the button that writes the
    prompt from the tab's input image (img2img, inpaint: see app/ui/interrogate.py)."""
    with gr.Row():
        with gr.Column(scale=5):
            tab.add("prompt", gr.Textbox(label="Prompt", lines=3, placeholder="Prompt (or paste an infotext and "
                                                                            "press ↙️ to read its parameters)"))
            token_counter(tab, "prompt")
            tab.add("negative_prompt", gr.Textbox(label="Negative prompt", lines=2))
            token_counter(tab, "negative_prompt")
        with gr.Column(scale=1, min_width=180):
            tab.add("generate", gr.Button("Generate", variant="primary"), request_field=False)
            with gr.Row():
                # Shown while this tab's job runs (as A1111's Generate turns into them); Generate stays, since
                # each click queues one more job.
                tab.add("interrupt", gr.Button("Interrupt", variant="stop", size="sm", visible=False),
                        request_field=False)
                tab.add("skip", gr.Button("Skip", size="sm", visible=False), request_field=False)
            tab.add("paste", gr.Button("↙️ Read parameters", size="sm"), request_field=False)
            if interrogate:
                tab.add("interrogate", gr.Button("Interrogate", size="sm"), request_field=False)
            tab.add("styles", gr.Dropdown(label="Styles", choices=choices.style_names(services), multiselect=True,
                                          value=[]))


def token_counter(tab: GenerationTab, name: str) -> None:
    """A1111's "12/75" under a prompt box, counted in the browser (see app/ui/token_count.py): a server event on
    the prompt would race the Generate click. ``.change`` also follows a prompt set by paste or "send to"."""
    counter = tab.add(f"{name}_tokens", gr.HTML(token_count.EMPTY, elem_classes=["sf-token-count"],
                                                padding=False), request_field=False)
    tab.form[name].change(None, inputs=tab.form[name], outputs=counter, js=token_count.COUNT_JS, queue=False,
                          show_progress="hidden", api_name=False)


def sampling_controls(services: Services, tab: GenerationTab, size_note: str) -> None:
    limits = services.config.limits

    def size(key: str) -> Callable[[], Any]:  # img2img and inpaint keep 0, "the input image's size"
        return partial(choices.start_size, services, key) if tab.task == "txt2img" else setting(services, key)

    with gr.Row():
        tab.add("sampler_name", gr.Dropdown(label="Sampling method", choices=choices.sampler_names(),
                                            value=setting(services, "sampler")))
        tab.add("scheduler", gr.Dropdown(label="Schedule type", choices=choices.schedule_labels(),
                                         value=setting(services, "scheduler")))
    tab.add("steps", gr.Slider(1, limits.max_steps, step=1, precision=0, label="Sampling steps",
                               value=setting(services, "steps")))
    with gr.Row():
        with gr.Column(scale=3):
            tab.add("width", gr.Slider(0, limits.max_side, step=8, precision=0, label="Width", info=size_note,
                                       value=size("width")))
            tab.add("height", gr.Slider(0, limits.max_side, step=8, precision=0, label="Height",
                                        value=size("height")))
        with gr.Column(scale=1, min_width=160):
            tab.add("n_iter", gr.Slider(1, limits.max_batch_count, step=1, precision=0, label="Batch count",
                                        value=setting(services, "n_iter")))
            tab.add("batch_size", gr.Slider(1, limits.max_batch_size, step=1, precision=0, label="Batch size",
                                            value=setting(services, "batch_size")))
    tab.add("cfg_scale", gr.Slider(0, limits.max_cfg, step=0.5, label="CFG scale",
                                   value=setting(services, "cfg_scale")))
    with gr.Row(equal_height=True):
        tab.add("seed", gr.Number(label="Seed", value=-1, precision=0, info="-1 = random", scale=4))
        tab.add("seed_random", icon(DICE_GLYPH, "random-seed"), request_field=False)
        tab.add("seed_reuse", icon(REUSE_GLYPH, "reuse-seed"), request_field=False)
    with gr.Accordion("Variation seed", open=False):
        with gr.Row(equal_height=True):
            tab.add("subseed", gr.Number(label="Variation seed", value=-1, precision=0, scale=4))
            tab.add("subseed_random", icon(DICE_GLYPH, "random-subseed"), request_field=False)
        tab.add("subseed_strength", gr.Slider(0, 1, step=0.01, value=0, label="Variation strength"))
    tab.add("clip_skip", gr.Slider(1, 12, step=1, precision=0, value=1, label="Clip skip"))


def output_panel(tab: GenerationTab, send_targets: tuple[str, ...]) -> None:
    tab.add("job", gr.State(None), request_field=False)
    tab.add("result", gr.State(empty_state()), request_field=False)
    with gr.Group(elem_classes=["sf-result"]):  # the progress bar lies over the top of the gallery (see CSS)
        tab.add("progress", gr.HTML("", elem_classes=["sf-progress-over"]), request_field=False)
        tab.add("gallery", gr.Gallery(label="Output", columns=4, height=512, format="png", interactive=False,
                                      object_fit="contain"), request_field=False)
    with gr.Row():
        for target in send_targets:
            tab.add(f"send_{target}", gr.Button(f"Send to {target}", size="sm"), request_field=False)
    tab.add("infotext", gr.Textbox(label="Generation parameters", lines=4, interactive=False, buttons=["copy"]),
            request_field=False)
    tab.add("status", gr.HTML(""), request_field=False)


def wire(services: Services, tab: GenerationTab) -> None:
    """The events every generation tab has: generate, interrupt, skip, paste, seeds, gallery, model refresh."""
    form = tab.form
    task = tab.task
    form.connect(form["generate"].click, partial(run_tab, services, task, tab.followers), tab.inputs, OUTPUT_NAMES,
                 api_name=f"{task}_generate", concurrency_limit=None, trigger_mode="multiple",  # each click a job
                 session=True)
    form.connect(form["interrupt"].click, partial(interrupt, services), ["job"], [], api_name=False, queue=False)
    form.connect(form["skip"].click, partial(skip, services), ["job"], [], api_name=False, queue=False)
    pasted = [name for name in tab.inputs if name not in ("init_image", "inpaint_editor", "mask_upload")
              and not name.startswith("cn.")]
    form.connect(form["paste"].click, partial(paste_tab, services, pasted), ["prompt"], pasted, api_name=False)
    form.connect(form["seed_random"].click, random_seed, ["seed"], ["seed"], api_name=False, queue=False)
    form.connect(form["subseed_random"].click, random_subseed, ["subseed"], ["subseed"], api_name=False,
                 queue=False)
    form.connect(form["seed_reuse"].click, reuse_seed, ["result"], ["seed"], api_name=False, queue=False)
    form.connect(form["refresh_models"].click, partial(refresh_models, services), ["model", "vae"],
                 ["model", "vae"], api_name=False)

    def on_select(data: dict, event: gr.SelectData) -> dict:
        return form.by_component(select_image(form.by_name(data), event.index))

    form["gallery"].select(on_select, inputs={form["result"]}, outputs=[form["result"], form["infotext"]],
                           api_name=False, queue=False)


def run_tab(services: Services, task: str, followers: TabFollowers, values: Values):
    """A tab's Generate: the tab's task goes with its values; the live preview is shown in the result gallery;
    the page follows the newest job of this tab in this browser session (see app/ui/following.py)."""
    following = followers.slot(values.pop(SESSION, None), task)
    for update in generation_events(services, {**values, "task": task}, following=following):
        yield keep_later_job(preview_in_gallery(job_buttons(update)))


def job_buttons(update: Values) -> Values:
    """Interrupt and Skip appear when a job starts and go when it ends (``job`` set, or set to None)."""
    if "job" not in update:
        return update
    running = update["job"] is not None
    return {**update, "interrupt": gr.update(visible=running), "skip": gr.update(visible=running)}


def keep_later_job(update: Values) -> Values:
    """An ended job does not clear the tab's job: with each click a job, a later click's job may still run, and
    Interrupt and Skip must still reach it (both leave an ended job alone)."""
    if "job" in update and update["job"] is None:
        update = {name: value for name, value in update.items() if name != "job"}
    return update


def preview_in_gallery(update: Values) -> Values:
    """The live preview takes the gallery's place while the job runs (as in A1111), so the page has one picture
    area under the progress bar instead of an empty Preview box beside the results."""
    update = dict(update)
    preview = update.pop("preview", None)
    if preview is not None and "gallery" not in update:
        update["gallery"] = [preview]
    return update


def paste_tab(services: Services, names: list[str], values: Values) -> Values:
    return paste_prompt(services, values, names)


def refresh_models(services: Services, values: Values) -> Values:
    """↻: rescan the checkpoint folders; keep the selection when it is still installed."""
    services.engine.registry.refresh()
    titles = choices.model_titles(services)
    current = values.get("model")
    value = current if current in titles else choices.default_model(services)
    vaes = choices.vae_names(services)
    vae = values.get("vae") if values.get("vae") in vaes else choices.AUTOMATIC_VAE
    return {"model": gr.update(choices=titles, value=value), "vae": gr.update(choices=vaes, value=vae)}
