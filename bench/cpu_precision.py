"""CPU speed of bf16 against float32, measured in the same run, on an SD 1.5-size UNet with random weights and on
the embedded model, and which of the two the studio picks by default for each (the CPU's features: bf16 with
AVX-512 BF16 / AMX, else fp32; models under 200 MB stay fp32, see ``modules.runtime.devices.SMALL_MODEL_BYTES``).

- SD 1.5 UNet (``modules/models/configs/sd15``, random weights: speed does not depend on them): UNet forward
  passes at 256x256 (32x32 latents), batch 2 as with CFG.
- Embedded model (``models/Stable-diffusion/sfumato-shapes``): whole 64x64 txt2img generations, set up as the
  studio does (``apply_memory_options``: bf16 UNet and text encoder, float32 VAE).

Each measurement alternates the two dtypes, ``--repeats`` times, and prints medians and the ratio
(fp32 seconds / default seconds: above 1 means the default is faster).

    python bench/cpu_precision.py [--threads 2] [--repeats 5] [--unet-passes 3] [--steps 20] [--batch 4] [--skip-sd15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EMBEDDED = ROOT / "models" / "Stable-diffusion" / "sfumato-shapes"


def interleaved(runs: dict[str, object], repeats: int) -> dict[str, float]:
    """Median seconds of each callable in ``runs``, calling them in turn ``repeats`` times (after one warm-up)."""
    for run in runs.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def sd15_unet_runs(dtypes: dict[str, object], passes: int) -> dict[str, object]:
    import torch
    from diffusers import UNet2DConditionModel

    from modules.models.checkpoints import read_config_folder

    config = read_config_folder(ROOT / "modules" / "models" / "configs" / "sd15")["unet"]
    torch.manual_seed(0)
    base = UNet2DConditionModel.from_config(config).eval()
    runs = {}
    for name, dtype in dtypes.items():
        unet = base if dtype == torch.float32 else UNet2DConditionModel.from_config(config).eval().to(dtype)
        if unet is not base:
            unet.load_state_dict({key: value.to(dtype) for key, value in base.state_dict().items()})
        latents = torch.randn(2, 4, 32, 32, dtype=dtype)
        text = torch.randn(2, 77, 768, dtype=dtype)

        def run(unet=unet, latents=latents, text=text) -> None:
            with torch.inference_mode():
                for step in range(passes):
                    unet(latents, 999 - step * 50, encoder_hidden_states=text)

        runs[name] = run
    return runs


def embedded_runs(dtypes: dict[str, object], steps: int, batch: int) -> dict[str, object]:
    import torch
    from diffusers import StableDiffusionPipeline

    from modules.runtime.memory import MemoryOptions, apply_memory_options

    runs = {}
    for name, dtype in dtypes.items():
        pipe = StableDiffusionPipeline.from_pretrained(str(EMBEDDED), torch_dtype=torch.float32,
                                                       local_files_only=True, safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        apply_memory_options(pipe, MemoryOptions(), "cpu", dtype)

        def run(pipe=pipe) -> None:
            pipe(["a red circle on a blue background"] * batch, num_inference_steps=steps, height=64, width=64,
                 guidance_scale=3.0, generator=torch.Generator().manual_seed(0))

        runs[name] = run
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--unet-passes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4, help="images per embedded-model generation")
    parser.add_argument("--skip-sd15", action="store_true")
    args = parser.parse_args(argv)

    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from modules.runtime.devices import choose_dtype, cpu_flags, detect_device, model_dtype, weights_bytes

    torch.set_num_threads(args.threads)
    device = detect_device("cpu")
    default = choose_dtype(device)
    bf16_flags = sorted(flag for flag in cpu_flags() if "bf16" in flag)
    print(f"CPU: {device.name}; bf16 flags: {', '.join(bf16_flags) or 'none'}; torch capability "
          f"{torch.backends.cpu.get_cpu_capability()}; default dtype {str(default).removeprefix('torch.')}; "
          f"{args.threads} threads; load average {os.getloadavg()[0]:.2f}", flush=True)
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    auto_bf16 = default == torch.bfloat16
    benches = [(f"embedded model, {args.batch} images 64x64, {args.steps} steps", weights_bytes(EMBEDDED),
                lambda: embedded_runs(dtypes, args.steps, args.batch))]
    if not args.skip_sd15:
        sd15_bytes = 859_520_964 * 4  # the SD 1.5 UNet's parameters in float32
        benches.insert(0, (f"SD 1.5 UNet, {args.unet_passes} forward passes, batch 2, 256x256", sd15_bytes,
                           lambda: sd15_unet_runs(dtypes, args.unet_passes)))
    for title, size, runs in benches:
        chosen = model_dtype(str(default).removeprefix("torch."), auto_bf16, size)  # type: ignore[arg-type]
        medians = interleaved(runs(), args.repeats)
        base = medians["float32"]
        cells = ", ".join(f"{name} {seconds:.2f} s ({base / seconds:.2f}x)" for name, seconds in medians.items())
        print(f"{title}: {cells}; studio default here: {chosen} (default/fp32 speed "
              f"{base / medians[chosen]:.2f}x)  [median of {args.repeats}; ratio = float32 s / that s]", flush=True)


if __name__ == "__main__":
    main()
