"""The Settings tab: edit and save the persisted defaults; see the device and the loaded models.

Saved values are the defaults a generation tab starts with (read again on every page load) and what the next
launch uses; they never change a request already made, because every request carries its own values.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.ui import choices
from app.ui.form import INFO, WARNING, Form, Values
from app.ui.generate import error_html, status_html
from modules.runtime.settings import SETTING_TYPES
from modules.safety import SAFETY_MODES

if TYPE_CHECKING:
    from modules.runtime.services import Services



def build_settings(services: Services) -> Form:
    """Lay out and wire the tab (call inside a ``gr.Tab``)."""
    limits = services.config.limits
    form = Form()

    def current(key: str):
        """What a tab would start with: a saved value, else the default model's recommendation (sampler, steps,
        CFG), else the studio's default; read at each page load."""
        return lambda: choices.form_default(services, key)

    with gr.Row():
        with gr.Column():
            form["sd_model_checkpoint"] = gr.Dropdown(label="Default checkpoint",
                                                      choices=choices.model_titles(services),
                                                      value=lambda: choices.default_model(services),
                                                      allow_custom_value=True)
            with gr.Row():
                form["sampler"] = gr.Dropdown(label="Default sampler", choices=choices.sampler_names(),
                                              value=current("sampler"))
                form["scheduler"] = gr.Dropdown(label="Default schedule type", choices=choices.schedule_labels(),
                                                value=current("scheduler"))
            form["steps"] = gr.Slider(1, limits.max_steps, step=1, precision=0, label="Sampling steps",
                                      value=current("steps"))
            form["cfg_scale"] = gr.Slider(0, limits.max_cfg, step=0.5, label="CFG scale", value=current("cfg_scale"))
            with gr.Row():
                form["width"] = gr.Slider(0, limits.max_side, step=8, precision=0, label="Width",
                                          info="0 = the model's default size", value=current("width"))
                form["height"] = gr.Slider(0, limits.max_side, step=8, precision=0, label="Height",
                                           value=current("height"))
            with gr.Row():
                form["n_iter"] = gr.Slider(1, limits.max_batch_count, step=1, precision=0, label="Batch count",
                                           value=current("n_iter"))
                form["batch_size"] = gr.Slider(1, limits.max_batch_size, step=1, precision=0, label="Batch size",
                                               value=current("batch_size"))
            form["output_format"] = gr.Radio(list(choices.OUTPUT_FORMATS), label="Image format",
                                             value=current("output_format"))
            form["preview_interval"] = gr.Slider(0, 50, step=1, precision=0, label="Live preview every N steps",
                                                 info="0 = no live preview", value=current("preview_interval"))
            form["live_preview_method"] = gr.Radio(
                ["Approximate", "Full"], label="Live preview", value=current("live_preview_method"),
                info="Approximate: the latents' colours, almost free; Full: decoded by the VAE, costs a few steps")
            with gr.Row():
                form["save_images"] = gr.Checkbox(label="Save every image to the outputs folder",
                                                  value=current("save_images"))
                form["make_grid"] = gr.Checkbox(label="Save a grid for batches", value=current("make_grid"))
            form["safety"] = gr.Radio(list(SAFETY_MODES), label="NSFW filter",
                                      info="What a flagged image becomes (a checker in models/safety_checker is "
                                           "needed); API keys may impose their own", value=current("safety"))
            form["save"] = gr.Button("Save settings", variant="primary")
            form["status"] = gr.HTML("")
        with gr.Column():
            gr.Markdown("### Device")
            form["device"] = gr.Markdown(lambda: device_markdown(services))
            gr.Markdown("### Loaded models")
            form["memory"] = gr.Markdown(lambda: memory_markdown(services))
            form["refresh"] = gr.Button("Refresh", size="sm")
    form.connect(form["save"].click,
                 lambda values: save_settings(services.settings, values,
                                              shown=shown_settings(services, values)),
                 list(SETTING_TYPES), ["status"], api_name=False)
    form.connect(form["refresh"].click, lambda _values: {"memory": memory_markdown(services),
                                                         "device": device_markdown(services)},
                 [], ["memory", "device"], api_name=False, queue=False)
    return form


def save_settings(store: Any, values: Values, shown: Values | None = None) -> Values:
    """Clean the form's values and persist, in one atomic write, those that were saved before or that differ from
    what the tab shows when nothing is saved (``shown``): a setting the user never touched is not written, so it
    keeps following the default model's recommendation (the embedded model's CFG 4.5, not 7)."""
    cleaned: dict[str, Any] = {}
    try:
        for key, kind in SETTING_TYPES.items():
            if key not in values:
                continue
            value = values[key]
            if value is None or value == "":
                cleaned[key] = None if key == "sd_model_checkpoint" else store.get(key)
            else:
                cleaned[key] = kind(float(value)) if kind is int else kind(value)
        if cleaned.get("safety") not in (None, *SAFETY_MODES):
            raise ValueError(f"safety must be one of {', '.join(SAFETY_MODES)}")
        if cleaned.get("output_format") not in (None, *choices.OUTPUT_FORMATS):
            raise ValueError(f"output_format must be one of {', '.join(choices.OUTPUT_FORMATS)}")
        for key in ("width", "height"):
            if cleaned.get(key, 0) % 8:
                raise ValueError(f"{key} must be a multiple of 8 (or 0 for the model's default)")
        if shown is not None:
            cleaned = {key: value for key, value in cleaned.items()
                       if store.has(key) or key not in shown or not _same(value, shown[key])}
        store.update(cleaned)
    except (TypeError, ValueError, OSError) as error:
        return {"status": error_html("settings", str(error)), WARNING: f"Settings not saved: {error}"}
    return {"status": status_html(f"Saved {len(cleaned)} settings to {store.path}."), INFO: "Settings saved."}


def shown_settings(services: Services, values: Values) -> Values:
    """What the tab shows for each setting when the user has saved nothing: the values ``save_settings`` does not
    write unless they were changed."""
    shown = {key: choices.form_default(services, key) for key in values}
    if "sd_model_checkpoint" in shown:
        shown["sd_model_checkpoint"] = choices.default_model(services)
    return shown


def _same(value: Any, shown: Any) -> bool:
    if isinstance(value, (int, float)) and isinstance(shown, (int, float)) and not isinstance(value, bool):
        return abs(float(value) - float(shown)) < 1e-9
    return value == shown


def device_markdown(services: Services) -> str:
    return "\n".join(f"- {html.escape(line)}" for line in services.device_report) or "(no device report)"


def memory_markdown(services: Services) -> str:
    """Each loaded checkpoint and what was applied to fit it in memory (read-only)."""
    report = services.engine.pipelines.memory_report()
    lines = [
        f"- **{html.escape(title)}**: {html.escape('; '.join(items)) or 'defaults'}" for title, items in report.items()
    ]
    return "\n".join(lines) or "No model loaded yet."
