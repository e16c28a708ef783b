#!/usr/bin/env python3
"""Sfumato's one entry point and composition root.

``python3 launch.py`` creates ``.venv`` on first run, installs the project into it, then serves the studio.
``python3 launch.py --test`` does the same set-up and runs the test suite. Everything after set-up happens in
``main``: command line -> AppConfig -> services -> UI and/or REST API.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
# spandrel (upscalers) imports torchvision; on this platform torch 2.14.1 is the build that has a matching one.
DEFAULT_TORCH = "torch==2.14.1 torchvision==0.29.1"
# The CLIP BPE vocabulary ships in open_clip_torch; its own dependencies (torchvision) are not needed to read it.
OPEN_CLIP = "open_clip_torch==3.3.0"
EMBEDDED_MODEL = ROOT / "models" / "Stable-diffusion" / "sfumato-shapes"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="launch.py", description="Sfumato, a Stable Diffusion studio.")
    serve = parser.add_argument_group("serving")
    serve.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    serve.add_argument("--listen", action="store_true", help="serve on all network interfaces, not only localhost")
    serve.add_argument("--share", action="store_true", help="make a public Gradio link (needs --gradio-auth)")
    serve.add_argument("--gradio-auth", metavar="USER:PASS[,USER:PASS]", help="require a login for the UI")
    serve.add_argument("--share-without-auth", action="store_true",
                       help="accept sharing the studio publicly with no login (not recommended)")
    serve.add_argument("--listen-without-auth", action="store_true",
                       help="accept serving the web UI on the network with no login (not recommended)")
    api = parser.add_argument_group("REST API")
    api.add_argument("--api", action="store_true", help="also serve the REST API on the UI's server (docs at /docs)")
    api.add_argument("--nowebui", action="store_true", help="serve only the REST API, without the web UI")
    api.add_argument("--api-auth", metavar="USER:PASS[,USER:PASS]", help="require HTTP Basic credentials for the API")
    api.add_argument("--api-keys", type=Path, metavar="FILE",
                     help="JSON file of API keys with tiers (rate limit, concurrent jobs, monthly images)")
    api.add_argument("--cors-allow-origins", metavar="ORIGIN[,ORIGIN]",
                     help="other origins whose web pages may call the API, e.g. https://myapp.example")
    ext = parser.add_argument_group("extensions")
    ext.add_argument("--extensions-dir", type=Path, help="your extensions folder (default: <data-dir>/extensions)")
    ext.add_argument("--enable-insecure-extension-access", action="store_true",
                     help="allow installing extensions even when the studio is reachable from other machines")
    paths = parser.add_argument_group("paths")
    paths.add_argument("--models-dir", type=Path, default=ROOT / "models",
                       help="models folder with A1111 sub-folders (Stable-diffusion, VAE, Lora, ...)")
    paths.add_argument("--ckpt-dir", type=Path, action="append", default=[],
                       help="an extra folder of checkpoints (repeatable)")
    paths.add_argument("--ckpt", help="checkpoint to use by default (title, name or hash)")
    paths.add_argument("--outdir", type=Path, default=ROOT / "outputs", help="where images are saved")
    paths.add_argument("--data-dir", type=Path, default=ROOT / "data", help="settings, styles and caches")
    device = parser.add_argument_group("device and memory")
    device.add_argument("--device", help="torch device to use, e.g. cpu, cuda:1, mps (default: best available)")
    device.add_argument("--precision", choices=["auto", "full", "half", "bf16", "autocast"], default="auto",
                        help="weights precision (auto: fp16 on GPUs; on a CPU bf16 where it has native bf16, "
                             "AVX-512 BF16 or AMX, with a float32 VAE, else fp32)")
    device.add_argument("--no-half", action="store_true", help="never use fp16 weights")
    device.add_argument("--medvram", action="store_true", help="model CPU offload: keep only the active part on GPU")
    device.add_argument("--lowvram", action="store_true", help="sequential CPU offload: least VRAM, slowest")
    device.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for inference (default: the physical cores available to this process)")
    device.add_argument("--max-loaded-models", type=int, default=1, metavar="N",
                        help="keep up to N checkpoints loaded, least recently used out first, so switching back and "
                             "forth does not reload (a model is still unloaded first when memory runs short)")
    device.add_argument("--quantize", choices=["none", "nf4", "int8"], default="none",
                        help="load the UNet / transformer quantized with bitsandbytes, 4-bit NF4 (~1/4 of bf16) or "
                             "8-bit (~1/2), so Flux fits consumer GPUs; CUDA GPUs only (GGUF files need no option)")
    device.add_argument("--compile", action="store_true",
                        help="compile the UNet / transformer with torch.compile (channels_last UNet) on first use "
                             "of each model and size: faster steps on GPUs after a one-time compile, cached in "
                             "<data-dir>/compile-cache across restarts; jobs with LoRAs run uncompiled")
    device.add_argument("--batch-images", type=int, default=16, metavar="N",
                        help="run compatible waiting image jobs (same model, size, sampler, steps, CFG, LoRAs) as "
                             "one batch of up to N images, each job keeping its own prompt, seed and result "
                             "(1: one job at a time)")
    device.add_argument("--batch-window", type=float, default=0.0, metavar="SECONDS",
                        help="how long a job that could be batched waits for compatible jobs to arrive (default 0: "
                             "only jobs already waiting join it)")
    device.add_argument("--attention-slicing", action="store_true", help="compute attention in slices")
    device.add_argument("--vae-slicing", action="store_true", help="decode batches one image at a time")
    device.add_argument("--vae-tiling", action="store_true", help="decode large images in tiles")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-pixels", type=int, default=2048 * 2048, help="largest width*height a request may ask")
    limits.add_argument("--max-batch-size", type=int, default=8)
    limits.add_argument("--max-body-mb", type=float, default=64,
                        help="largest request body in MiB, JSON or upload, on every route (default 64)")
    run = parser.add_argument_group("run modes")
    run.add_argument("--exit", action="store_true", help="set up the environment, then exit without serving")
    run.add_argument("--test", nargs=argparse.REMAINDER, metavar="PYTEST_ARGS",
                     help="set up, then run the test suite (remaining arguments go to pytest)")
    run.add_argument("--skip-install", action="store_true", help="do not check or install dependencies")
    return parser.parse_args(argv)


# -- the virtual environment --------------------------------------------------------------------------------------
def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def in_project_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_environment(with_tests: bool) -> None:
    """Create .venv and install what pyproject.toml names, once per change of pyproject.toml."""
    python = venv_python()
    if not python.exists():
        print(f"Creating the virtual environment in {VENV} …", flush=True)
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except (OSError, subprocess.CalledProcessError) as error:
            raise SystemExit(f"Could not create {VENV} ({error}). On Debian/Ubuntu install the venv module first: "
                             "sudo apt install python3-venv") from None
    extras = ".[test]" if with_tests else "."
    torch_command = os.environ.get("TORCH_COMMAND", f"pip install {DEFAULT_TORCH}")
    fingerprint = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + extras.encode() + torch_command.encode()
    ).hexdigest()
    marker = VENV / f".sfumato-installed-{'test' if with_tests else 'app'}"
    if marker.exists() and marker.read_text() == fingerprint:
        return
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    steps = [
        _torch_step(python, torch_command),
        [*pip, "install", "-e", extras],
        [*pip, "install", "--no-deps", OPEN_CLIP],
    ]
    for step in steps:
        print("Installing:", " ".join(step[1:] if step[0] == str(python) else step), flush=True)
        completed = subprocess.run(step, cwd=ROOT)
        if completed.returncode != 0:
            raise SystemExit(f"Installation step failed (exit {completed.returncode}): {' '.join(step)}")
    marker.write_text(fingerprint)


def _torch_step(python: Path, command: str) -> list[str]:
    """TORCH_COMMAND is A1111's variable: a pip command line ("pip install torch==… --index-url …")."""
    words = shlex.split(command)
    if words and words[0] in ("pip", "pip3"):
        return [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *words[1:]]
    return words


