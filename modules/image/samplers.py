"""A1111 sampler and schedule-type names, resolved to diffusers schedulers.

Users, their saved infotexts and their API scripts name samplers the AUTOMATIC1111 way ("DPM++ 2M Karras",
"k_euler_a", ``scheduler: "karras"``), so those names are the interface; diffusers' scheduler classes are the
implementation. A scheduler is always rebuilt from the loaded model's own scheduler config, because that config
carries what the checkpoint was trained with (beta schedule, prediction type, steps offset); the sampler only
adds its solver settings and the schedule type only its sigma / spacing flags.

A schedule type that a scheduler class cannot honour (Karras sigmas on DDIM, say) is ignored with a logged note,
as A1111 does, so that any sampler × schedule pair a user picks in the UI runs.

Polyexponential, KL Optimal and Align Your Steps are sigma lists computed here (k-diffusion's / A1111's formulas,
the AYS lists from ``diffusers.schedulers.AysSchedules``, log-linearly interpolated to the step count) and passed as
``sigmas=`` to the pipeline call (``custom_sigmas``). Only schedulers whose ``set_timesteps`` takes ``sigmas`` can
run them exactly: Euler's does; UniPC's only for flow-matching models; the others take integer ``timesteps`` at best,
which would round the list. Those three are listed, but with any other sampler the pair is refused
(``UnsupportedScheduleError``, the API answers 400 naming ``scheduler``) rather than run on a different schedule.

A1111 names that diffusers cannot express faithfully are refused with the reason rather than run as some other
sampler (``UNSUPPORTED_SAMPLERS`` / ``UNSUPPORTED_SCHEDULES``; the API answers 400 naming them), and are not
listed by ``/sdapi/v1/samplers`` / ``/sdapi/v1/schedulers``:

======================  ==========================================================================================
A1111 name              why it is refused
======================  ==========================================================================================
DPM++ 2S a              diffusers' DPMSolverSinglestepScheduler has no ancestral (noise-adding) variant
Restart                 diffusers has no Restart sampler (back-and-forth re-noising between sigma levels)
DPM fast                diffusers has no fixed-step DPM-Solver "fast" sampler (k-diffusion sample_dpm_fast)
DPM adaptive            diffusers has no adaptive-step-size DPM-Solver (k-diffusion sample_dpm_adaptive)
DDIM CFG++              needs CFG++ guidance (unconditional noise for re-noising); no diffusers scheduler has it
Polyexponential, KL     only with a sampler other than Euler (the schedule itself is listed): a computed sigma
Optimal, Align Your     list, and only EulerDiscreteScheduler's ``set_timesteps`` takes ``sigmas=`` (UniPC's for
Steps (as a pair)       flow-matching models only; DPM++ / Heun / LCM take integer or no custom timesteps)
======================  ==========================================================================================
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

logger = logging.getLogger(__name__)

DEFAULT_SAMPLER = "Euler"
AUTOMATIC = "Automatic"

# Config key under which a built scheduler remembers the model's own spacing and sigma flags. The pipeline's
# scheduler is swapped per request and its config is the next request's base, so without this one request's
# "Karras" or "SGM Uniform" would become the model's own schedule for every later request.
MODEL_SCHEDULE_KEY = "_sfumato_model_schedule"
_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
_MODEL_SCHEDULE_FIELDS = ("timestep_spacing", *_SIGMA_FLAGS)
# Solver settings of one sampler that must not leak into another built from the same base config.
_SOLVER_FIELDS = (
    "algorithm_type",
    "solver_order",
    "solver_type",
    "lower_order_final",
    "euler_at_final",
    "final_sigmas_type",
    "skip_prk_steps",
    "use_flow_sigmas",
    "flow_shift",
)


class UnknownSamplerError(ValueError):
    """A sampler name that is neither an A1111 name nor an alias (or whose needs are not installed)."""


class UnknownScheduleError(ValueError):
    """A schedule type that is not one of A1111's (or whose needs are not installed)."""


class UnsupportedSamplerError(UnknownSamplerError):
    """An A1111 sampler that diffusers cannot express faithfully; the message names it and says why."""


class UnsupportedScheduleError(UnknownScheduleError):
    """An A1111 schedule type that Sfumato cannot run faithfully; the message names it and says why."""


