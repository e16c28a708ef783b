"""Each video family's own defaults (frames, fps, size, steps, CFG), decided at submission from the model.

The published models were trained at very different shapes: AnimateDiff animates 16 frames at its checkpoint's
size, SVD makes 14 (SVD-XT 25) frames at 1024x576 conditioned on fps 7, Wan 2.x 81 frames at 832x480 at 16 fps.
A motion adapter folder may say what it was made for: the ``recommended`` block of its ``training_config.json``
(``frames``, ``fps``, ``steps``, ``guidance``, ``sampler``, ``motion_end``, as Sfumato's own training scripts
write it) or a ``video_defaults.json`` (``frames``, ``fps``, ``steps``, ``cfg_scale``, ``width``, ``height``,
``sampler``, ``motion_end``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from modules.video.registry import VideoModel

DEFAULTS_FILE = "video_defaults.json"


@dataclass(frozen=True)
class VideoDefaults:
    frames: int
    fps: int
    steps: int
    cfg_scale: float
    width: int
    height: int
    sampler: str | None = None  # AnimateDiff only; None = the checkpoint's own scheduler
    motion_end: float = 1.0  # AnimateDiff only: the fraction of the steps the motion adapter acts in


ANIMATEDIFF = VideoDefaults(frames=16, fps=8, steps=25, cfg_scale=7.5, width=512, height=512)
SVD = VideoDefaults(frames=14, fps=7, steps=25, cfg_scale=3.0, width=1024, height=576)
WAN = VideoDefaults(frames=81, fps=16, steps=50, cfg_scale=5.0, width=832, height=480)
SVD_DECODE_CHUNK = 8  # frames decoded at once: the published demo's value, a middle way between memory and speed


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def model_defaults(model: VideoModel, checkpoint_size: int | None = None) -> VideoDefaults:
    """The defaults of ``model``; ``checkpoint_size`` is the image side of the checkpoint a motion adapter runs on
    (AnimateDiff animates at the size its image model was trained at)."""
    if model.family == "svd":
        unet = _read_json(model.path / "unet" / "config.json")
        frames = int(unet.get("num_frames") or SVD.frames)  # SVD 14, SVD-XT 25
        return dataclasses.replace(SVD, frames=frames)
    if model.family == "wan":
        return WAN
    side = checkpoint_size or ANIMATEDIFF.width
    chosen = dataclasses.replace(ANIMATEDIFF, width=side, height=side)
    if model.path.is_dir():
        return adapter_folder_defaults(model.path, chosen)
    return _with_overrides(chosen, _read_json(model.path.with_suffix(".json")))


def adapter_folder_defaults(folder: Path, chosen: VideoDefaults = ANIMATEDIFF) -> VideoDefaults:
    """``chosen`` with what a motion adapter folder recommends (its training record's ``recommended`` block, then
    its ``video_defaults.json``); values that make no sense are ignored."""
    recommended = _read_json(folder / "training_config.json").get("recommended")
    overrides = dict(recommended) if isinstance(recommended, dict) else {}
    if "guidance" in overrides:
        overrides["cfg_scale"] = overrides.pop("guidance")
    overrides.update(_read_json(folder / DEFAULTS_FILE))
    return _with_overrides(chosen, overrides)


def _with_overrides(chosen: VideoDefaults, overrides: dict) -> VideoDefaults:
    values: dict = {}
    for key, value in overrides.items():
        if key == "sampler" and isinstance(value, str) and value.strip():
            values[key] = value.strip()
        elif key in ("frames", "fps", "steps", "cfg_scale", "width", "height") and isinstance(value, (int, float)) \
                and not isinstance(value, bool) and value > 0:
            values[key] = float(value) if key == "cfg_scale" else int(value)
        elif key == "motion_end" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and 0.0 < value <= 1.0:
            values[key] = float(value)
    return dataclasses.replace(chosen, **values)