def relaunch_in_venv(argv: list[str]) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    os.execve(str(venv_python()), [str(venv_python()), str(ROOT / "launch.py"), *argv], env)


# -- composition ---------------------------------------------------------------------------------------------------
def build_config(args: argparse.Namespace):
    from modules.image.request import Limits
    from modules.runtime.config import AppConfig
    from modules.runtime.devices import physical_cores

    if args.nowebui and args.share:
        raise SystemExit("--share makes a public link to the web UI; it cannot be combined with --nowebui.")
    if not args.max_body_mb > 0:
        raise SystemExit(f"--max-body-mb: must be more than 0, got {args.max_body_mb}")
    if args.max_loaded_models < 1:
        raise SystemExit(f"--max-loaded-models: must be at least 1, got {args.max_loaded_models}")
    if args.batch_images < 1:
        raise SystemExit(f"--batch-images: must be at least 1, got {args.batch_images}")
    if not 0 <= args.batch_window <= 10:
        raise SystemExit(f"--batch-window: must be between 0 and 10 seconds, got {args.batch_window}")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"--threads: must be at least 1, got {args.threads}")
    if args.quantize != "none":  # asks torch for a GPU, so only when the option is used
        from modules.models.quantization import startup_problem

        problem = startup_problem(args.quantize, args.device)
        if problem:
            raise SystemExit(f"--quantize {args.quantize}: {problem}")
    return AppConfig(
        models_dir=args.models_dir.resolve(),
        ckpt_dirs=tuple(path.resolve() for path in args.ckpt_dir),
        outdir=args.outdir.resolve(),
        data_dir=args.data_dir.resolve(),
        default_ckpt=args.ckpt,
        device=args.device,
        precision=args.precision,
        no_half=args.no_half,
        medvram=args.medvram,
        lowvram=args.lowvram,
        attention_slicing=args.attention_slicing,
        vae_slicing=args.vae_slicing,
        vae_tiling=args.vae_tiling,
        max_loaded_models=args.max_loaded_models,
        quantize=args.quantize,
        compile=args.compile,
        batch_images=args.batch_images,
        batch_window=args.batch_window,
        threads=args.threads if args.threads is not None else physical_cores(),
        limits=Limits(max_pixels=args.max_pixels, max_batch_size=args.max_batch_size),
        port=args.port,
        listen=args.listen,
        share=args.share,
        gradio_auth=_credentials("--gradio-auth", args.gradio_auth),
        share_without_auth=args.share_without_auth,
        listen_without_auth=args.listen_without_auth,
        api=args.api,
        nowebui=args.nowebui,
        api_auth=_credentials("--api-auth", args.api_auth),
        api_keys_file=args.api_keys.resolve() if args.api_keys else None,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        cors_allow_origins=tuple(item.strip() for item in (args.cors_allow_origins or "").split(",") if item.strip()),
        user_extensions_dir=args.extensions_dir.resolve() if args.extensions_dir else None,
        enable_insecure_extension_access=args.enable_insecure_extension_access,
    )