# A1111 names refused on purpose, with the reason (see the module docstring's table).
UNSUPPORTED_SAMPLERS: dict[str, str] = {
    "DPM++ 2S a": "diffusers' DPMSolverSinglestepScheduler has no ancestral (noise-adding) variant",
    "Restart": "diffusers has no Restart sampler",
    "DPM fast": "diffusers has no fixed-step DPM-Solver 'fast' sampler",
    "DPM adaptive": "diffusers has no adaptive-step-size DPM-Solver sampler",
    "DDIM CFG++": "CFG++ guidance is not available in diffusers' schedulers",
}
UNSUPPORTED_SCHEDULES: dict[str, str] = {}  # every A1111 schedule type runs with at least one sampler
_UNSUPPORTED_SAMPLER_ALIASES = {"k_dpmpp_2s_a": "DPM++ 2S a", "k_dpmpp_2s_ancestral": "DPM++ 2S a",
                                "k_dpm_fast": "DPM fast", "k_dpm_ad": "DPM adaptive",
                                "k_dpm_adaptive": "DPM adaptive", "restart": "Restart"}
_UNSUPPORTED_SCHEDULE_ALIASES: dict[str, str] = {}


@dataclass(frozen=True)
class SamplerSpec:
    """One A1111 sampler: its diffusers class, the settings that make the class behave as that sampler."""

    name: str
    aliases: tuple[str, ...]
    scheduler_class: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    automatic_schedule: str | None = None  # the schedule "Automatic" means; None = the model's own
    stochastic: bool = False  # draws fresh noise every step, so needs the per-image generators
    second_order: bool = False  # two model evaluations per step (A1111's "second_order" option)
    needs_scipy: bool = False
    custom_sigmas: bool = False  # its scheduler's set_timesteps takes a sigma list (Polyexponential, KL, AYS)


@dataclass(frozen=True)
class ScheduleSpec:
    """One A1111 schedule type: its API name, display label and the diffusers flags it sets."""

    name: str
    label: str
    aliases: tuple[str, ...] = ()
    sigmas: str | None = None  # which use_*_sigmas flag it turns on
    spacing: str | None = None  # timestep_spacing it sets; None = the model's own
    default_rho: float = -1.0
    need_inner_model: bool = False
    needs_scipy: bool = False
    custom: bool = False  # a sigma list computed here (``custom_sigmas``), needing a sampler that takes one


SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec("DPM++ 2M", ("k_dpmpp_2m",), "DPMSolverMultistepScheduler",
                (("algorithm_type", "dpmsolver++"), ("solver_order", 2)), automatic_schedule="Karras"),
    SamplerSpec("DPM++ SDE", ("k_dpmpp_sde",), "DPMSolverSinglestepScheduler",
                (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2), ("lower_order_final", True)),
                automatic_schedule="Karras", stochastic=True, second_order=True),
    SamplerSpec("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "DPMSolverMultistepScheduler",
                (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2)), automatic_schedule="Exponential",
                stochastic=True),
    SamplerSpec("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "DPMSolverMultistepScheduler",
                (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2), ("solver_type", "heun")),
                automatic_schedule="Exponential", stochastic=True),
    SamplerSpec("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "DPMSolverMultistepScheduler",
                (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 3)), automatic_schedule="Exponential",
                stochastic=True),
    SamplerSpec("Euler a", ("k_euler_a", "k_euler_ancestral"), "EulerAncestralDiscreteScheduler", stochastic=True),
    SamplerSpec("Euler", ("k_euler",), "EulerDiscreteScheduler", custom_sigmas=True),
    SamplerSpec("LMS", ("k_lms",), "LMSDiscreteScheduler", needs_scipy=True),
    SamplerSpec("Heun", ("k_heun",), "HeunDiscreteScheduler", second_order=True),
    SamplerSpec("DPM2", ("k_dpm_2",), "KDPM2DiscreteScheduler", automatic_schedule="Karras", second_order=True),
    SamplerSpec("DPM2 a", ("k_dpm_2_a",), "KDPM2AncestralDiscreteScheduler", automatic_schedule="Karras",
                stochastic=True, second_order=True),
    SamplerSpec("DDIM", ("ddim",), "DDIMScheduler"),
    SamplerSpec("PLMS", ("plms",), "PNDMScheduler", (("skip_prk_steps", True),)),
    SamplerSpec("UniPC", ("unipc",), "UniPCMultistepScheduler"),
    SamplerSpec("LCM", ("lcm", "k_lcm"), "LCMScheduler", stochastic=True),
    SamplerSpec("DEIS", ("deis",), "DEISMultistepScheduler"),
)

