"""Sampler / schedule names resolve as in A1111 and build schedulers that keep the model's config and run."""

from __future__ import annotations

import importlib.util
import inspect

import numpy as np
import pytest

from modules.image import samplers
from modules.image.samplers import (
    SAMPLERS,
    SCHEDULES,
    UNSUPPORTED_SAMPLERS,
    UNSUPPORTED_SCHEDULES,
    SamplerChoice,
    UnknownSamplerError,
    UnknownScheduleError,
    UnsupportedSamplerError,
    UnsupportedScheduleError,
    effective_schedule,
    list_samplers,
    list_schedulers,
    make_scheduler,
    needs_generator,
    resolve_sampler,
)
from tools.tiny_model import SCHEDULER_CONFIG

HAS_SCIPY = importlib.util.find_spec("scipy") is not None
SAMPLER_NAMES = [spec.name for spec in SAMPLERS]
SCHEDULE_LABELS = [spec.label for spec in SCHEDULES]
EXPECTED_CLASS = {
    "Euler": "EulerDiscreteScheduler",
    "Euler a": "EulerAncestralDiscreteScheduler",
    "LMS": "LMSDiscreteScheduler",
    "Heun": "HeunDiscreteScheduler",
    "DPM2": "KDPM2DiscreteScheduler",
    "DPM2 a": "KDPM2AncestralDiscreteScheduler",
    "DPM++ 2M": "DPMSolverMultistepScheduler",
    "DPM++ 2M SDE": "DPMSolverMultistepScheduler",
    "DPM++ 2M SDE Heun": "DPMSolverMultistepScheduler",
    "DPM++ 3M SDE": "DPMSolverMultistepScheduler",
    "DPM++ SDE": "DPMSolverSinglestepScheduler",
    "DDIM": "DDIMScheduler",
    "PLMS": "PNDMScheduler",
    "UniPC": "UniPCMultistepScheduler",
    "LCM": "LCMScheduler",
    "DEIS": "DEISMultistepScheduler",
}
COMPUTED = ("Polyexponential", "KL Optimal", "Align Your Steps")
SIGMA_FLAG = {"Karras": "use_karras_sigmas", "Exponential": "use_exponential_sigmas", "Beta": "use_beta_sigmas"}
FLAGS = tuple(SIGMA_FLAG.values())


def _needs_scipy(sampler: str, schedule: str) -> bool:
    choice = SamplerChoice(sampler, schedule)
    return sampler == "LMS" or effective_schedule(choice) == "Beta"


def _skip_without_scipy(sampler: str, schedule: str) -> None:
    if not HAS_SCIPY and _needs_scipy(sampler, schedule):
        pytest.skip("scipy is not installed")