def _credentials(flag: str, text: str | None) -> tuple[tuple[str, str], ...]:
    from modules.runtime.config import parse_auth

    try:
        return parse_auth(text)
    except ValueError as error:
        raise SystemExit(f"{flag}: {error}") from None


def with_default_model(config):
    """The embedded model (sfumato-shapes) is the default when the user's model folders hold no checkpoint of
    their own, e.g. with ``--models-dir`` pointing at an empty or new folder."""
    import dataclasses

    from modules.models.registry import ModelRegistry

    registry = ModelRegistry(config.models_dir, list(config.ckpt_dirs), cache_file=config.hash_cache_file,
                             compute_hashes=False)  # only "is there any?": the services' registry hashes (once)
    if registry.list() or not (EMBEDDED_MODEL / "model_index.json").is_file():
        return config
    print(f"No checkpoint of your own yet: using the embedded model {EMBEDDED_MODEL.name}.", flush=True)
    return dataclasses.replace(config, ckpt_dirs=(*config.ckpt_dirs, EMBEDDED_MODEL.parent))


def run_tests(pytest_args: list[str]) -> int:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.call([sys.executable, "-m", "pytest", *pytest_args], cwd=ROOT, env=env)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    testing = args.test is not None
    if not args.skip_install:
        if not in_project_venv():
            ensure_environment(with_tests=testing)
            relaunch_in_venv(argv)
        ensure_environment(with_tests=testing)
    if testing:
        return run_tests(args.test)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Gradio's usage reports and version check phone home from every Blocks; a local studio does not (as A1111).
    # Setting the variable to "True" turns them back on.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    config = build_config(args)
    if config.share and not config.gradio_auth and not config.share_without_auth:
        raise SystemExit("--share would put this studio on the internet with no login. "
                         "Add --gradio-auth user:password, or --share-without-auth to accept the risk.")
    from app.server import check_ui

    check_ui(config)
    if config.serves_api:
        from app.server import check_api

        check_api(config)
    config = with_default_model(config)
    if args.exit:
        print("Environment ready.")
        return 0
    from app.server import serve
    from modules.runtime.services import build_services

    serve(build_services(config), config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
