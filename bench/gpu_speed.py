"""GPU speed: SD 1.5 at 512x512 and SDXL at 1024x1024, bare diffusers (float16, PyTorch SDPA attention) against the
studio, with and without ``--compile``, measured in one run on one CUDA GPU.

Models of SD 1.5's and SDXL's architecture with random weights, from the configs the studio ships
(``modules/models/configs``): speed does not depend on the weights, and nothing is downloaded. Per model:

- bare diffusers: ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` in float16 on the GPU, Euler;
- the studio: one image per job through the whole queue (job store, PNG with its infotext saved), same seed,
  sampler, steps, CFG and size; the studio picks float16 on a GPU itself;
- the studio with ``--compile`` (cold compile cache; compile time reported apart, warm-up excluded);
- bare diffusers compiled as diffusers documents it (channels_last UNet, ``torch.compile(unet, fullgraph=True)``,
  same mode as the studio), the reference for what compile gives on this GPU; with ``--fused-qkv`` also with
  diffusers' fused QKV projections on top.

Each arm runs once as warm-up (the compiled arms compile there), then the arms take turns ``--repeats`` times;
medians are reported. The compile cache across restarts is checked by starting a second process on SD 1.5's
folder with the same cache (``--restart-check``): its first image's extra time is what a restart costs.

    python bench/gpu_speed.py --out DIR [--steps 20] [--repeats 3] [--only sd15|sdxl] [--fused-qkv]
                              [--restart-check sd15|sdxl|all|none]

Writes ``DIR/gpu_speed.md`` (a markdown table for the README, headed by the GPU's name) after each model, so a run
cut short keeps what it measured, and ``DIR/gpu_speed.json``. On a machine without CUDA it exits saying so.
``--smoke`` runs the same code on the CPU with the tests' tiny models at 64x64 (a dry run of the script: its
figures mean nothing).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
EMBEDDED = ROOT / "models" / "Stable-diffusion" / "sfumato-shapes"
PROMPT = "a red circle on a blue background"


@dataclass(frozen=True)
class Case:
    key: str  # sd15 | sdxl: the config folder under modules/models/configs
    label: str
    size: int
    tiny_family: str  # tools.tiny_model's family for --smoke


CASES = {
    "sd15": Case("sd15", "SD 1.5", 512, "sd1"),
    "sdxl": Case("sdxl", "SDXL", 1024, "sdxl"),
}


@dataclass
class Row:
    case: Case
    size: int
    steps: int
    seconds: dict[str, float] = field(default_factory=dict)  # arm -> median seconds per image
    compile_seconds: dict[str, float] = field(default_factory=dict)  # arm -> first call minus a warm call
    notes: list[str] = field(default_factory=list)


# -- models -------------------------------------------------------------------------------------------------------
def save_random_folder(case: Case, folder: Path, device: str) -> None:
    """A diffusers folder of the case's architecture with random float16 weights (built on the GPU: an SDXL UNet
    initialised on the CPU takes minutes) and the embedded model's CLIP tokenizer."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from modules.models.checkpoints import read_config_folder

    source = ROOT / "modules" / "models" / "configs" / case.key
    configs = read_config_folder(source)
    torch.manual_seed(0)
    with torch.device(device):
        parts: dict[str, Any] = {"unet": UNet2DConditionModel.from_config(configs["unet"]),
                                 "vae": AutoencoderKL.from_config(configs["vae"]),
                                 "text_encoder": CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))}
        if "text_encoder_2" in configs:
            parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"]))
    for name, model in parts.items():
        model.to(torch.float16).save_pretrained(folder / name)
        del model
    parts.clear()
    for tokenizer in ("tokenizer", "tokenizer_2") if "text_encoder_2" in configs else ("tokenizer",):
        shutil.copytree(EMBEDDED / "tokenizer", folder / tokenizer)
    shutil.copytree(source / "scheduler", folder / "scheduler")
    index = json.loads((source / "model_index.json").read_text())
    for optional in ("safety_checker", "feature_extractor", "image_encoder"):
        if optional in index:
            index[optional] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))


def save_folder(case: Case, folder: Path, device: str, smoke: bool) -> None:
    if smoke:
        from tools.tiny_model import save_tiny_model

        save_tiny_model(folder, case.tiny_family, seed=0)
    else:
        save_random_folder(case, folder, device)


def bare_pipeline(folder: Path, device: str, dtype: Any) -> Any:
    """The folder as bare diffusers loads it, on ``device`` in ``dtype``, with Euler and no progress bar."""
    from diffusers import DiffusionPipeline, EulerDiscreteScheduler

    pipe = DiffusionPipeline.from_pretrained(folder, dtype=dtype).to(device)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def compile_bare(pipe: Any, mode: str) -> None:
    """What diffusers' docs do: channels_last UNet, then ``torch.compile(unet, fullgraph=True)``."""
    import torch

    pipe.unet.to(memory_format=torch.channels_last)
    pipe.unet = torch.compile(pipe.unet, mode=mode, fullgraph=True)