SCHEDULES: tuple[ScheduleSpec, ...] = (
    ScheduleSpec("automatic", AUTOMATIC),
    ScheduleSpec("uniform", "Uniform", need_inner_model=True),
    ScheduleSpec("karras", "Karras", sigmas="use_karras_sigmas", default_rho=7.0),
    ScheduleSpec("exponential", "Exponential", sigmas="use_exponential_sigmas"),
    ScheduleSpec("polyexponential", "Polyexponential", default_rho=1.0, custom=True),
    ScheduleSpec("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",), spacing="trailing", need_inner_model=True),
    ScheduleSpec("kl_optimal", "KL Optimal", custom=True),
    ScheduleSpec("align_your_steps", "Align Your Steps", custom=True),
    ScheduleSpec("simple", "Simple", spacing="trailing", need_inner_model=True),
    # A1111's normal_scheduler spaces timesteps evenly from the first to the last (diffusers' "linspace");
    # its ddim_scheduler takes every (1000 // steps)-th timestep from the start (diffusers' "leading").
    ScheduleSpec("normal", "Normal", spacing="linspace", need_inner_model=True),
    ScheduleSpec("ddim", "DDIM", spacing="leading", need_inner_model=True),
    ScheduleSpec("beta", "Beta", sigmas="use_beta_sigmas", need_inner_model=True, needs_scipy=True),
)


@dataclass(frozen=True)
class SamplerChoice:
    """A resolved request: the A1111 sampler name and schedule label (both canonical spelling)."""

    sampler: str = DEFAULT_SAMPLER
    schedule: str = AUTOMATIC


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _scipy_available() -> bool:
    """Whether scipy can be imported; LMS and Beta sigmas need it inside diffusers."""
    return importlib.util.find_spec("scipy") is not None


def _unsupported(name: str, reasons: dict[str, str], aliases: dict[str, str]) -> str | None:
    """The canonical A1111 name when ``name`` is one refused on purpose, else None."""
    wanted = _key(name)
    for canonical in reasons:
        if wanted == _key(canonical):
            return canonical
    return next((canonical for alias, canonical in aliases.items() if wanted == _key(alias)), None)


def sampler_spec(name: str) -> SamplerSpec:
    """The table row of a sampler name or alias (case-insensitive)."""
    wanted = _key(name)
    refused = _unsupported(name, UNSUPPORTED_SAMPLERS, _UNSUPPORTED_SAMPLER_ALIASES)
    if refused:
        raise UnsupportedSamplerError(f"sampler {refused!r} is not available: {UNSUPPORTED_SAMPLERS[refused]}")
    for spec in SAMPLERS:
        if wanted == _key(spec.name) or any(wanted == _key(alias) for alias in spec.aliases):
            return spec
    names = ", ".join(spec.name for spec in SAMPLERS)
    aliases = ", ".join(alias for spec in SAMPLERS for alias in spec.aliases)
    raise UnknownSamplerError(f"unknown sampler {name!r}; valid names: {names} (aliases: {aliases})")


def schedule_spec(name: str) -> ScheduleSpec:
    """The table row of a schedule type by API name, label or alias (case-insensitive)."""
    wanted = _key(name)
    refused = _unsupported(name, UNSUPPORTED_SCHEDULES, _UNSUPPORTED_SCHEDULE_ALIASES)
    if refused:
        raise UnsupportedScheduleError(f"schedule type {refused!r} is not available: "
                                       f"{UNSUPPORTED_SCHEDULES[refused]}")
    for spec in SCHEDULES:
        if wanted in {_key(spec.name), _key(spec.label), *(_key(alias) for alias in spec.aliases)}:
            return spec
    labels = ", ".join(spec.label for spec in SCHEDULES)
    raise UnknownScheduleError(f"unknown schedule type {name!r}; valid: {labels} (or their API names, e.g. 'karras')")


