"""Run a training configuration outside the server: ``python -m tools.train --config <run>/config.json``.

The ``config.json`` a run writes into its folder reproduces it; ``--resume`` continues from the run's newest
checkpoint (without it the run starts afresh). The run goes through the studio's own train kind (the same
checks, class images from the same generation function, the same files in ``models/``), called directly rather
than through a queue: this process is the worker.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="a run's config.json")
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="the studio's data folder (runs, cache)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    parser.add_argument("--steps", type=int, default=0, help="override the number of steps")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from modules.jobs.control import JobControl
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services
    from modules.training.kind import TRAIN, request_from_dict

    config = json.loads(args.config.read_text(encoding="utf-8"))
    request = request_from_dict(config, args.config.parent / "inputs", True).replace(resume=args.resume)
    if args.steps:
        request = request.replace(steps=args.steps)
    services = build_services(AppConfig(models_dir=args.models_dir, data_dir=args.data_dir,
                                        outdir=args.data_dir / "outputs"))
    kind = services.queue.kinds.get(TRAIN)
    request = kind.resolve(request)
    kind.validate(request)
    result = kind.run(request, JobControl())
    print(json.dumps({"output": str(result.output) if result.output else None, "step": result.step,
                      "resumed_from": result.resumed_from, "losses": result.losses}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