def test_table_matches_reference():
    assert set(SAMPLER_NAMES) == set(EXPECTED_CLASS)
    assert SCHEDULE_LABELS == ["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform",
                               "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]


@pytest.mark.parametrize("schedule", SCHEDULE_LABELS)
@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_and_schedule_builds_the_right_scheduler(sampler, schedule):
    _skip_without_scipy(sampler, schedule)
    if schedule in COMPUTED and sampler != "Euler":  # a sigma list only Euler's scheduler takes
        with pytest.raises(UnsupportedScheduleError, match="custom sigma list"):
            resolve_sampler(sampler, schedule)
        return
    choice = resolve_sampler(sampler, schedule)
    built = make_scheduler(choice, SCHEDULER_CONFIG)
    assert type(built).__name__ == EXPECTED_CLASS[sampler]
    config = built.config
    effective = effective_schedule(choice)
    parameters = inspect.signature(type(built).__init__).parameters
    supports_sigmas = "use_karras_sigmas" in parameters
    if effective in SIGMA_FLAG and supports_sigmas:
        assert [config[flag] for flag in FLAGS] == [flag == SIGMA_FLAG[effective] for flag in FLAGS]
    elif effective == "Uniform" and supports_sigmas:
        assert not any(config[flag] for flag in FLAGS)
    elif not supports_sigmas:
        assert not any(config.get(flag) for flag in FLAGS)  # ignored, and not passed to a class that lacks them
    spacing_supported = "timestep_spacing" in parameters
    if effective in ("SGM Uniform", "Simple") and spacing_supported:
        assert config["timestep_spacing"] == "trailing"
    elif effective == "Normal" and spacing_supported:
        assert config["timestep_spacing"] == "linspace"
    elif spacing_supported:
        assert config["timestep_spacing"] == "leading"  # the model's own
    # the model's training setup is kept whatever the sampler
    assert config["beta_schedule"] == "scaled_linear" and config["beta_start"] == 0.00085
    assert config["steps_offset"] == 1 and config["num_train_timesteps"] == 1000


def test_sampler_settings():
    def build(name: str):
        return make_scheduler(resolve_sampler(name), SCHEDULER_CONFIG).config

    assert build("DPM++ 2M")["algorithm_type"] == "dpmsolver++"
    assert build("DPM++ 2M SDE")["algorithm_type"] == "sde-dpmsolver++"
    assert build("DPM++ SDE")["algorithm_type"] == "sde-dpmsolver++"
    assert build("PLMS")["skip_prk_steps"] is True
    heun = build("DPM++ 2M SDE Heun")
    assert (heun["algorithm_type"], heun["solver_order"], heun["solver_type"]) == ("sde-dpmsolver++", 2, "heun")
    three = build("DPM++ 3M SDE")
    assert (three["algorithm_type"], three["solver_order"], three["solver_type"]) == ("sde-dpmsolver++", 3,
                                                                                     "midpoint")
    assert build("DPM++ 2M SDE")["solver_type"] == "midpoint"  # Heun's solver type does not leak


def test_base_config_survives():
    base = {**SCHEDULER_CONFIG, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True}
    for name in SAMPLER_NAMES:
        if name == "LMS" and not HAS_SCIPY:
            continue
        config = make_scheduler(resolve_sampler(name), base).config
        assert config["prediction_type"] == "v_prediction", name
        assert config["beta_schedule"] == "scaled_linear"
    assert make_scheduler(resolve_sampler("DDIM"), base).config["rescale_betas_zero_snr"] is True


def test_previous_sampler_does_not_leak_into_the_next():
    """The pipeline's scheduler is swapped per request and its config is the next base: nothing may leak."""
    config = dict(SCHEDULER_CONFIG)
    for name, schedule in [("DPM++ 2M SDE", "Karras"), ("DDIM", "SGM Uniform"), ("PLMS", "Automatic"),
                           ("Euler", "Exponential")]:
        config = dict(make_scheduler(resolve_sampler(name, schedule), config).config)
    euler = make_scheduler(resolve_sampler("Euler"), config).config
    assert euler["timestep_spacing"] == "leading"
    assert not any(euler[flag] for flag in FLAGS)
    dpm = make_scheduler(resolve_sampler("DPM++ 2M", "Uniform"), config).config
    assert dpm["algorithm_type"] == "dpmsolver++" and not dpm["use_karras_sigmas"]
    assert "skip_prk_steps" not in dpm


def test_model_own_sigmas_kept_by_automatic_and_cleared_by_uniform():
    base = {**SCHEDULER_CONFIG, "use_karras_sigmas": True, "timestep_spacing": "trailing"}
    automatic = make_scheduler(resolve_sampler("Euler", "Automatic"), base).config
    assert automatic["use_karras_sigmas"] is True and automatic["timestep_spacing"] == "trailing"
    uniform = make_scheduler(resolve_sampler("Euler", "Uniform"), base).config
    assert uniform["use_karras_sigmas"] is False and uniform["timestep_spacing"] == "trailing"


def test_automatic_resolves_per_sampler():
    expected = {"DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM2": "Karras", "DPM2 a": "Karras",
                "DPM++ 2M SDE": "Exponential", "Euler": "Automatic", "Euler a": "Automatic", "DDIM": "Automatic"}
    for name, schedule in expected.items():
        assert effective_schedule(resolve_sampler(name)) == schedule, name
    assert resolve_sampler("DPM++ 2M").schedule == "Automatic"  # the choice itself stays "Automatic"
    assert make_scheduler(resolve_sampler("DPM++ 2M"), SCHEDULER_CONFIG).config["use_karras_sigmas"] is True
    assert make_scheduler(resolve_sampler("DPM++ 2M SDE"), SCHEDULER_CONFIG).config["use_exponential_sigmas"] is True
    assert make_scheduler(resolve_sampler("Euler"), SCHEDULER_CONFIG).config["use_karras_sigmas"] is False


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        (None, None, ("Euler", "Automatic")),
        ("", "", ("Euler", "Automatic")),
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),
        ("DPM++ SDE Karras", "automatic", ("DPM++ SDE", "Karras")),
        ("dpm++ 2m sde exponential", None, ("DPM++ 2M SDE", "Exponential")),
        ("Euler a", None, ("Euler a", "Automatic")),
        ("euler A", "karras", ("Euler a", "Karras")),
        ("Euler a Karras", None, ("Euler a", "Karras")),
        ("DPM2 a Karras", None, ("DPM2 a", "Karras")),
        ("Euler SGMUniform", None, ("Euler", "SGM Uniform")),
        ("DPM++ 2M Karras", "exponential", ("DPM++ 2M", "Karras")),  # the name's suffix wins, as in A1111
        ("k_euler_a", "sgm_uniform", ("Euler a", "SGM Uniform")),
        ("K_DPMPP_2M", "KARRAS", ("DPM++ 2M", "Karras")),
        ("k_lms", "Simple", ("LMS", "Simple")),
        ("k_heun", "uniform", ("Heun", "Uniform")),
        ("k_dpm_2", None, ("DPM2", "Automatic")),
        ("k_dpm_2_a", None, ("DPM2 a", "Automatic")),
        ("k_dpmpp_2m_sde", None, ("DPM++ 2M SDE", "Automatic")),
        ("k_dpmpp_sde", None, ("DPM++ SDE", "Automatic")),
        ("k_euler", "Beta", ("Euler", "Beta")),
        ("ddim", None, ("DDIM", "Automatic")),
        ("plms", None, ("PLMS", "Automatic")),
        ("unipc", "SGM Uniform", ("UniPC", "SGM Uniform")),
        ("lcm", None, ("LCM", "Automatic")),
        ("deis", "exponential", ("DEIS", "Exponential")),
    ],
)
def test_resolve_names(sampler, scheduler, expected):
    _skip_without_scipy(*expected)
    choice = resolve_sampler(sampler, scheduler)
    assert (choice.sampler, choice.schedule) == expected


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownSamplerError) as error:
        resolve_sampler("Euler b")
    message = str(error.value)
    assert "Euler b" in message and "DPM++ 2M" in message and "k_euler_a" in message
    assert isinstance(error.value, ValueError)
    with pytest.raises(UnknownSamplerError):
        resolve_sampler("Nonsense Karras")
    with pytest.raises(UnknownScheduleError) as error:
        resolve_sampler("Euler", "Polynomial")
    assert "Karras" in str(error.value) and "SGM Uniform" in str(error.value)


