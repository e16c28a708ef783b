"""The embedded motion model's trainer: an adapter the embedded model's UNet accepts, that leaves the base untouched
before training, a tiny run that saves a folder ``MotionAdapter.from_pretrained`` loads and ``AnimateDiffPipeline``
runs, and a resumed run that ends with the same weights as an uninterrupted one.

The tiny preset trains a few steps of short clips on the committed base model, on one thread.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from modules.video.pipelines import MOTION_LORA_FILE
from tools.motion.train import EVAL_END, EVAL_START, build_adapter, main, make_config, train
from tools.shapes_controlnet.train import read_base

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models/Stable-diffusion/sfumato-shapes"
COMMITTED = ROOT / "models/animatediff/sfumato-shapes-motion"
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def restore_torch_settings():
    """Training pins threads and deterministic kernels process-wide; put them back for the other tests."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """The tiny preset trained end to end by the command line, into a temporary folder."""
    out = tmp_path_factory.mktemp("motion") / "tiny-motion"
    threads = torch.get_num_threads()
    try:
        assert main(["--base", str(BASE), "--out", str(out), "--preset", "tiny", "--threads", "1", "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _adapter_weights(adapter) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in adapter.state_dict().items()}


def test_the_base_unet_accepts_the_adapter_and_is_unchanged_before_training():
    from diffusers import UNet2DConditionModel, UNetMotionModel

    unet = UNet2DConditionModel.from_pretrained(str(BASE), subfolder="unet", local_files_only=True)
    adapter = build_adapter(dict(unet.config), make_config())
    assert tuple(adapter.config.block_out_channels) == tuple(unet.config.block_out_channels)
    motion = UNetMotionModel.from_unet2d(unet, adapter).eval()
    torch.manual_seed(0)
    frames = torch.randn(1, 4, 4, 16, 16)
    text = torch.randn(4, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        animated = motion(frames, 500, text).sample
        alone = unet(frames[0].permute(1, 0, 2, 3), 500, text).sample
    assert torch.allclose(animated[0].permute(1, 0, 2, 3), alone, atol=1e-5)


def test_the_tiny_run_saves_an_adapter_animatediff_runs(tiny_folder):
    from diffusers import MotionAdapter

    from bench.eval_motion import load_pipeline

    assert (tiny_folder / "config.json").is_file() and (tiny_folder / "diffusion_pytorch_model.safetensors").is_file()
    # the cross-attention LoRA that learns the motion words, beside the adapter, in diffusers' LoRA format
    lora = load_file(str(tiny_folder / MOTION_LORA_FILE))
    assert lora and all(k.startswith("unet.") and ".attn2.to_" in k and "motion_modules" not in k for k in lora)
    assert not (tiny_folder / ".train-state").exists()
    adapter = MotionAdapter.from_pretrained(str(tiny_folder), local_files_only=True)
    assert tuple(adapter.config.block_out_channels) == (32, 64, 128)
    card = (tiny_folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "moving to the right" in card and EVAL_START in card and EVAL_END in card
    pipe = load_pipeline(BASE, tiny_folder)
    assert "motion" in pipe.unet.peft_config  # the evaluator loads the LoRA as the studio does
    output = pipe("a red circle moving to the right, on a blue background", num_frames=8, num_inference_steps=2,
                  height=64, width=64, generator=torch.Generator("cpu").manual_seed(0), output_type="np")
    frames = np.asarray(output.frames)
    assert frames.shape == (1, 8, 64, 64, 3) and np.isfinite(frames).all()


@pytest.mark.slow
def test_resuming_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    base = read_base(BASE)
    config = make_config("tiny", steps=4)
    straight = train(base, config, tmp_path / "straight", threads=1, checkpoint_every=0, progress=False)
    interrupted = tmp_path / "interrupted"
    # a run that checkpoints after step 2 (what an interruption after it leaves behind), then one resumed from it
    full = train(base, config, interrupted, threads=1, checkpoint_every=2, progress=False)
    assert torch.load(interrupted / ".train-state" / "motion.pt", weights_only=True)["step"] == 2
    resumed = train(base, config, interrupted, resume=True, threads=1, checkpoint_every=2, progress=False)
    assert resumed.steps == 4
    expected = _adapter_weights(straight.adapter)
    for result in (full, resumed):
        got = _adapter_weights(result.adapter)
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[name], expected[name]) for name in expected)
        assert result.lora.keys() == straight.lora.keys() and straight.lora
        assert all(torch.equal(result.lora[name], straight.lora[name]) for name in straight.lora)
    assert any(expected[name].abs().sum() > 0 for name in expected if ".proj_out." in name)  # it did learn


def test_the_committed_motion_model_is_small_and_loads():
    if not COMMITTED.is_dir():
        pytest.skip("the motion model is not committed yet")
    from diffusers import MotionAdapter

    from tools.motion.train import folder_size

    assert folder_size(COMMITTED) <= 20_000_000
    MotionAdapter.from_pretrained(str(COMMITTED), local_files_only=True)
    assert "(not measured yet)" not in (COMMITTED / "README.md").read_text(encoding="utf-8")


def test_a_base_with_the_plain_backdrop_trains_its_clips_without_a_background_on_it(tmp_path):
    """The base draws a caption without a background on plain grey; the motion clips follow, or the adapter
    would learn to fight the base over the backdrop."""
    import dataclasses

    from tools.motion import clips
    from tools.shapes import dataset as world

    frames, coverages, spec = clips.training_clip(0, 3, frames=4)
    grey, grey_coverages, grey_spec = clips.training_clip(0, 3, frames=4, plain=True)
    assert grey_spec == spec and np.array_equal(grey_coverages, coverages)
    assert grey[0, 0, 0].tolist() == list(world.PLAIN_BACKGROUND)
    assert frames[0, 0, 0].tolist() == list(world.PALETTE[spec.background])

    base = read_base(BASE)
    config = make_config("tiny", steps=20)  # 40 captions: about 4 leave the background out
    palette = train(dataclasses.replace(base, plain_unnamed_background=False), config, tmp_path / "a", threads=1,
                    checkpoint_every=0, progress=False)
    plain = train(dataclasses.replace(base, plain_unnamed_background=True), config, tmp_path / "b", threads=1,
                  checkpoint_every=0, progress=False)
    first, second = _adapter_weights(palette.adapter), _adapter_weights(plain.adapter)
    assert any(not torch.equal(first[name], second[name]) for name in first), "the plain clips were not used"


def test_a_text_encoder_lora_learns_with_the_adapter_and_is_saved_beside_it(tmp_path):
    """``text_lora_rank`` trains a LoRA on the text encoder's self-attention with the motion modules; it goes into
    the same LoRA file under ``text_encoder.``, which the evaluator (as the studio) loads into its text encoder."""
    from bench.eval_motion import load_pipeline
    from tools.motion.train import save

    base = read_base(BASE)
    config = make_config("tiny", steps=3, overrides=["text_lora_rank=2"])
    trained = train(base, config, tmp_path, threads=1, checkpoint_every=0, progress=False)
    assert trained.text_encoder_lora and all(".self_attn." in k for k in trained.text_encoder_lora)
    assert any(v.abs().sum() > 0 for k, v in trained.text_encoder_lora.items() if ".up." in k)  # it did learn
    save(trained, tmp_path / "saved", base, config, command="test", threads=1)
    lora = load_file(str(tmp_path / "saved" / MOTION_LORA_FILE))
    assert any(k.startswith("text_encoder.") for k in lora) and any(k.startswith("unet.") for k in lora)
    pipe = load_pipeline(BASE, tmp_path / "saved")
    assert any(".lora_" in name for name, _ in pipe.text_encoder.named_parameters())
