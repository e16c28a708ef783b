"""Which video models a user has: AnimateDiff motion adapters, and Stable Video Diffusion / Wan folders.

Motion adapters live in ``models/animatediff/`` (or A1111's ``models/AnimateDiff/``), as diffusers
``MotionAdapter`` folders or single ``.safetensors`` / ``.ckpt`` motion modules; they animate an image checkpoint
from the checkpoint registry. SVD / SVD-XT and Wan 2.x pipelines are diffusers folders under ``models/video/``,
told apart by their ``model_index.json``. Listing reads file names and small JSON configs only, so it is redone on
every call (users drop models in while the studio runs).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modules.errors import RequestError

MOTION_DIRS: tuple[str, ...] = ("animatediff", "AnimateDiff")
VIDEO_DIR = "video"
MOTION_SUFFIXES: tuple[str, ...] = (".safetensors", ".ckpt")
# The motion model Sfumato ships for its embedded image model: the default when it is installed.
EMBEDDED_MOTION = "sfumato-shapes-motion"

Family = Literal["animatediff", "svd", "wan"]
FAMILY_LABELS = {"animatediff": "AnimateDiff", "svd": "Stable Video Diffusion", "wan": "Wan 2.x"}
_PIPELINES: dict[str, tuple[Family, str]] = {
    "StableVideoDiffusionPipeline": ("svd", "img2vid"),
    "WanPipeline": ("wan", "txt2vid"),
    "WanImageToVideoPipeline": ("wan", "img2vid"),
}
# The UNet channels of the image families a motion adapter is made for (diffusers folders say so themselves).
_FAMILY_CHANNELS = {"sd1": (320, 640, 1280, 1280), "sd2": (320, 640, 1280, 1280), "sdxl": (320, 640, 1280)}


@dataclass(frozen=True)
class VideoModel:
    """One choice in the video model list.

    ``family`` decides the pipeline; ``modes`` what it makes (``txt2vid``, ``img2vid``, ``vid2vid``). A motion
    adapter's ``channels`` are the UNet block widths it fits (None when a single file does not say cheaply); it
    only runs on a checkpoint with the same widths.
    """

    name: str
    path: Path
    family: Family
    modes: tuple[str, ...]
    kind: Literal["diffusers", "safetensors", "ckpt"] = "diffusers"
    channels: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({FAMILY_LABELS[self.family]})"

    @property
    def is_motion_adapter(self) -> bool:
        return self.family == "animatediff"

    @property
    def base(self) -> str | None:
        """The image family a motion adapter is for ("sd1", "sdxl"), from its widths; None when unknown."""
        if self.channels is None:
            return None
        if tuple(self.channels) == _FAMILY_CHANNELS["sdxl"]:
            return "sdxl"
        return "sd1" if tuple(self.channels) == _FAMILY_CHANNELS["sd1"] else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def motion_config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> dict:
    """A diffusers ``MotionAdapter`` config for a single motion-module file in AnimateDiff's original layout
    (``down_blocks.N.motion_modules.M.temporal_transformer...``), read from its tensor names and shapes: diffusers
    would otherwise fetch one from the Hub. Head count and norm groups are not in the shapes; AnimateDiff's own
    (8 heads, 32 groups) are assumed, as every published motion module uses them."""
    import re

    widths: dict[int, int] = {}
    layers: set[int] = set()
    mid: set[int] = set()
    blocks: set[int] = set()
    longest = 32
    for key, shape in shapes.items():
        found = re.match(r"down_blocks\.(\d+)\.motion_modules\.(\d+)\.(?:temporal_transformer\.)?(.*)$", key)
        if found:
            block, module, rest = int(found.group(1)), int(found.group(2)), found.group(3)
            if rest == "norm.weight" and len(shape) == 1:
                widths[block] = int(shape[0])
            if block == 0:
                layers.add(module)
                inner = re.match(r"transformer_blocks\.(\d+)\.", rest)
                if module == 0 and inner:
                    blocks.add(int(inner.group(1)))
        elif key.startswith("mid_block.motion_modules."):
            mid.add(int(key.split(".")[2]))
        if key.endswith("pos_encoder.pe") and len(shape) == 3:
            longest = int(shape[1])
    if not widths:
        raise ValueError("no AnimateDiff motion modules in this file")
    return {"_class_name": "MotionAdapter", "block_out_channels": [widths[i] for i in sorted(widths)],
            "motion_layers_per_block": max(1, len(layers)), "motion_transformer_layers_per_block": max(1, len(blocks)),
            "motion_mid_block_layers_per_block": max(1, len(mid)), "use_motion_mid_block": bool(mid),
            "motion_num_attention_heads": 8, "motion_norm_num_groups": 32, "motion_max_seq_length": longest,
            "conv_in_channels": None}


def motion_file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a motion-module file (a safetensors header, or a weights-only pickle)."""
    if path.suffix.lower() == ".safetensors":
        from modules.models.registry import read_safetensors_shapes

        return read_safetensors_shapes(path)
    from modules.models.checkpoints import load_ckpt_state_dict

    return {key: tuple(value.shape) for key, value in load_ckpt_state_dict(path).items() if hasattr(value, "shape")}