def test_scipy_missing_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(samplers, "_scipy_available", lambda: False)
    with pytest.raises(UnknownSamplerError, match="scipy"):
        resolve_sampler("LMS")
    with pytest.raises(UnknownScheduleError, match="scipy"):
        resolve_sampler("Euler", "Beta")
    with pytest.raises(UnknownScheduleError, match="scipy"):
        make_scheduler(SamplerChoice("DPM++ 2M", "Beta"), SCHEDULER_CONFIG)
    assert resolve_sampler("Euler", "Karras").schedule == "Karras"


def test_needs_generator():
    stochastic = {name for name in SAMPLER_NAMES if needs_generator(SamplerChoice(name))}
    assert stochastic == {"Euler a", "DPM2 a", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "DPM++ SDE",
                          "LCM"}


def test_api_lists():
    listed = list_samplers()
    assert [item["name"] for item in listed] == SAMPLER_NAMES
    assert all(set(item) == {"name", "aliases", "options"} for item in listed)
    by_name = {item["name"]: item for item in listed}
    assert by_name["Euler a"]["aliases"] == ["k_euler_a", "k_euler_ancestral"]
    assert by_name["DPM++ 2M"]["options"]["scheduler"] == "karras"
    assert by_name["DPM++ 2M SDE"]["options"]["scheduler"] == "exponential"
    assert all(isinstance(value, str) for item in listed for value in item["options"].values())
    schedules = list_schedulers()
    assert [item["name"] for item in schedules] == ["automatic", "uniform", "karras", "exponential", "polyexponential",
                                                    "sgm_uniform", "kl_optimal", "align_your_steps", "simple",
                                                    "normal", "ddim", "beta"]  # A1111 v1.10's order
    assert all(set(item) == {"name", "label", "aliases", "default_rho", "need_inner_model"} for item in schedules)
    karras = next(item for item in schedules if item["name"] == "karras")
    assert karras == {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0,
                      "need_inner_model": False}
    for item in schedules:  # every listed name resolves back to its label
        if item["name"] != "beta" or HAS_SCIPY:
            assert resolve_sampler("Euler", item["name"]).schedule == item["label"]


