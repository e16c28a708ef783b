"""``--quantize nf4|int8`` (bitsandbytes on CUDA) and pre-quantized diffusers folders, on a machine without CUDA.

What can be shown here, and is: the option is parsed and shown in the device report; on this CPU it is refused at
start-up and at load naming the option; the bitsandbytes configuration each mode builds; that a quantized load
really hands diffusers' bitsandbytes quantizer the denoiser (which then says it needs a GPU); and that a folder
saved pre-quantized with bitsandbytes is refused saying it needs CUDA + bitsandbytes. Nothing here pretends to have
run bitsandbytes: that needs a CUDA GPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modules.image.request import GenerationRequest
from modules.models.quantization import (
    bitsandbytes_arguments,
    has_bitsandbytes,
    prequantized_method,
    prequantized_problem,
    unavailable_reason,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest
NF4 = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
       "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_use_double_quant": False}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Tiny Flux.1-dev and SD 1.x folders, and a copy of the Flux one whose transformer says it was saved NF4."""
    from tools.tiny_model import save_tiny_model

    root = tmp_path_factory.mktemp("quantize-models")
    checkpoints = root / "Stable-diffusion"
    save_tiny_model(checkpoints / "tiny-flux", "flux", seed=0)
    save_tiny_model(checkpoints / "tiny-sd1", "sd1", seed=0)
    shutil.copytree(checkpoints / "tiny-flux", checkpoints / "flux-nf4")
    config_file = checkpoints / "flux-nf4" / "transformer" / "config.json"
    config = json.loads(config_file.read_text())
    config["quantization_config"] = NF4
    config_file.write_text(json.dumps(config))
    return root


def services(models: Path, work: Path, **config):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    built = build_services(AppConfig(models_dir=models, outdir=work / "outputs", data_dir=work / "data",
                                     device="cpu", **config))
    built.start()
    return built


def test_the_rules_for_where_bitsandbytes_runs():
    assert unavailable_reason("none", "cpu", package=False) is None
    assert unavailable_reason("nf4", "cuda", package=True) is None
    assert "CUDA GPUs only" in unavailable_reason("nf4", "cpu", package=True)
    assert "CUDA GPUs only" in unavailable_reason("int8", "mps", package=True)
    assert "pip install" in unavailable_reason("int8", "cuda", package=False)
    assert "choose one of none, nf4, int8" in unavailable_reason("fp3", "cuda", package=True)


def test_launch_parses_the_option_and_refuses_it_on_this_cpu_at_start_up():
    import launch

    assert launch.build_config(launch.parse_args([])).quantize == "none"
    with pytest.raises(SystemExit) as refused:
        launch.build_config(launch.parse_args(["--quantize", "nf4", "--device", "cpu"]))
    assert str(refused.value).startswith("--quantize nf4: ") and "CUDA GPUs only" in str(refused.value)
    with pytest.raises(SystemExit) as refused:  # no --device: torch is asked, and this machine has no CUDA GPU
        launch.build_config(launch.parse_args(["--quantize", "int8"]))
    assert str(refused.value).startswith("--quantize int8: ")
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        launch.parse_args(["--quantize", "fp3"])


def test_the_configuration_each_mode_builds_for_cuda():
    import torch

    from modules.models.quantization import bitsandbytes_config

    assert bitsandbytes_arguments("nf4", torch.bfloat16) == {
        "load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": torch.bfloat16}
    int8 = bitsandbytes_config("int8", torch.float16)  # diffusers builds the 8-bit one without the package
    assert int8.load_in_8bit and not int8.load_in_4bit and int8.quant_method.value == "bitsandbytes"
    if has_bitsandbytes():
        nf4 = bitsandbytes_config("nf4", torch.bfloat16)
        assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4"
        assert nf4.bnb_4bit_compute_dtype == torch.bfloat16


@pytest.mark.parametrize("folder", ["tiny-flux", "tiny-sd1"])
def test_a_quantized_load_hands_the_denoiser_to_diffusers_bitsandbytes_quantizer(models, folder):
    import torch

    from modules.models.checkpoints import CheckpointLoadError, load_pipeline
    from modules.models.registry import CheckpointInfo

    if torch.cuda.is_available():
        pytest.skip("this checks the refusal diffusers gives without a GPU")
    info = CheckpointInfo(folder, folder, models / "Stable-diffusion" / folder, "diffusers", None, None, None)
    with pytest.raises(CheckpointLoadError, match="No GPU found"):  # diffusers' bitsandbytes quantizer speaking
        load_pipeline(info, quantize="int8")
    assert load_pipeline(info) is not None  # the same folder without the option loads


def test_with_the_option_on_this_cpu_a_job_fails_naming_it_and_the_report_shows_it(models, tmp_path):
    studio = services(models, tmp_path, quantize="nf4")
    try:
        with pytest.raises(RuntimeError, match=r"--quantize nf4: .*CUDA GPUs only.*runs on cpu"):
            studio.run(GenerationRequest(prompt="a red circle", model="tiny-sd1", steps=2, width=64, height=64))
        assert "quantization: 4-bit NF4 denoiser weights (bitsandbytes, --quantize nf4)" in studio.device_report
    finally:
        studio.stop()
    plain = services(models, tmp_path / "plain")
    try:
        assert not any(line.startswith("quantization:") for line in plain.device_report)
    finally:
        plain.stop()


def test_a_prequantized_nf4_folder_is_told_apart_and_refused_saying_what_it_needs(models, tmp_path):
    folder = models / "Stable-diffusion" / "flux-nf4"
    assert prequantized_method(folder) == ("transformer", "bitsandbytes nf4")
    assert prequantized_method(models / "Stable-diffusion" / "tiny-flux") is None
    assert prequantized_problem(folder, cuda=True, package=True) is None
    assert "the bitsandbytes package" in prequantized_problem(folder, cuda=True, package=False)
    studio = services(models, tmp_path)
    try:
        listed = {info.name: info.family for info in studio.engine.registry.list()}
        assert listed["flux-nf4"] == "flux"
        with pytest.raises(RuntimeError) as refused:
            studio.run(GenerationRequest(prompt="a red circle", model="flux-nf4", steps=2))
        message = str(refused.value)
        assert "flux-nf4's transformer is saved pre-quantized (bitsandbytes nf4)" in message
        assert "CUDA GPU" in message and "bitsandbytes" in message
        # the worker goes on
        assert studio.run(GenerationRequest(prompt="a red circle", model="tiny-flux", steps=2)).images
    finally:
        studio.stop()