def _motion_file_channels(path: Path) -> tuple[int, ...] | None:
    """The block widths of a single-file motion module from its safetensors header; None for a pickle (not opened
    just to list it) or a file that is not a motion module."""
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        return tuple(motion_config_from_shapes(motion_file_shapes(path))["block_out_channels"])
    except (OSError, ValueError):
        return None


def unet_channels(checkpoint_path: Path, family: str | None) -> tuple[int, ...] | None:
    """The UNet block widths of an image checkpoint: a diffusers folder's config, else its family's widths."""
    config = _read_json(Path(checkpoint_path) / "unet" / "config.json")
    if config.get("block_out_channels"):
        return tuple(int(width) for width in config["block_out_channels"])
    return _FAMILY_CHANNELS.get(family or "")


class VideoModelRegistry:
    """The video models a models folder offers: motion adapters first (the embedded one leading), then the
    SVD and Wan folders, each group by name."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    @property
    def motion_roots(self) -> list[Path]:
        return [self.models_dir / name for name in MOTION_DIRS]

    @property
    def video_root(self) -> Path:
        return self.models_dir / VIDEO_DIR

    def list(self) -> list[VideoModel]:
        adapters = sorted(self._motion_adapters(), key=lambda m: (m.name != EMBEDDED_MOTION, m.name.lower()))
        pipelines = sorted(self._video_folders(), key=lambda m: m.name.lower())
        return adapters + pipelines

    def _motion_adapters(self) -> list[VideoModel]:
        found: dict[str, VideoModel] = {}
        for root in self.motion_roots:
            if not root.is_dir():
                continue
            for folder, dirnames, filenames in os.walk(root, followlinks=True):
                here = Path(folder)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                config = _read_json(here / "config.json")
                if here != root and config.get("_class_name") == "MotionAdapter":
                    dirnames[:] = []
                    real = os.path.realpath(here)
                    channels = tuple(int(w) for w in config.get("block_out_channels") or ()) or None
                    found.setdefault(real, VideoModel(here.relative_to(root).as_posix(), here, "animatediff",
                                                      ("txt2vid", "vid2vid"), "diffusers", channels))
                    continue
                for filename in sorted(filenames):
                    path = here / filename
                    if filename.startswith(".") or not filename.lower().endswith(MOTION_SUFFIXES):
                        continue
                    real = os.path.realpath(path)
                    kind = "safetensors" if filename.lower().endswith(".safetensors") else "ckpt"
                    name = path.relative_to(root).as_posix().rsplit(".", 1)[0]
                    found.setdefault(real, VideoModel(name, path, "animatediff", ("txt2vid", "vid2vid"), kind,
                                                      _motion_file_channels(path)))
        return list(found.values())

    def _video_folders(self) -> list[VideoModel]:
        root = self.video_root
        found: list[VideoModel] = []
        if not root.is_dir():
            return found
        for folder, dirnames, _filenames in os.walk(root, followlinks=True):
            here = Path(folder)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            index = _read_json(here / "model_index.json")
            if not index:
                continue
            dirnames[:] = []
            family_mode = _PIPELINES.get(str(index.get("_class_name", "")))
            if family_mode is not None:
                family, mode = family_mode
                found.append(VideoModel(here.relative_to(root).as_posix(), here, family, (mode,)))
        return found

    def find(self, query: str, field: str = "model") -> VideoModel:
        """A model by name, name with its extension, or label; a RequestError naming ``field`` listing the choices."""
        wanted = query.strip().replace("\\", "/")
        models = self.list()
        for check in (lambda m: m.name == wanted or m.label == wanted,
                      lambda m: m.path.name == wanted,
                      lambda m: m.name.lower() == wanted.lower() or m.name.rsplit("/", 1)[-1] == wanted):
            matches = [m for m in models if check(m)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise RequestError(field, f"{query!r} is ambiguous: it matches "
                                          + ", ".join(m.name for m in matches))
        available = ", ".join(m.label for m in models) or (
            f"none (put motion adapters in {self.motion_roots[0]}, SVD or Wan folders in {self.video_root})")
        raise RequestError(field, f"no video model {query!r}; available: {available}")
