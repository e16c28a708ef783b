"""Run ``launch.py`` as a real server process for end-to-end tests: free port, readiness wait, output on failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tools.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 300.0  # imports and the first model load are slow on a busy CI machine


class ServerProcess:
    """``python launch.py --skip-install ...`` with its output in a log file (a pipe could fill and block it)."""

    def __init__(self, args: list[str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.args = [sys.executable, str(ROOT / "launch.py"), "--skip-install", "--port", str(self.port), *args]
        self.process: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", GRADIO_ANALYTICS_ENABLED="False")
        with open(self.log_path, "ab") as log:
            # A shell's background job (CI scripts, `cmd &`) ignores SIGINT and children inherit that, which would
            # make Ctrl-C in these tests do nothing: the server gets the default disposition a terminal gives it.
            self.process = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=_default_sigint)
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, path: str = "/docs", timeout: float = START_TIMEOUT, printed: str = "") -> None:
        """Until ``path`` answers 200 and the output shows ``printed``; an early exit or a timeout fails with the
        server's output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                output = self.output()
                ours = f":{self.port}" in output  # the server that answers is this one, not a stranger
                if httpx.get(self.url + path, timeout=5).status_code == 200 and ours and printed in output:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.output()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout)

    def interrupt(self) -> int:
        """Ctrl-C, as a user stops it; the exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.wait_exit()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut or the OOM killer."""
        self.process.kill()
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
