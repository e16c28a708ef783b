"""↙️ "Read generation parameters": an infotext (pasted in the prompt box, or read from a PNG) -> form fields.

Only values the form can take are set: a sampler, schedule or upscaler this studio does not offer, or a model
that is not installed, leaves that control as it is (and says so) instead of putting an invalid value in a
dropdown. Fields an infotext leaves out because they were off (variation seed, hires fix) are reset, so the
pasted form reproduces the image.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType
from typing import TYPE_CHECKING

from app.ui import choices
from app.ui.form import INFO, WARNING, Values

if TYPE_CHECKING:
    from modules.image.request import Limits
    from modules.runtime.services import Services

# Request fields that go into a control of the same name unchanged.
DIRECT_FIELDS = (
    "prompt", "negative_prompt", "steps", "cfg_scale", "seed", "width", "height", "subseed", "subseed_strength",
    "clip_skip", "denoising_strength", "mask_blur", "hr_scale", "hr_second_pass_steps", "hr_resize_x",
    "hr_resize_y", "enable_hr",
)
# What an infotext's silence means for these fields.
RESET_WHEN_ABSENT = MappingProxyType({"subseed": -1, "subseed_strength": 0.0, "enable_hr": False})


def _inpaint_updates(fields: Values) -> Values:
    """Inpaint area, padding and outpaint margins, as the inpaint tab's controls hold them."""
    from app.ui.request_form import INPAINT_AREAS

    updates: Values = {}
    if "inpaint_full_res" in fields:
        updates["inpaint_area"] = INPAINT_AREAS[1 if fields["inpaint_full_res"] else 0]
    if "inpaint_full_res_padding" in fields:
        updates["inpaint_full_res_padding"] = fields["inpaint_full_res_padding"]
    if "outpaint" in fields:
        updates["outpaint_mode"] = True
        updates.update({f"outpaint_{side}": value for side, value in fields["outpaint"].items()})
    return updates  # styles are not restored: the pasted prompt already holds their text


def parameters_from_infotext(services: Services, text: str, names: Iterable[str]) -> Values:
    """Updates (by form name, restricted to ``names``) that put the infotext's parameters into a tab."""
    from modules.image.infotext import infotext_to_request_fields, parse_infotext

    wanted = set(names)
    text = (text or "").strip()
    parsed = parse_infotext(text) if text else {}
    if len(parsed) <= 2:  # only "Prompt" and "Negative prompt": no parameter line
        return {WARNING: "No generation parameters found: paste an infotext whose last line starts with 'Steps:'."}
    fields = infotext_to_request_fields(parsed)
    updates: Values = {name: fields[name] for name in DIRECT_FIELDS if name in fields}
    for name, value in RESET_WHEN_ABSENT.items():
        updates.setdefault(name, value)
    skipped = []
    for name, options in (("sampler_name", choices.sampler_names), ("scheduler", choices.schedule_labels),
                          ("hr_upscaler", lambda: choices.hires_upscalers(services))):
        if name in fields:
            value = choices.pick(fields[name], options())
            if value is None:
                skipped.append(f"{name} {fields[name]!r}")
            else:
                updates[name] = value
    if "model_hash" in fields or "model_name" in fields:
        title = choices.find_model_title(services, fields.get("model_hash"), fields.get("model_name"))
        if title is None:
            skipped.append(f"model {fields.get('model_name') or fields.get('model_hash')!r} (not installed)")
        else:
            updates["model"] = title
    if fields.get("vae_name") or fields.get("vae_hash"):
        vae = choices.find_vae_name(services, fields.get("vae_hash") or fields.get("vae_name"))
        if vae is None:
            skipped.append(f"VAE {fields.get('vae_name') or fields.get('vae_hash')!r} (not installed)")
        else:
            updates["vae"] = vae
    elif "vae" in wanted:
        updates["vae"] = choices.AUTOMATIC_VAE
    updates.update(_inpaint_updates(fields))
    updates = {name: value for name, value in updates.items() if name in wanted}
    clamped = clamp_to_limits(updates, services.config.limits)
    notes = []
    if skipped:
        notes.append("Kept the current value for " + "; ".join(skipped) + ".")
    notes.extend(clamped)
    if notes:
        updates[WARNING] = " ".join(notes)
    else:
        updates[INFO] = f"Read {len(updates)} parameters."
    return updates


def slider_ranges(limits: Limits) -> dict[str, tuple[str, float, float]]:
    """Each numeric control an infotext may fill: its label and the range its slider takes (the same bounds as
    ``controls.sampling_controls``, from this studio's limits)."""
    return {
        "steps": ("Sampling steps", 1, limits.max_steps),
        "cfg_scale": ("CFG scale", 0, limits.max_cfg),
        "batch_size": ("Batch size", 1, limits.max_batch_size),
        "n_iter": ("Batch count", 1, limits.max_batch_count),
        "width": ("Width", 0, limits.max_side),
        "height": ("Height", 0, limits.max_side),
        "hr_second_pass_steps": ("Hires steps", 0, limits.max_steps),
    }


def clamp_to_limits(updates: Values, limits: Limits) -> list[str]:
    """Bring pasted numbers into their slider's range, in place, and say which: an infotext from a studio with
    other limits (A1111 has none for steps) must not be cut down silently, nor make the next Generate fail
    with Gradio's unnamed "Value 500 is greater than maximum value 150"."""
    notes = []
    for name, (label, low, high) in slider_ranges(limits).items():
        value = updates.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or low <= value <= high:
            continue
        kept = high if value > high else low
        kept = int(kept) if isinstance(value, int) else kept
        reason = f"over this studio's limit of {high:g}" if value > high else f"under the minimum of {low:g}"
        notes.append(f"{label} {value:g} is {reason}: set to {kept:g}.")
        updates[name] = kept
    return notes


def paste_prompt(services: Services, values: Values, names: Iterable[str]) -> Values:
    """The ↙️ button: parse the prompt box's text as an infotext and fill the tab."""
    return parameters_from_infotext(services, values.get("prompt") or "", names)
