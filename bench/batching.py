"""Throughput of concurrent compatible requests: batched by the queue vs one job at a time, in the same run.

N requests (different prompts and seeds, same model, size, sampler, steps, CFG) arrive together, as N concurrent
API calls would; the studio runs them with the studio's ``--batch-images`` default (the queue batches them) and with
``--batch-images 1`` (one at a time, the studio before batching), alternating, on the embedded model. Prints the
median seconds of each and the throughput ratio (target: at least 3x for 16 requests).

    python bench/batching.py [--threads 2] [--requests 16] [--repeats 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = ["a red circle on a blue background", "a large green star on the left, on a white background",
           "a small yellow square in the centre, on a black background", "a purple triangle on the right",
           "on an orange background, a white circle", "a blue star"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-images", type=int, default=None, help="the batch limit (default: the studio's)")
    args = parser.parse_args(argv)

    import torch

    from modules.image.request import GenerationRequest
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    torch.set_num_threads(args.threads)
    requests = [GenerationRequest(prompt=PROMPTS[i % len(PROMPTS)], seed=100 + i, steps=args.steps, cfg_scale=4.5,
                                  width=64, height=64, save_images=False) for i in range(args.requests)]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        models = root / "models"
        shutil.copytree(ROOT / "models" / "Stable-diffusion" / "sfumato-shapes",
                        models / "Stable-diffusion" / "sfumato-shapes",
                        ignore=shutil.ignore_patterns(".train-state", "samples.png"))
        base = AppConfig(models_dir=models, outdir=root / "out", data_dir=root / "data", preview_interval=0)
        limit = args.batch_images or base.batch_images
        studios = {}
        for label, images in (("batched", limit), ("one at a time", 1)):
            config = dataclasses.replace(base, data_dir=root / label, batch_images=images)
            studios[label] = build_services(config)
            studios[label].start()
            studios[label].run(requests[0], timeout=600)  # load the model and warm up
        times: dict[str, list[float]] = {label: [] for label in studios}
        try:
            for _ in range(args.repeats):
                for label, studio in studios.items():
                    queue = studio.queue
                    queue.stop()  # submitted while the worker waits: they arrive together
                    jobs = [queue.submit(request) for request in requests]
                    start = time.perf_counter()
                    queue.start()
                    for job in jobs:
                        queue.wait(job, timeout=1200)
                    times[label].append(time.perf_counter() - start)
                    assert all(job.state == "done" for job in jobs), [job.error for job in jobs]
        finally:
            for studio in studios.values():
                studio.stop()
    batched, single = (statistics.median(times[label]) for label in ("batched", "one at a time"))
    print(f"{args.requests} concurrent requests, embedded model 64x64, {args.steps} steps, "
          f"{args.threads} threads, median of {args.repeats}")
    print("| queue | seconds | images/s |")
    print("|---|---|---|")
    print(f"| one job at a time | {single:.2f} | {args.requests / single:.2f} |")
    print(f"| batched (--batch-images {limit}) | {batched:.2f} | {args.requests / batched:.2f} |")
    print(f"throughput ratio: {single / batched:.2f}x (target >= 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
