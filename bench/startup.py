"""Seconds from ``python launch.py`` to the studio answering, against issue 18's targets (UI 2 s, API 1 s), with
reference costs measured in the same run. Three figures:

- ``ui first answer``: the page's address (``/``, asked as a browser asks) gives its first HTTP answer, whatever it
  is: the self-reloading "Sfumato is starting…" page (503) while the studio's page is being built, or the studio;
- ``ui full studio``: ``/`` serves the studio's Gradio page (200);
- ``api``: ``/api/v1/system`` answers 200 with ``--nowebui``.

Each run starts a fresh process on a free port with the embedded model folder and throw-away data and output
folders, polls every 20 ms, and stops the server. Runs are interleaved (UI, API, [baseline UI, baseline API],
references) so a busy machine slows all of them alike; medians are printed. ``--baseline-root`` times another
checkout (e.g. the main branch before the change) in the same run.

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

TARGETS = {"ui first answer": 2.0, "ui full studio": 2.0, "api": 1.0}
PATHS = {"ui": "/", "api": "/api/v1/system"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
TIMEOUT = 120.0


def status(url: str) -> int | None:
    """The HTTP status ``url`` answers with (errors included), or None while nothing answers."""
    request = urllib.request.Request(url, headers=BROWSER)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def time_launch(root: Path, mode: str, python: str) -> dict[str, float]:
    """Seconds from spawning ``launch.py`` in ``root`` until ``PATHS[mode]`` first answers (``first``) and until it
    answers 200 (``full``)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sfumato-startup-") as scratch:
        args = [python, str(root / "launch.py"), "--skip-install", "--port", str(port),
                "--models-dir", str(root / "models"), "--data-dir", f"{scratch}/data", "--outdir", f"{scratch}/out"]
        if mode == "api":
            args.append("--nowebui")
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(root))
        with open(f"{scratch}/log.txt", "wb") as log:
            start = time.perf_counter()
            process = subprocess.Popen(args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{port}{PATHS[mode]}"
                seen: dict[str, float] = {}
                while "full" not in seen:
                    answer = status(url)
                    now = time.perf_counter() - start
                    if answer is not None:
                        seen.setdefault("first", now)
                        if answer == 200:
                            seen["full"] = now
                            break
                    if process.poll() is not None:
                        raise RuntimeError(f"{mode} server exited with {process.returncode}:\n"
                                           + Path(f"{scratch}/log.txt").read_text(errors="replace"))
                    if now > TIMEOUT:
                        raise RuntimeError(f"{mode} server did not answer within {TIMEOUT} s")
                    time.sleep(0.02)
                return seen
            finally:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


# Reference costs: a fresh interpreter running each line (what an eager import costs; the studio imports Gradio
# without the stub files Gradio rewrites on every import, app/gradio_import.py).
REFERENCES = {
    "import torch": "import torch",
    "import gradio": "import gradio",
    "import gradio (studio)": "from app.gradio_import import import_gradio; import_gradio()",
    "import fastapi": "import fastapi",
}


def time_import(code: str, python: str) -> float:
    """Seconds for a fresh interpreter to run ``code`` (an import)."""
    start = time.perf_counter()
    subprocess.run([python, "-c", code], check=True, cwd=ROOT)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-root", type=Path, help="another checkout to time the same way (old path)")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)

    samples: dict[str, list[float]] = {}
    load_before = _load()

    failures: dict[str, int] = {}

    def record(prefix: str, mode: str, root: Path) -> None:
        try:
            seen = time_launch(root, mode, args.python)
        except RuntimeError as error:  # counted and shown, not hidden in a median
            failures[f"{prefix}{mode}"] = failures.get(f"{prefix}{mode}", 0) + 1
            print(f"{prefix}{mode} run failed: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
            return
        if mode == "api":
            samples.setdefault(f"{prefix}api", []).append(seen["full"])
        else:
            samples.setdefault(f"{prefix}ui first answer", []).append(seen["first"])
            samples.setdefault(f"{prefix}ui full studio", []).append(seen["full"])

    for _ in range(args.runs):
        for mode in ("ui", "api"):
            record("", mode, ROOT)
            if args.baseline_root:
                record("baseline ", mode, args.baseline_root.resolve())
        for label, code in REFERENCES.items():
            samples.setdefault(label, []).append(time_import(code, args.python))

    print(f"median of {args.runs} runs; load average (1 min) at the start {load_before:.2f}, at the end {_load():.2f} "
          f"({os.cpu_count()} CPUs)")
    for label, values in samples.items():
        median = statistics.median(values)
        line = f"{label:>24}: {median:6.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})"
        if label in TARGETS:
            line += f"  target {TARGETS[label]:.0f} s -> {median / TARGETS[label]:.2f}x the target"
            base = samples.get(f"baseline {label}")
            if base:
                line += f"; {median / statistics.median(base):.2f}x the baseline"
        print(line)
    for label, count in failures.items():
        print(f"{label:>24}: {count} of {args.runs} runs failed (see above)")


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


if __name__ == "__main__":
    main()
