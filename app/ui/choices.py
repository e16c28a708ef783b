"""The lists dropdowns offer (models, samplers, schedule types, styles), read from the engine when asked.

Functions, not constants: a new checkpoint or style appears after a refresh or a page load without a restart.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.formats import AUTOMATIC_VAE, IMAGE_FORMATS

if TYPE_CHECKING:
    from modules.runtime.services import Services

log = logging.getLogger(__name__)

OUTPUT_FORMATS = IMAGE_FORMATS


def model_titles(services: Services) -> list[str]:
    try:
        return [info.title for info in services.engine.registry.list()]
    except Exception:  # a broken models folder must not stop the UI from building
        log.exception("cannot list checkpoints")
        return []


def default_model(services: Services) -> str | None:
    """The studio's default checkpoint, resolved where every front end resolves it (``Services.default_model``);
    None (with the error logged) when the models folder cannot be read, so the page still builds."""
    try:
        return services.default_model()
    except Exception:
        log.exception("cannot resolve the default checkpoint")
        return None


def vae_names(services: Services) -> list[str]:
    """"Automatic" (the checkpoint's own VAE) followed by the files and folders in models/VAE."""
    try:
        return [AUTOMATIC_VAE, *(info.name for info in services.engine.registry.list_vaes())]
    except Exception:
        log.exception("cannot list VAEs")
        return [AUTOMATIC_VAE]


def find_vae_name(services: Services, query: Any) -> str | None:
    """The installed VAE an infotext names, as the dropdown shows it, or None when it is not installed."""
    try:
        info = services.engine.registry.find_vae(str(query))
    except Exception:
        return None
    return AUTOMATIC_VAE if info is None else info.name


def _infos(services: Services) -> list[Any]:
    try:
        return list(services.engine.registry.list())
    except Exception:
        return []


def sampler_names() -> list[str]:
    from modules.image.samplers import list_samplers

    return [item["name"] for item in list_samplers()]


def schedule_labels() -> list[str]:
    from modules.image.samplers import list_schedulers

    return [item["label"] for item in list_schedulers()]


def style_names(services: Services) -> list[str]:
    try:
        return [style.name for style in services.engine.styles.list()]
    except Exception:
        log.exception("cannot list styles")
        return []


def pick(value: Any, choices: list[str]) -> str | None:
    """``value`` as one of ``choices`` (case-insensitive), or None when it is not offered."""
    if value is None:
        return None
    text = str(value).strip().lower()
    for choice in choices:
        if choice.lower() == text:
            return choice
    return None


def find_model_title(services: Services, *queries: Any) -> str | None:
    """The installed checkpoint an infotext names (by hash, then name), or None when it is not installed."""
    registry = services.engine.registry
    for query in queries:
        if not query:
            continue
        try:
            return registry.find(str(query)).title
        except Exception:  # unknown model: leave the dropdown as it is
            continue
    return None


# setting key -> the key of a model's own recommendation (``training_config.json`` "recommended", which Sfumato's
# trainer writes: the embedded model follows prompts best at its own CFG, not A1111's usual 7)
RECOMMENDED_KEYS = {"sampler": "sampler", "steps": "steps", "cfg_scale": "guidance"}


def form_default(services: Services, key: str) -> Any:
    """A tab's starting value: the user's saved setting, else the default model's recommendation, else the
    studio's default. A saved choice always wins, so the recommendation never overrides the user."""
    settings = services.settings
    if settings.has(key) or key not in RECOMMENDED_KEYS:
        return settings.get(key)
    recommended = model_recommendation(services, default_model(services))
    value = recommended.get(RECOMMENDED_KEYS[key])
    return settings.get(key) if value is None else value


def start_size(services: Services, key: str) -> int:
    """txt2img's starting width or height: the saved one, else (0 = "the model's size") the default model's real
    size, so the slider shows what will be generated instead of 0."""
    return services.settings.get(key) or model_size(services, default_model(services)) or 0


def model_size(services: Services, title: str | None) -> int | None:
    """The image side the checkpoint was trained at (its diffusers config, else its family's), None if unknown."""
    from modules.models.checkpoints import default_size

    info = next((item for item in _infos(services) if title in (item.title, item.name)), None) if title else None
    if info is None:
        return None
    try:
        return default_size(info.family or "sd1", model_path=info.path)
    except (OSError, ValueError, KeyError):
        return None


def model_recommendation(services: Services, title: str | None) -> dict[str, Any]:
    """The sampler/steps/guidance a model folder recommends in its ``training_config.json``; for SD3 and Flux
    without one, their family's published defaults (Flux.1-dev's 3.5 guidance, not SD's CFG 7); else empty."""
    import json

    from modules.models import families

    info = next((item for item in _infos(services) if title in (item.title, item.name)), None) if title else None
    path = getattr(info, "path", None)
    if path is None or not Path(path).is_dir():
        return {}
    flow = families.checkpoint_defaults(info.family, Path(path)) if families.is_flow_family(info.family) else None
    fallback = {"sampler": "Euler", "steps": flow.steps, "guidance": flow.cfg_scale} if flow else {}
    try:
        record = json.loads((Path(path) / "training_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return fallback
    recommended = record.get("recommended") if isinstance(record, dict) else None
    return recommended if isinstance(recommended, dict) else fallback


def hires_upscalers(services: Services) -> list[str]:
    """Hires fix's choices: the latent modes, then the built-in and model upscalers (re-read on each call, so a
    model dropped into models/ESRGAN shows up)."""
    from modules.upscaling.names import hires_upscaler_names

    return hires_upscaler_names(services.engine.upscalers)


def image_upscalers(services: Services) -> list[str]:
    """The Upscale tab's choices: built-ins, then model upscalers."""
    return services.engine.upscalers.names()
