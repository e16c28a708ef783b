"""What live previews cost: whole generations with previews every N steps (cheap map, or full VAE decode) against
previews off, measured in the same run, interleaved, through the studio's own generation function.

On the embedded model (``models/Stable-diffusion/sfumato-shapes``) and on the tiny random SD 1.x model of the tests
(whose autoencoder a linear map follows, so its previews take the cheap path). Prints medians and the ratio
(seconds with previews / seconds without: the target is at most 1.05 with previews every 5 steps).

    python bench/previews.py [--threads 2] [--repeats 5] [--steps 20] [--every 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu_precision import interleaved  # noqa: E402


def engine_on(models: Path, outputs: Path):
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    return build_services(AppConfig(models_dir=models, outdir=outputs / "out", data_dir=outputs / "data")).engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=5)
    args = parser.parse_args(argv)

    import torch

    from modules.image.generation import generate
    from modules.image.request import GenerationRequest
    from modules.jobs.control import JobControl
    from tools.tiny_model import save_tiny_model

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        models = root / "models"
        shutil.copytree(ROOT / "models" / "Stable-diffusion" / "sfumato-shapes",
                        models / "Stable-diffusion" / "sfumato-shapes",
                        ignore=shutil.ignore_patterns(".train-state", "samples.png"))
        save_tiny_model(models / "Stable-diffusion" / "tiny-sd1")
        engine = engine_on(models, root)
        for model, size in (("sfumato-shapes", 64), ("tiny-sd1", 64)):
            request = GenerationRequest(prompt="a red circle on a blue background", model=model, steps=args.steps,
                                        width=size, height=size, seed=1, save_images=False, cfg_scale=4.5)

            def run(interval: int, method: str = "approximate", request=request):
                return lambda: generate(request, engine, JobControl(preview_interval=interval, preview_method=method))

            times = interleaved({"off": run(0), "approximate": run(args.every),
                                 "full": run(args.every, "full")}, args.repeats)
            fitted = engine.previewer.fit_for(engine.pipelines.get(engine.resolve_model(model)).base.vae)
            path = ("cheap map" if fitted.usable
                    else f"half-resolution decode: the map misses by {fitted.error:.0f} levels")
            print(f"{model}: off {times['off']:.3f} s, previews every {args.every} steps: "
                  f"approximate {times['approximate']:.3f} s ({times['approximate'] / times['off']:.2f}x, {path}), "
                  f"full {times['full']:.3f} s ({times['full'] / times['off']:.2f}x)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
