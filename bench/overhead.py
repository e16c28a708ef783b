"""What the studio adds to a bare diffusers call: one image through the whole queue (submit, job store, the
generation function, PNG with its infotext saved, result recorded) against the same pipeline called directly with
the same scheduler, steps, guidance, size, seed and precision, in the same run, interleaved.

Models: the embedded model (64x64, 20 Euler steps, CFG 4.5) and, unless ``--skip-sd15``, a random-weight model of
SD 1.5's architecture (``modules/models/configs/sd15``; speed does not depend on the weights) at 256x256, 8 steps.
Prints median seconds and the ratio studio / bare (targets: <= 1.10 on the embedded model, <= 1.03 on SD 1.5).

    python bench/overhead.py [--threads 2] [--repeats 5] [--skip-sd15]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu_precision import interleaved  # noqa: E402

EMBEDDED = ROOT / "models" / "Stable-diffusion" / "sfumato-shapes"


def save_sd15_folder(folder: Path) -> None:
    """A diffusers folder of SD 1.5's architecture with random weights and the embedded model's CLIP tokenizer."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from modules.models.checkpoints import read_config_folder

    configs = read_config_folder(ROOT / "modules" / "models" / "configs" / "sd15")
    torch.manual_seed(0)
    UNet2DConditionModel.from_config(configs["unet"]).save_pretrained(folder / "unet")
    AutoencoderKL.from_config(configs["vae"]).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])).save_pretrained(folder / "text_encoder")
    shutil.copytree(EMBEDDED / "tokenizer", folder / "tokenizer")
    shutil.copytree(ROOT / "modules" / "models" / "configs" / "sd15" / "scheduler", folder / "scheduler")
    index = json.loads((ROOT / "modules" / "models" / "configs" / "sd15" / "model_index.json").read_text())
    for optional in ("safety_checker", "feature_extractor", "image_encoder"):
        index[optional] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))


def compare(studio, model: str, folder: Path, size: int, steps: int, cfg: float, repeats: int) -> dict[str, float]:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from modules.image.request import GenerationRequest

    prompt = "a red circle on a blue background"
    request = GenerationRequest(prompt=prompt, model=model, steps=steps, cfg_scale=cfg, width=size, height=size,
                                seed=1, sampler_name="Euler")
    studio.run(request, timeout=3600)  # loads the model; the studio decides the precision
    loaded = studio.engine.pipelines.get(studio.engine.resolve_model(model))
    dtype = loaded.base.unet.dtype
    bare = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False)
    if loaded.base.vae.dtype != dtype:  # the studio keeps a CPU bf16 model's VAE in fp32: the same here
        bare.vae.to(loaded.base.vae.dtype)
    bare.scheduler = EulerDiscreteScheduler.from_config(bare.scheduler.config)
    bare.set_progress_bar_config(disable=True)

    def run_bare() -> None:
        with torch.inference_mode():
            latents = bare(prompt, num_inference_steps=steps, guidance_scale=cfg, height=size, width=size,
                           generator=torch.Generator().manual_seed(1), output_type="latent").images
            # decoded by the VAE in its own precision (fp32 beside a bf16 UNet on CPU, as the studio keeps it);
            # the pipeline's own decode would hand bf16 latents to an fp32 VAE and fail
            vae = bare.vae
            pixels = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
            bare.image_processor.postprocess(pixels, output_type="pil")

    def run_studio() -> None:
        studio.run(request, timeout=3600)

    times = interleaved({"bare diffusers": run_bare, "studio": run_studio}, repeats)
    times["dtype"] = str(dtype).removeprefix("torch.")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-sd15", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        checkpoints = root / "models" / "Stable-diffusion"
        shutil.copytree(EMBEDDED, checkpoints / "sfumato-shapes", ignore=shutil.ignore_patterns(".train-state"))
        cases = [("embedded model, 64x64, 20 steps", "sfumato-shapes", 64, 20, 4.5, 1.10)]
        if not args.skip_sd15:
            save_sd15_folder(checkpoints / "sd15-random")
            cases.append(("SD 1.5 architecture, 256x256, 8 steps", "sd15-random", 256, 8, 7.0, 1.03))
        studio = build_services(AppConfig(models_dir=root / "models", outdir=root / "outputs", data_dir=root / "data",
                                          threads=args.threads, preview_interval=5, max_loaded_models=2))
        studio.start()
        try:
            for label, model, size, steps, cfg, target in cases:
                times = compare(studio, model, checkpoints / model, size, steps, cfg, args.repeats)
                rows.append((label, times, target))
        finally:
            studio.stop()
    print(f"median of {args.repeats}, {args.threads} threads; the studio saves a PNG with its infotext and records "
          "the job; previews every 5 steps")
    print("| model | dtype | bare diffusers | studio | studio / bare | target |")
    print("|---|---|---|---|---|---|")
    for label, times, target in rows:
        ratio = times["studio"] / times["bare diffusers"]
        print(f"| {label} | {times['dtype']} | {times['bare diffusers']:.3f} s | {times['studio']:.3f} s | "
              f"{ratio:.3f}x | <= {target:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