# -- running the tiny pipeline ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd1_pipe():
    from tools.tiny_model import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe, choice: SamplerChoice, seed: int = 1) -> np.ndarray:
    import torch

    from modules.image.samplers import custom_sigmas

    pipe.scheduler = make_scheduler(choice, dict(pipe.scheduler.config))
    result = pipe("a red circle", num_inference_steps=4, width=64, height=64, guidance_scale=5.0,
                  output_type="np", generator=torch.Generator("cpu").manual_seed(seed),
                  **custom_sigmas(choice, pipe.scheduler, 4))
    return result.images


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_runs(sd1_pipe, sampler):
    _skip_without_scipy(sampler, "Automatic")
    images = _generate(sd1_pipe, resolve_sampler(sampler))
    assert images.shape == (1, 64, 64, 3)
    assert np.isfinite(images).all()


@pytest.mark.parametrize("schedule", SCHEDULE_LABELS)
def test_every_schedule_runs(sd1_pipe, schedule):
    sampler = "Euler" if schedule in COMPUTED else "DPM++ 2M"
    _skip_without_scipy(sampler, schedule)
    images = _generate(sd1_pipe, resolve_sampler(sampler, schedule))
    assert np.isfinite(images).all()


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE", "DPM++ SDE"])
def test_stochastic_sampler_is_reproducible_with_a_seed(sd1_pipe, sampler):
    choice = resolve_sampler(sampler)
    first = _generate(sd1_pipe, choice, seed=42)
    second = _generate(sd1_pipe, choice, seed=42)
    other = _generate(sd1_pipe, choice, seed=43)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_sdxl_pipeline_runs_with_a_karras_sampler():
    import torch

    from tools.tiny_model import build_tiny_pipeline

    pipe = build_tiny_pipeline("sdxl")
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(resolve_sampler("DPM++ 2M Karras"), dict(pipe.scheduler.config))
    images = pipe("a cat", num_inference_steps=4, width=64, height=64, output_type="np",
                  generator=torch.Generator("cpu").manual_seed(0)).images
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


# -- the A1111 names added for issue 13, and those refused ---------------------------------------------------

NEW_SAMPLERS = ["DPM++ 2M SDE Heun", "DPM++ 3M SDE"]
NEW_SCHEDULES = ["Normal", "DDIM"]


@pytest.fixture(scope="module")
def euler_image(sd1_pipe):
    return _generate_short(sd1_pipe, resolve_sampler("Euler"))


def _generate_short(pipe, choice: SamplerChoice) -> np.ndarray:
    import torch

    pipe.scheduler = make_scheduler(choice, dict(pipe.scheduler.config))
    return pipe("a red circle", num_inference_steps=3, width=64, height=64, guidance_scale=5.0, output_type="np",
                generator=torch.Generator("cpu").manual_seed(7)).images


def _check_image(images: np.ndarray, euler: np.ndarray) -> None:
    assert images.shape == (1, 64, 64, 3)
    assert np.isfinite(images).all()
    assert float(images.std()) > 0  # not a constant image
    assert not np.allclose(images, euler)


@pytest.mark.parametrize("sampler", NEW_SAMPLERS)
def test_new_samplers_run_and_differ_from_euler(sd1_pipe, euler_image, sampler):
    _check_image(_generate_short(sd1_pipe, resolve_sampler(sampler)), euler_image)