def studio_services(root: Path, models: Path, compile_: bool, smoke: bool) -> Any:
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    config = AppConfig(models_dir=models, outdir=root / ("outputs-compiled" if compile_ else "outputs"),
                       data_dir=root / "data", device="cpu" if smoke else None, compile=compile_,
                       max_loaded_models=1, threads=2 if smoke else None)
    services = build_services(config)
    services.start()
    return services


# -- timing -------------------------------------------------------------------------------------------------------
def synchronized(run: Callable[[], Any]) -> Callable[[], float]:
    """``run`` timed in seconds, the GPU's queued work included."""
    import torch

    def timed() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return timed


def measure(arms: dict[str, Callable[[], float]], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """(median seconds per arm over ``repeats`` turns, first-call seconds per arm). Each arm's first call is a
    warm-up (compiling, for the compiled arms) and is not in the median."""
    first = {name: arm() for name, arm in arms.items()}
    samples: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):
        for name, arm in arms.items():
            samples[name].append(arm())
    return {name: statistics.median(values) for name, values in samples.items()}, first


def run_case(case: Case, root: Path, args: argparse.Namespace) -> Row:
    import torch

    from modules.image.request import GenerationRequest

    device = "cpu" if args.smoke else "cuda"
    size = 64 if args.smoke else case.size
    steps = 2 if args.smoke else args.steps
    models = root / "models"
    folder = models / "Stable-diffusion" / f"{case.key}-random"
    started = time.perf_counter()
    save_folder(case, folder, device, args.smoke)
    print(f"[{case.label}] random-weight folder written in {time.perf_counter() - started:.0f} s", flush=True)
    row = Row(case, size, steps)
    request = GenerationRequest(prompt=PROMPT, model=folder.name, steps=steps, cfg_scale=7.0, width=size,
                                height=size, seed=1, sampler_name="Euler")

    def bare_call(pipe: Any) -> Callable[[], Any]:
        def call() -> None:
            with torch.inference_mode():
                pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.0, height=size, width=size,
                     generator=torch.Generator().manual_seed(1))
        return call

    studio = studio_services(root / "plain", models, compile_=False, smoke=args.smoke)
    compiled = studio_services(root / "compiled", models, compile_=True, smoke=args.smoke)
    bare = reference = None
    try:
        studio.run(request, timeout=3600)  # loads; the studio decides the dtype
        compiled.engine.pipelines.get(compiled.engine.resolve_model(folder.name))  # loaded, not compiled yet
        dtype = studio.engine.pipelines.most_recent().base.unet.dtype
        bare = bare_pipeline(folder, device, dtype)
        reference = bare_pipeline(folder, device, dtype)
        processors = {type(p).__name__ for p in bare.unet.attn_processors.values()}
        row.notes.append(f"{str(dtype).removeprefix('torch.')}, attention {', '.join(sorted(processors))}")
        arms: dict[str, Callable[[], float]] = {
            "bare diffusers": synchronized(bare_call(bare)),
            "studio": synchronized(lambda: studio.run(request, timeout=3600)),
            "studio --compile": synchronized(lambda: compiled.run(request, timeout=3600)),
        }
        try:
            compile_bare(reference, args.mode)
            arms["bare diffusers + compile"] = synchronized(bare_call(reference))
        except Exception as error:  # the bench reports a failed arm rather than losing the others
            row.notes.append(f"bare compile failed: {error}")
        medians, first = measure(arms, args.repeats)
        if "bare diffusers + compile" in arms and args.fused_qkv:
            reference.fuse_qkv_projections(vae=False)  # recompiles at the next call: measured apart
            fused = synchronized(bare_call(reference))
            medians_fused, first_fused = measure({"bare diffusers + compile + fused QKV": fused}, args.repeats)
            medians.update(medians_fused)
            first.update(first_fused)
        row.seconds = medians
        for arm in ("studio --compile", "bare diffusers + compile", "bare diffusers + compile + fused QKV"):
            if arm in first:
                row.compile_seconds[arm] = max(0.0, first[arm] - medians[arm])
        report = compiled.engine.pipelines.memory_report()
        failed = [line for lines in report.values() for line in lines if "failed" in line]
        row.notes.extend(failed)
    finally:
        studio.stop()
        compiled.stop()
        studio.engine.pipelines.unload_all()
        compiled.engine.pipelines.unload_all()
    del bare, reference
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if args.restart_check in (case.key, "all"):
        row.compile_seconds["studio --compile, after a restart"] = restart_compile_seconds(root, folder, args)
    shutil.rmtree(folder, ignore_errors=True)  # SDXL's is ~7 GB
    return row


def restart_compile_seconds(root: Path, folder: Path, args: argparse.Namespace) -> float:
    """A fresh process on the same folder and compile cache (``root/compiled/data/compile-cache``): the extra
    seconds of its first image over its second, i.e. what compiling costs after a restart."""
    command = [sys.executable, str(Path(__file__).resolve()), "--restart-probe", str(root), "--probe-model",
               folder.name, "--steps", str(args.steps)] + (["--smoke"] if args.smoke else [])
    env = dict(os.environ)
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)  # the studio points it at its data dir, as on a real start
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    for line in completed.stdout.splitlines():
        if line.startswith("restart-compile-seconds "):
            return float(line.split()[1])
    print(completed.stdout[-2000:], completed.stderr[-4000:], sep="\n", file=sys.stderr)
    return float("nan")


