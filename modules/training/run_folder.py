"""A run's own folder: its configuration, its checkpoints, its samples, loss curve and TensorBoard events.

``<data>/training/<output name>/``: ``config.json`` is the request (the file that reproduces the run),
``checkpoints/checkpoint-<step>.pt`` the full training state every N steps (written atomically, the oldest
removed past the limit), ``samples/``, ``loss.png``, ``tensorboard/``. A run resumes from the newest checkpoint
only when ``config.json`` says it is the same run; a changed configuration starts afresh.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.runtime.files import atomic_write

CHECKPOINT = re.compile(r"^checkpoint-(\d+)\.pt$")
# what does not change the weights a run reaches, so a run asked again with other values of these still resumes
NOT_IDENTITY = ("resume", "checkpoint_every", "checkpoint_limit", "sample_every", "sample_prompts", "sample_steps",
                "tensorboard")
# fields added after runs were already written, at their defaults: an older config.json without them is the same run
ADDED_DEFAULTS = {"train_token_embedding": False, "embedding_learning_rate": 5e-3, "token_init_text": "",
                  "class_data_dir": None, "prior_target": "images"}


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    @property
    def loss_curve(self) -> Path:
        return self.path / "loss.png"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    def read_config(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_config(self, config: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.config_file) as file:
            json.dump(config, file, indent=2, sort_keys=True)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every complete checkpoint, oldest first (a half-written one has a temporary name)."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [(int(match.group(1)), entry) for entry in self.checkpoints_dir.iterdir()
                 if (match := CHECKPOINT.match(entry.name))]
        return sorted(found)

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints_dir / f"checkpoint-{step:07d}.pt"

    def prune(self, limit: int) -> None:
        """Keep the newest ``limit`` checkpoints (0: all)."""
        if limit <= 0:
            return
        for _step, path in self.checkpoints()[:-limit]:
            path.unlink(missing_ok=True)

    def start_afresh(self) -> None:
        """Forget an earlier run of this name: its checkpoints, samples, curve and events."""
        for folder in (self.checkpoints_dir, self.samples_dir, self.tensorboard_dir):
            shutil.rmtree(folder, ignore_errors=True)
        self.loss_curve.unlink(missing_ok=True)


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a run's configuration that decides its weights."""
    return {key: value for key, value in {**ADDED_DEFAULTS, **config}.items() if key not in NOT_IDENTITY}