def _split_combined(name: str) -> tuple[SamplerSpec, ScheduleSpec] | None:
    """Split "DPM++ 2M Karras" into (DPM++ 2M, Karras); None when the name has no schedule suffix."""
    key = _key(name)
    for schedule in SCHEDULES:
        for suffix in (schedule.label, *schedule.aliases):
            tail = " " + _key(suffix)
            if key.endswith(tail) and len(key) > len(tail):
                try:
                    return sampler_spec(key[: -len(tail)]), schedule
                except UnsupportedSamplerError:
                    raise
                except UnknownSamplerError:
                    continue
    for label in UNSUPPORTED_SCHEDULES:  # "Euler Align Your Steps": say why, not "unknown sampler"
        tail = " " + _key(label)
        if key.endswith(tail) and len(key) > len(tail):
            sampler_spec(key[: -len(tail)])
            schedule_spec(label)
    return None


def resolve_sampler(sampler_name: str | None, scheduler: str | None = None) -> SamplerChoice:
    """Canonical sampler + schedule from what a user or client sent.

    A whole sampler name ("Euler a") is matched first, so a sampler whose name ends like a schedule is never
    split. A combined name ("DPM++ 2M Karras") is split, and its suffix wins over ``scheduler`` as in A1111.
    """
    schedule = schedule_spec(scheduler) if scheduler and scheduler.strip() else schedule_spec(AUTOMATIC)
    if not sampler_name or not sampler_name.strip():
        spec = sampler_spec(DEFAULT_SAMPLER)
    else:
        try:
            spec = sampler_spec(sampler_name)
        except UnknownSamplerError:
            combined = _split_combined(sampler_name)
            if combined is None:
                raise
            spec, schedule = combined
    choice = SamplerChoice(spec.name, schedule.label)
    _check_installed(choice)
    if schedule.custom and not spec.custom_sigmas:
        takers = ", ".join(item.name for item in SAMPLERS if item.custom_sigmas)
        raise UnsupportedScheduleError(
            f"schedule type {schedule.label!r} is not available with sampler {spec.name!r}: it is a custom sigma "
            f"list and {spec.scheduler_class} in diffusers cannot take one (use {takers})")
    return choice


def _check_installed(choice: SamplerChoice) -> None:
    if sampler_spec(choice.sampler).needs_scipy and not _scipy_available():
        raise UnknownSamplerError(f"sampler {choice.sampler!r} needs the scipy package, which is not installed "
                                  "(pip install scipy)")
    if schedule_spec(effective_schedule(choice)).needs_scipy and not _scipy_available():
        raise UnknownScheduleError(f"schedule type {choice.schedule!r} needs the scipy package, which is not "
                                   "installed (pip install scipy)")


def effective_schedule(choice: SamplerChoice) -> str:
    """The schedule label that "Automatic" stands for with this sampler ("Automatic" = the model's own)."""
    if _key(choice.schedule) != _key(AUTOMATIC):
        return schedule_spec(choice.schedule).label
    return sampler_spec(choice.sampler).automatic_schedule or AUTOMATIC


def needs_generator(choice: SamplerChoice) -> bool:
    """Whether the sampler draws noise every step (ancestral / SDE / LCM), so the per-image generators matter."""
    return sampler_spec(choice.sampler).stochastic


