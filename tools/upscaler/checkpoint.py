"""The training checkpoint: what a killed run needs to carry on as if it had never stopped.

It holds the step reached, the weights, the optimiser's moments, the seconds spent so far and the recipe it was
made with (a checkpoint of another recipe is refused rather than silently mixed in). The batches need no state:
they are drawn from (seed, step). Writes go to a temporary file renamed over the old one, so a kill in the middle
of a write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    torch.save(payload, staging)
    os.replace(staging, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def differing_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of the recipe settings that differ between a checkpoint and this run (JSON-normalised)."""
    saved = json.loads(json.dumps(saved))
    current = json.loads(json.dumps(current))
    return sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