def restart_probe(root: Path, model: str, args: argparse.Namespace) -> int:
    from modules.image.request import GenerationRequest

    case = next(case for case in CASES.values() if model.startswith(case.key))
    size = 64 if args.smoke else case.size
    steps = 2 if args.smoke else args.steps
    request = GenerationRequest(prompt=PROMPT, model=model, steps=steps, cfg_scale=7.0, width=size, height=size,
                                seed=1, sampler_name="Euler")
    compiled = studio_services(root / "compiled", root / "models", compile_=True, smoke=args.smoke)
    try:
        compiled.engine.pipelines.get(compiled.engine.resolve_model(model))  # loaded, not compiled yet
        first = synchronized(lambda: compiled.run(request, timeout=3600))()
        second = synchronized(lambda: compiled.run(request, timeout=3600))()
    finally:
        compiled.stop()
    print(f"restart-compile-seconds {max(0.0, first - second):.3f}", flush=True)
    return 0


# -- the table ----------------------------------------------------------------------------------------------------
ARMS = ("bare diffusers", "studio", "studio --compile", "bare diffusers + compile",
        "bare diffusers + compile + fused QKV")


def table(rows: list[Row], heading: str) -> str:
    arms = [arm for arm in ARMS if any(arm in row.seconds for row in rows)]
    header = ["model", *arms, "studio / bare", "speed-up of studio --compile over bare",
              "compile (first start)", "compile after a restart"]
    lines = [heading, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        seconds = row.seconds
        cells = [f"{row.case.label}, {row.size}x{row.size}, {row.steps} steps"]
        cells += [f"{seconds[arm]:.3f} s" if arm in seconds else "-" for arm in arms]
        bare = seconds.get("bare diffusers")
        cells.append(f"{seconds['studio'] / bare:.3f}x" if bare and "studio" in seconds else "-")
        cells.append(f"{bare / seconds['studio --compile']:.2f}x" if bare and "studio --compile" in seconds else "-")
        cold = row.compile_seconds.get("studio --compile")
        warm = row.compile_seconds.get("studio --compile, after a restart")
        cells.append(f"{cold:.0f} s" if cold is not None else "-")
        cells.append(f"{warm:.0f} s" if warm is not None and warm == warm else "-")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"{row.case.label}: {note}" for row in rows for note in row.notes]
    return "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"


def heading(args: argparse.Namespace) -> str:
    import diffusers
    import torch

    name = "CPU (smoke run: figures mean nothing)" if args.smoke else torch.cuda.get_device_name(0)
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    return (f"**{name}**; torch {torch.__version__}{cuda}, diffusers {diffusers.__version__}; seconds per image, "
            f"median of {args.repeats} after a warm-up; batch 1, CFG 7, Euler; compile mode {args.mode}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="folder for gpu_speed.md and gpu_speed.json")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(CASES), help="measure one model only")
    parser.add_argument("--fused-qkv", action="store_true",
                        help="also bare diffusers compiled with fused QKV projections (one more compile per model)")
    parser.add_argument("--restart-check", choices=["sd15", "sdxl", "all", "none"], default="sd15",
                        help="which models get the compile-after-a-restart check (a second process; default sd15)")
    parser.add_argument("--smoke", action="store_true", help="dry run on the CPU with tiny models")
    parser.add_argument("--restart-probe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe-model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from modules.models.speedups import CACHE_VARIABLE, COMPILE_MODE

    args.mode = COMPILE_MODE
    if args.restart_probe is None:
        os.environ.pop(CACHE_VARIABLE, None)  # a cold cache: the studio points it at its data dir
    import torch

    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("bench/gpu_speed.py measures CUDA GPUs and this machine has none (torch "
                         f"{torch.__version__} sees no CUDA device); --smoke runs its code on the CPU with tiny models")
    if args.restart_probe is not None:
        return restart_probe(args.restart_probe, args.probe_model, args)
    if args.smoke:
        torch.set_num_threads(2)
    cases = [CASES[args.only]] if args.only else list(CASES.values())
    rows: list[Row] = []
    title = heading(args)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-speed-") as scratch:
        root = Path(scratch)
        for case in cases:
            started = time.perf_counter()
            rows.append(run_case(case, root, args))
            print(f"[{case.label}] done in {time.perf_counter() - started:.0f} s", flush=True)
            text = table(rows, title)
            print(text, flush=True)
            if args.out:
                (args.out / "gpu_speed.md").write_text(text)
                (args.out / "gpu_speed.json").write_text(json.dumps(
                    [{"model": row.case.label, "size": row.size, "steps": row.steps, "seconds": row.seconds,
                      "compile_seconds": row.compile_seconds, "notes": row.notes} for row in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