def _model_config(base_config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The base config with earlier samplers' settings removed, and the model's own spacing / sigma flags."""
    config = dict(base_config)
    remembered = config.pop(MODEL_SCHEDULE_KEY, None)
    if remembered is None:
        remembered = {field: config[field] for field in _MODEL_SCHEDULE_FIELDS if field in config}
    for field in _MODEL_SCHEDULE_FIELDS:
        if field in remembered:
            config[field] = remembered[field]
        else:
            config.pop(field, None)
    for field in _SOLVER_FIELDS:
        config.pop(field, None)
    return config, dict(remembered)


def _init_parameters(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


def _schedule_settings(schedule: ScheduleSpec, sampler: str, accepted: set[str]) -> dict[str, Any]:
    """The config entries a schedule type sets, limited to what the scheduler class accepts."""
    settings: dict[str, Any] = {}
    if schedule.label == AUTOMATIC:
        return settings
    wanted = schedule.sigmas or schedule.spacing
    if schedule.sigmas and schedule.sigmas not in accepted:
        logger.info("%s has no %s schedule in diffusers; using the model's own", sampler, schedule.label)
        return settings
    if schedule.spacing and "timestep_spacing" not in accepted:
        logger.info("%s has no %s schedule in diffusers; using the model's own", sampler, schedule.label)
        return settings
    for flag in _SIGMA_FLAGS:
        if flag in accepted:
            settings[flag] = flag == wanted
    if schedule.spacing:
        settings["timestep_spacing"] = schedule.spacing
    return settings


def make_scheduler(choice: SamplerChoice, base_config: dict[str, Any]) -> SchedulerMixin:
    """A fresh diffusers scheduler for ``choice``, built on the loaded model's scheduler config.

    ``base_config`` may be the config of a scheduler this function built earlier: the model's own spacing and
    sigma flags are recovered from it and the previous sampler's solver settings dropped, so building is
    independent of what ran before. Unsupported sampler × schedule pairs run with the model's own schedule.
    """
    import diffusers

    _check_installed(choice)
    spec = sampler_spec(choice.sampler)
    schedule = schedule_spec(effective_schedule(choice))
    cls = getattr(diffusers, spec.scheduler_class)
    accepted = _init_parameters(cls)
    config, remembered = _model_config(base_config)
    for field in _MODEL_SCHEDULE_FIELDS:
        if field not in accepted:
            config.pop(field, None)  # kept in MODEL_SCHEDULE_KEY; passing it would only draw diffusers' warning
    settings = {**dict(spec.kwargs), **_schedule_settings(schedule, spec.name, accepted)}
    config.update(settings)
    defaults = config.get("_use_default_values")
    if defaults:
        config["_use_default_values"] = [field for field in defaults if field not in settings]
    scheduler = cls.from_config(config)
    scheduler.register_to_config(**{MODEL_SCHEDULE_KEY: remembered})
    return scheduler


def _training_sigmas(scheduler: Any) -> Any:
    import numpy as np

    alphas = np.asarray(scheduler.alphas_cumprod, dtype=np.float64)
    return np.sqrt((1 - alphas) / alphas)


def custom_sigmas(choice: SamplerChoice, scheduler: Any, steps: int, sdxl: bool = False) -> dict[str, Any]:
    """``{"sigmas": [...]}`` for the pipeline call when ``choice`` is a computed schedule, else ``{}``.

    The lists follow A1111 (``modules/sd_schedulers.py`` with k-diffusion): ``steps + 1`` values between the model's
    own sigma_max and sigma_min; Polyexponential (rho 1) and AYS end in 0, KL Optimal ends at sigma_min.
    """
    import math

    import numpy as np

    schedule = schedule_spec(effective_schedule(choice))
    if not schedule.custom:
        return {}
    trained = _training_sigmas(scheduler)
    sigma_min, sigma_max = float(trained.min()), float(trained.max())
    if schedule.name == "polyexponential":
        ramp = np.linspace(1, 0, steps) ** schedule.default_rho
        sigmas = np.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))
        sigmas = np.append(sigmas, 0.0)
    elif schedule.name == "kl_optimal":
        position = np.arange(steps + 1) / steps
        sigmas = np.tan(position * math.atan(sigma_min) + (1 - position) * math.atan(sigma_max))
    else:  # Align Your Steps: the published 10-step list, its final 0 replaced by sigma_min to interpolate in log
        from diffusers.schedulers import AysSchedules

        published = AysSchedules["StableDiffusionXLSigmas" if sdxl else "StableDiffusionSigmas"]
        anchors = np.log(np.array([*published[:-1], sigma_min]))
        sigmas = np.exp(np.interp(np.linspace(0, 1, steps), np.linspace(0, 1, len(anchors)), anchors))
        sigmas = np.append(sigmas, 0.0)
    return {"sigmas": [float(value) for value in sigmas]}


def list_samplers() -> list[dict[str, Any]]:
    """The samplers in the shape of A1111's ``GET /sdapi/v1/samplers``."""
    result = []
    for spec in SAMPLERS:
        options: dict[str, str] = {}
        if spec.automatic_schedule:
            options["scheduler"] = schedule_spec(spec.automatic_schedule).name
        if spec.second_order:
            options["second_order"] = "True"
        if spec.stochastic:
            options["uses_ensd"] = "True"
        result.append({"name": spec.name, "aliases": list(spec.aliases), "options": options})
    return result


def list_schedulers() -> list[dict[str, Any]]:
    """The schedule types in the shape of A1111 v1.10's ``GET /sdapi/v1/schedulers``."""
    return [
        {
            "name": spec.name,
            "label": spec.label,
            "aliases": list(spec.aliases) or None,
            "default_rho": spec.default_rho,
            "need_inner_model": spec.need_inner_model,
        }
        for spec in SCHEDULES
    ]