@pytest.mark.parametrize("schedule", NEW_SCHEDULES)
def test_new_schedules_run_and_differ_from_euler(sd1_pipe, euler_image, schedule):
    # with DPM++ 2M, so the image differs from Euler by more than the spacing alone
    _check_image(_generate_short(sd1_pipe, resolve_sampler("DPM++ 2M", schedule)), euler_image)


def test_new_schedules_set_the_spacing_and_clear_sigma_flags():
    base = {**SCHEDULER_CONFIG, "use_karras_sigmas": True, "timestep_spacing": "trailing"}
    normal = make_scheduler(resolve_sampler("Euler", "Normal"), base).config
    assert normal["timestep_spacing"] == "linspace" and not normal["use_karras_sigmas"]
    ddim = make_scheduler(resolve_sampler("DPM++ 2M", "ddim"), base).config
    assert ddim["timestep_spacing"] == "leading" and not ddim["use_karras_sigmas"]
    euler = make_scheduler(resolve_sampler("Euler"), dict(ddim)).config  # the model's own comes back
    assert euler["timestep_spacing"] == "trailing" and euler["use_karras_sigmas"] is True


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        ("DPM++ 3M SDE", None, ("DPM++ 3M SDE", "Automatic")),
        ("k_dpmpp_3m_sde", "karras", ("DPM++ 3M SDE", "Karras")),
        ("DPM++ 2M SDE Heun", None, ("DPM++ 2M SDE Heun", "Automatic")),
        ("DPM++ 2M SDE Heun Karras", None, ("DPM++ 2M SDE Heun", "Karras")),
        ("DPM++ 3M SDE Exponential", None, ("DPM++ 3M SDE", "Exponential")),
        ("Euler", "normal", ("Euler", "Normal")),
        ("Euler", "DDIM", ("Euler", "DDIM")),
        ("DDIM", None, ("DDIM", "Automatic")),  # the sampler, not Euler + DDIM schedule
        ("Euler Normal", None, ("Euler", "Normal")),
    ],
)
def test_new_names_resolve(sampler, scheduler, expected):
    choice = resolve_sampler(sampler, scheduler)
    assert (choice.sampler, choice.schedule) == expected


@pytest.mark.parametrize("name", ["DPM++ 2S a", "k_dpmpp_2s_a", "Restart", "DPM fast", "DPM adaptive", "DDIM CFG++",
                                  "dpm ADAPTIVE", "Restart Karras", "DPM++ 2S a Karras"])
def test_unsupported_samplers_are_refused_by_name(name):
    with pytest.raises(UnsupportedSamplerError, match="is not available") as error:
        resolve_sampler(name)
    assert any(refused in str(error.value) for refused in UNSUPPORTED_SAMPLERS)
    assert isinstance(error.value, UnknownSamplerError)  # so the API answers 400 on sampler_name


@pytest.mark.parametrize(("sampler", "scheduler", "label"), [
    ("DPM++ 2M", "Polyexponential", "Polyexponential"), ("Heun", "kl_optimal", "KL Optimal"),
    ("DPM++ 2M", "Align Your Steps", "Align Your Steps"), ("UniPC KL Optimal", None, "KL Optimal"),
    ("DPM++ 2M Align Your Steps", None, "Align Your Steps")])
def test_computed_schedules_are_refused_with_samplers_that_cannot_take_sigmas(sampler, scheduler, label):
    with pytest.raises(UnsupportedScheduleError, match="is not available with sampler") as error:
        resolve_sampler(sampler, scheduler)
    assert "custom sigma list" in str(error.value) and label in str(error.value)
    assert isinstance(error.value, UnknownScheduleError)
    assert resolve_sampler("Euler", label).schedule == label


def test_api_lists_only_what_works():
    listed = {item["name"] for item in list_samplers()} | {alias for item in list_samplers()
                                                             for alias in item["aliases"]}
    assert not listed & set(UNSUPPORTED_SAMPLERS)
    assert {"DPM++ 2M SDE Heun", "DPM++ 3M SDE"} <= listed
    labels = {item["label"] for item in list_schedulers()}
    assert not labels & set(UNSUPPORTED_SCHEDULES)
    assert {"Normal", "DDIM"} <= labels
    options = {item["name"]: item["options"] for item in list_samplers()}
    assert options["DPM++ 3M SDE"] == {"scheduler": "exponential", "uses_ensd": "True"}
