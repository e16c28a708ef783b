"""What the studio adds to a bare diffusers call: one image through the whole queue (submit, job store, the
generation function, PNG with its infotext saved, result recorded) against the same pipeline called directly with
the same scheduler, steps, guidance, size, seed and precision, in the same run, interleaved.

Models: the embedded model (64x64, 20 Euler steps, CFG 4.5) and, unless ``--skip-sd15``, a random-weight model of
SD 1.5's architecture (``modules/models/configs/sd15``; speed does not depend on the weights) at 256x256, 8 steps.
Prints median seconds and the ratio studio / bare (targets: <= 1.10 on the embedded model, <= 1.03 on SD 1.5).

The denoiser's own time varies from run to run by several per cent on a CPU (more than the 3 % being measured),
so both UNets are also clocked (forward hooks): the table shows the median time spent outside the denoiser on each
side (text encoding, scheduler, VAE decode, and for the studio the queue, PNG and job record) and the ratio with
the shared denoiser time taken out, ``(bare + studio outside - bare outside) / bare``, beside the denoiser's own
studio / bare ratio (about 1.00 unless the studio slows the UNet itself).

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

import statistics  # noqa: E402
import time  # noqa: E402

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


class DenoiserClock:
    """Seconds spent inside the given modules' forward calls since the last ``reset``."""

    def __init__(self, modules) -> None:
        self.seconds = 0.0
        self._started = 0.0
        for module in modules:
            module.register_forward_pre_hook(self._enter)
            module.register_forward_hook(self._leave)

    def _enter(self, *_) -> None:
        self._started = time.perf_counter()

    def _leave(self, *_) -> None:
        self.seconds += time.perf_counter() - self._started

    def reset(self) -> None:
        self.seconds = 0.0


def interleaved_with_denoiser(runs: dict, clock: DenoiserClock, repeats: int) -> dict[str, dict[str, float]]:
    """Per run name: median total seconds and median seconds inside / outside the denoiser, the runs taking turns
    as ``interleaved`` has them (one warm-up each, not counted)."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}

    def timed(name: str, run):
        def call() -> None:
            clock.reset()
            start = time.perf_counter()
            run()
            samples[name].append((time.perf_counter() - start, clock.seconds))
        return call

    interleaved({name: timed(name, run) for name, run in runs.items()}, repeats)
    medians = {}
    for name, measured in samples.items():
        kept = measured[1:]  # the warm-up's
        medians[name] = {"total": statistics.median(total for total, _ in kept),
                         "inside": statistics.median(inside for _, inside in kept),
                         "outside": statistics.median(total - inside for total, inside in kept)}
    return medians


def compare(studio, model: str, folder: Path, size: int, steps: int, cfg: float, repeats: int) -> dict:
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

    clock = DenoiserClock({id(unet): unet for unet in (loaded.base.unet, bare.unet)}.values())
    times = interleaved_with_denoiser({"bare diffusers": run_bare, "studio": run_studio}, clock, repeats)
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
    print(table(rows, args.repeats, args.threads))
    return 0


def table(rows: list, repeats: int, threads: int) -> str:
    """The README's table: medians, the plain ratio, time outside the denoiser, and the ratio without its noise."""
    lines = [f"median of {repeats}, {threads} threads; the studio saves a PNG with its infotext and records the job; "
             "previews every 5 steps",
             "| model | dtype | bare diffusers | studio | studio / bare | outside the denoiser: bare / studio | "
             "studio / bare, denoiser time shared | denoiser studio / bare | target |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for label, times, target in rows:
        bare, studio = times["bare diffusers"], times["studio"]
        shared = (bare["total"] + studio["outside"] - bare["outside"]) / bare["total"]
        lines.append(f"| {label} | {times['dtype']} | {bare['total']:.3f} s | {studio['total']:.3f} s | "
                     f"{studio['total'] / bare['total']:.3f}x | {bare['outside']:.3f} s / {studio['outside']:.3f} s | "
                     f"{shared:.3f}x | {studio['inside'] / bare['inside']:.3f}x | <= {target:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
