"""Speed and peak memory of each memory option, as ratios against no option, measured in the same run.

On a GPU it builds the real SD 1.5 (or SDXL) architecture from the shipped configs with random weights (speed
and memory do not depend on the weights) and generates at the family's size; on a CPU it uses the tiny test
model so the script still runs anywhere. Usage:

    python bench/memory_options.py [--family sd15|sdxl] [--steps 20] [--size 512] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OPTION_SETS = {
    "none": {},
    "attention slicing": {"attention_slicing": True},
    "VAE slicing + tiling": {"vae_slicing": True, "vae_tiling": True},
    "model CPU offload (--medvram)": {"model_cpu_offload": True},
    "sequential CPU offload (--lowvram)": {"sequential_cpu_offload": True},
}


def build_pipeline(family: str, device_type: str, dtype):
    """Random weights in the real architecture on a GPU; the tiny model on a CPU."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.models import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from modules.models.checkpoints import read_config_folder
    from modules.models.clip_vocab import load_clip_tokenizer
    from tools.tiny_model import build_tiny_pipeline

    if device_type == "cpu":
        return build_tiny_pipeline("sdxl" if family == "sdxl" else "sd1")
    configs = read_config_folder(Path(__file__).resolve().parent.parent / "modules" / "models" / "configs" / family)
    torch.manual_seed(0)
    with torch.device("cpu"):
        unet = UNet2DConditionModel.from_config(configs["unet"]).to(dtype)
        vae = AutoencoderKL.from_config(configs["vae"]).to(dtype)
        text = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])).to(dtype)
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(configs["scheduler"])
    if family == "sdxl":
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"])).to(dtype)
        return StableDiffusionXLPipeline(vae=vae, text_encoder=text, text_encoder_2=text_2,
                                         tokenizer=load_clip_tokenizer(), tokenizer_2=load_clip_tokenizer("!"),
                                         unet=unet, scheduler=scheduler)
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=load_clip_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def measure(family: str, steps: int, size: int, repeats: int) -> list[tuple[str, float, float | None, list[str]]]:
    import torch

    from modules.runtime.devices import choose_dtype, detect_device
    from modules.runtime.memory import MemoryOptions, apply_memory_options

    device = detect_device()
    dtype = choose_dtype(device)
    size = size if device.type != "cpu" else 64
    rows = []
    for label, flags in OPTION_SETS.items():
        pipe = build_pipeline(family, device.type, dtype)
        report = apply_memory_options(pipe, MemoryOptions(**flags), device, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        pipe("warm-up", num_inference_steps=2, height=size, width=size, output_type="np")
        timings = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            pipe("a red circle", num_inference_steps=steps, height=size, width=size, output_type="np",
                 generator=torch.Generator("cpu").manual_seed(0))
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        rows.append((label, min(timings), peak, report))
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"device: {device.name} ({device.type}), dtype {dtype}, family {family}, {size}x{size}, {steps} steps")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = measure(args.family, args.steps, args.size, args.repeats)
    base_time, base_peak = rows[0][1], rows[0][2]
    print(f"{'option':38} {'seconds':>8} {'time ratio':>10} {'peak GiB':>9} {'memory ratio':>12}")
    for label, seconds, peak, _report in rows:
        peak_text = f"{peak:9.2f}" if peak is not None else f"{'n/a':>9}"
        ratio = f"{peak / base_peak:12.2f}" if peak is not None and base_peak else f"{'n/a':>12}"
        print(f"{label:38} {seconds:8.2f} {seconds / base_time:10.2f} {peak_text} {ratio}")


if __name__ == "__main__":
    main()
