"""The ControlNet accordion of the txt2img, img2img and inpaint tabs: a few units, each an image, a preprocessor,
a model and how strongly and when it steers.

The controls are named ``cn.<unit>.<field>`` with the request's own field names, so ``request_from_form`` turns
them into ``ControlNetUnit``s of the one request type. "Preview" runs the unit's preprocessor on its image and
shows what the ControlNet will read, before anything is generated (``app/ui/controlnet_preprocessor.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from app.ui.accessible import REFRESH_GLYPH
from app.ui.form import Values
from app.ui.uploads import named_upload
from modules.controlnet.units import CONTROL_MODES, HR_OPTIONS, RESIZE_MODES, ControlNetUnit
from modules.errors import RequestError

if TYPE_CHECKING:
    from app.ui.controls import GenerationTab
    from modules.runtime.services import Services

UNIT_COUNT = 2
PREFIX = "cn."
NO_MODEL = "None"


def field(unit: int, name: str) -> str:
    return f"{PREFIX}{unit}.{name}"


def model_choices(services: Services) -> list[str]:
    return [NO_MODEL, *(info.title for info in services.engine.controlnets.list())]


def build_controlnet(services: Services, tab: GenerationTab) -> None:
    """Lay out the accordion (call inside the tab's settings column) and wire Preview and Refresh."""
    with gr.Accordion("ControlNet", open=False, elem_id=f"{tab.task}_controlnet"):
        gr.Markdown("A unit steers the picture with a control image: its lines or edges decide shapes and places, "
                    "the prompt the rest. ControlNet models live in `models/ControlNet`."
                    + ("" if tab.task == "txt2img" else " Without an image of its own, a unit reads the input image."))
        with gr.Tabs():
            for unit in range(UNIT_COUNT):
                with gr.Tab(f"Unit {unit}"):
                    _unit_controls(services, tab, unit)


def _unit_controls(services: Services, tab: GenerationTab, unit: int) -> None:
    from app.ui.controlnet_preprocessor import build_preprocessor_controls
    from app.ui.controls import icon

    add = tab.add
    with gr.Row():
        add(field(unit, "enabled"), gr.Checkbox(label="Enable", value=False))
        add(field(unit, "pixel_perfect"), gr.Checkbox(label="Pixel perfect", value=False,
                                                      info="preprocess at the output's size"))
    image = add(field(unit, "image"), named_upload(gr.Image(label="Control image", type="pil", image_mode="RGB",
                                                            sources=["upload", "clipboard"], height=240)))
    with gr.Row():
        add(field(unit, "model"), gr.Dropdown(label="Model", choices=model_choices(services), value=NO_MODEL))
        add(field(unit, "refresh"), icon(REFRESH_GLYPH, "refresh-controlnets"), request_field=False)
    built = build_preprocessor_controls(image, services.engine.controlnets.models_dir,
                                        elem_prefix=f"{tab.task}-controlnet-{unit}")
    for name in ("module", "processor_res", "threshold_a", "threshold_b"):
        add(field(unit, name), getattr(built, name))
    add(field(unit, "preview"), built.preview_image, request_field=False)
    with gr.Row():
        add(field(unit, "weight"), gr.Slider(0, 2, step=0.05, value=1.0, label="Control weight"))
        add(field(unit, "guidance_start"), gr.Slider(0, 1, step=0.01, value=0.0, label="Starting control step"))
        add(field(unit, "guidance_end"), gr.Slider(0, 1, step=0.01, value=1.0, label="Ending control step"))
    add(field(unit, "control_mode"), gr.Radio(list(CONTROL_MODES), value=CONTROL_MODES[0], label="Control mode"))
    add(field(unit, "resize_mode"), gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[1], label="Resize mode"))
    if tab.task == "txt2img":
        add(field(unit, "hr_option"), gr.Radio(list(HR_OPTIONS), value=HR_OPTIONS[0], label="Hires fix passes"))
    tab.form.connect(tab.form[field(unit, "refresh")].click, lambda values: refresh(services, values, unit),
                     [field(unit, "model")], [field(unit, "model")], api_name=False)


def refresh(services: Services, values: Values, unit: int) -> Values:
    titles = model_choices(services)
    current = values.get(field(unit, "model"))
    return {field(unit, "model"): gr.update(choices=titles, value=current if current in titles else NO_MODEL)}


def units_from_form(values: Values) -> tuple[ControlNetUnit, ...]:
    """The enabled units of a tab's form; an enabled unit without a model is refused naming its field."""
    units = []
    for unit in range(UNIT_COUNT):
        if not values.get(field(unit, "enabled")):
            continue
        model = values.get(field(unit, "model"))
        if not model or model == NO_MODEL:
            raise RequestError(f"controlnet[{unit}].model", f"ControlNet unit {unit} is enabled: choose its model "
                                                            "(or untick Enable)")
        settings: dict[str, Any] = {"model": str(model), "image": values.get(field(unit, "image"))}
        for name in ("control_mode", "resize_mode", "hr_option"):
            if values.get(field(unit, name)) is not None:
                settings[name] = str(values[field(unit, name)])
        from modules.controlnet import preprocessors

        # The dropdown shows the extension's labels; the request (and the infotext) carries the module's name.
        settings["module"] = preprocessors.find(values.get(field(unit, "module")), f"controlnet[{unit}].module").name
        for name in ("weight", "guidance_start", "guidance_end", "threshold_a", "threshold_b"):
            if values.get(field(unit, name)) is not None:
                settings[name] = float(values[field(unit, name)])
        if values.get(field(unit, "processor_res")) is not None:
            settings["processor_res"] = int(values[field(unit, "processor_res")])
        settings["pixel_perfect"] = bool(values.get(field(unit, "pixel_perfect")))
        units.append(ControlNetUnit(**settings))
    return tuple(units)
