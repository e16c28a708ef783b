"""The user's persisted defaults (data/settings.json): what a new tab starts with and what the next launch uses.

These are *defaults for forms*, never per-request switches: a request always carries its own model, sampler and
size, so changing a setting here cannot change a job that is already queued. Writes go to a temporary file in the
same folder and are renamed into place, so a crash mid-save never leaves a half-written file; a file that cannot
be read is reported and the defaults are used, because a broken settings file must not stop the studio starting.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from modules.runtime.files import atomic_write

log = logging.getLogger(__name__)

# The one table of settings: key -> (default, the type a saved value is cleaned to). The store, the Settings tab
# and the A1111 options route all read it.
SETTINGS_TABLE: Mapping[str, tuple[Any, type]] = MappingProxyType({
    "sd_model_checkpoint": (None, str),
    "sampler": ("Euler", str),
    "scheduler": ("Automatic", str),
    "steps": (20, int),
    "cfg_scale": (7.0, float),
    "width": (0, int),  # 0 = the model family's default size
    "height": (0, int),
    "batch_size": (1, int),
    "n_iter": (1, int),
    "output_format": ("png", str),
    "preview_interval": (5, int),
    "live_preview_method": ("Approximate", str),  # "Approximate" (latents mapped to RGB) or "Full" (VAE decode)
    "save_images": (True, bool),
    "make_grid": (True, bool),
    "safety": ("off", str),  # the NSFW filter of requests that leave it out (an API key's rule comes first)
})
DEFAULTS: Mapping[str, Any] = MappingProxyType({key: default for key, (default, _) in SETTINGS_TABLE.items()})
SETTING_TYPES: Mapping[str, type] = MappingProxyType({key: kind for key, (_, kind) in SETTINGS_TABLE.items()})


class SettingsStore:
    """JSON-backed key/value settings with known defaults; safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._values: dict[str, Any] = self._read()

    def get(self, key: str, default: Any = None) -> Any:
        """The saved value, else the known default, else ``default``."""
        with self._lock:
            if key in self._values:
                return copy.deepcopy(self._values[key])
        return copy.deepcopy(DEFAULTS.get(key, default))

    def has(self, key: str) -> bool:
        """Whether the user saved ``key`` (so a launch flag's value gives way only to an explicit choice)."""
        with self._lock:
            return key in self._values

    def all(self) -> dict[str, Any]:
        """Every known default overlaid with what was saved (unknown saved keys are kept, not dropped)."""
        with self._lock:
            merged = {**DEFAULTS, **self._values}
            return copy.deepcopy(merged)

    def set(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, values: Mapping[str, Any]) -> None:
        """Change several settings in one atomic write, so a reader never sees half of a save."""
        for key, value in values.items():
            _check_serialisable(key, value)
        with self._lock:
            changed = {**self._values, **values}
            self._write(changed)
            self._values = changed

    def reload(self) -> None:
        """Re-read the file (another process, or a user's editor, may have changed it)."""
        values = self._read()
        with self._lock:
            self._values = values

    # -- file --------------------------------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as error:
            log.error("cannot read settings %s (%s); using defaults", self.path, error)
            return {}
        try:
            data = json.loads(text)
        except ValueError as error:
            log.error("settings file %s is corrupt (%s); using defaults", self.path, error)
            return {}
        if not isinstance(data, dict):
            log.error("settings file %s does not hold a JSON object; using defaults", self.path)
            return {}
        return data

    def _write(self, values: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path) as file:
            json.dump(values, file, indent=2, sort_keys=True, ensure_ascii=False)
            file.write("\n")


def _check_serialisable(key: str, value: Any) -> None:
    """Reject a value JSON cannot hold before anything is written, naming the key."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"setting {key!r} cannot be saved: {error}") from None
