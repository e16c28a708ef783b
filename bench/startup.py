"""Seconds from ``python launch.py`` to the first HTTP 200, for the studio (UI) and the API alone (``--nowebui``),
against issue 18's targets (UI 2 s, API 1 s), with reference costs measured in the same run.

Each run starts a fresh process on a free port with the embedded model folder and throw-away data and output
folders, polls ``/`` (UI) or ``/api/v1/system`` (API) every 20 ms, and stops the server. Runs are interleaved
(UI, API, [baseline UI, baseline API], references) so a busy machine slows all of them alike; medians are printed.
``--baseline-root`` times another checkout (e.g. the main branch before the change) in the same run.

    python bench/startup.py [--runs 5] [--baseline-root /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.ports import free_port  # noqa: E402  (after the path insert: run as a script from bench/)

TARGETS = {"ui": 2.0, "api": 1.0}
PATHS = {"ui": "/", "api": "/api/v1/system"}
TIMEOUT = 120.0


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def time_launch(root: Path, mode: str, python: str) -> float:
    """Seconds from spawning ``launch.py`` in ``root`` until ``PATHS[mode]`` answers 200."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sfumato-startup-") as scratch:
        args = [python, str(root / "launch.py"), "--skip-install", "--port", str(port),
                "--models-dir", str(root / "models"), "--data-dir", f"{scratch}/data", "--outdir", f"{scratch}/out"]
        if mode == "api":
            args.append("--nowebui")
        env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(root))
        with open(f"{scratch}/log.txt", "wb") as log:
            start = time.perf_counter()
            process = subprocess.Popen(args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{port}{PATHS[mode]}"
                while not answers(url):
                    if process.poll() is not None:
                        raise RuntimeError(f"{mode} server exited with {process.returncode}:\n"
                                           + Path(f"{scratch}/log.txt").read_text(errors="replace"))
                    if time.perf_counter() - start > TIMEOUT:
                        raise RuntimeError(f"{mode} server did not answer within {TIMEOUT} s")
                    time.sleep(0.02)
                return time.perf_counter() - start
            finally:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


def time_import(module: str, python: str) -> float:
    """Seconds for a fresh interpreter to import ``module`` (the reference cost of an eager import)."""
    start = time.perf_counter()
    subprocess.run([python, "-c", f"import {module}"], check=True, cwd=ROOT)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-root", type=Path, help="another checkout to time the same way (old path)")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)

    samples: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for mode in ("ui", "api"):
            samples.setdefault(mode, []).append(time_launch(ROOT, mode, args.python))
            if args.baseline_root:
                samples.setdefault(f"baseline {mode}", []).append(
                    time_launch(args.baseline_root.resolve(), mode, args.python))
        for module in ("torch", "gradio", "fastapi"):
            samples.setdefault(f"import {module}", []).append(time_import(module, args.python))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"median of {args.runs} runs; load average (1 min) at the end: {load:.2f}")
    for label, values in samples.items():
        median = statistics.median(values)
        line = f"{label:>16}: {median:6.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})"
        if label in TARGETS:
            line += f"  target {TARGETS[label]:.0f} s -> {median / TARGETS[label]:.2f}x the target"
            base = samples.get(f"baseline {label}")
            if base:
                line += f"; {median / statistics.median(base):.2f}x the baseline"
        print(line)


if __name__ == "__main__":
    main()
