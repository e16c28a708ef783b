"""The weights behind the model-based ControlNet preprocessors: Hugging Face depth models that users put, as folders,
under ``models/ControlNet/annotators/``, loaded with ``transformers`` and never downloaded.

Why folders and ``transformers``: the extension's own annotator files (``dpt_hybrid-midas-501f0c75.pt``,
``depth_anything_vitl14.pth``, ``ZoeD_M12_N.pt``) are state dicts for model code the extension vendors;
``transformers`` ships maintained DPT, Depth Anything and ZoeDepth implementations that read the Hugging Face
conversions of the same weights (``Intel/dpt-hybrid-midas``, ``LiheYoung/depth-anything-small-hf``,
``Intel/zoedepth-nyu``...), so a user copies such a folder
(``config.json``, ``preprocessor_config.json``, the weights) and nothing else is needed.

Loaded models are kept in a small LRU, keyed by the folder and the newest mtime of its files (a replaced model is
reloaded), filled on first use, never at import. They run on the CPU unless a device is handed in: a depth estimate
of a 512 px image with a small DPT or Depth Anything takes about a second there.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from modules.errors import RequestError

CACHE_SIZE = 2  # depth models kept loaded: enough for depth and normal (one model) plus one other
NORMAL_Z = 2 * np.pi  # the z of a normal before normalising: how flat a small depth gradient looks (the extension's)

_cache: OrderedDict[tuple[str, float, str], tuple[Any, Any]] = OrderedDict()
_lock = threading.Lock()


def has_model(folder: Path) -> bool:
    """Whether ``folder`` looks like a Hugging Face model folder (what ``from_pretrained`` reads first)."""
    return (folder / "config.json").is_file()


def _stamp(folder: Path) -> float:
    """The newest mtime of the folder and the files in it: it changes when a user replaces the model."""
    times = [folder.stat().st_mtime]
    times += [entry.stat().st_mtime for entry in folder.iterdir() if entry.is_file()]
    return max(times)


def load_depth_model(folder: Path, device: str = "cpu") -> tuple[Any, Any]:
    """The (model, image processor) of the depth model in ``folder``, loaded once and kept while recently used.
    ``RequestError`` naming ``module`` when the folder cannot be read as a depth model."""
    folder = Path(folder)
    try:
        key = (str(folder.resolve()), _stamp(folder), device)
    except OSError as error:  # removed between finding it and loading it
        raise RequestError("module", f"the depth model in {shown_path(folder)} cannot be read: {error}") from None
    with _lock:  # one load at a time: two requests for the same model must not load it twice
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
        for stale in [cached for cached in _cache if cached[0] == key[0] and cached[2] == device]:
            del _cache[stale]  # an older version of the same folder
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        try:
            model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True)
            processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RequestError("module", f"the depth model in {shown_path(folder)} cannot be loaded: "
                                         f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
                               ) from None
        model = model.to(device).eval()
        _cache[key] = (model, processor)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return model, processor


def clear_cache() -> None:
    """Forget the loaded models (their memory is freed once no run holds them)."""
    with _lock:
        _cache.clear()


def shown_path(folder: Path) -> str:
    """``folder`` as a user knows it: from ``models/`` on when it is under a models folder."""
    parts = Path(folder).parts
    if "ControlNet" in parts:
        index = len(parts) - 1 - parts[::-1].index("ControlNet")
        return "/".join(("models", *parts[index:])) + "/"
    return f"{folder}/"


def estimate_depth(pixels: np.ndarray, folder: Path, device: str = "cpu") -> np.ndarray:
    """The depth model's estimate for an RGB uint8 array, float32 at the array's own size: relative inverse depth
    (larger is nearer) from DPT and Depth Anything, metric depth (larger is farther) from ZoeDepth. The model sees
    the image at its own input size (its image processor's resize) and its estimate is resized back bicubically
    (ZoeDepth's processor, which pads the image, also removes the padding)."""
    import torch
    from PIL import Image

    model, processor = load_depth_model(folder, device)
    height, width = pixels.shape[:2]
    inputs = processor(images=Image.fromarray(pixels), return_tensors="pt")
    with torch.inference_mode():
        outputs = model(pixel_values=inputs["pixel_values"].to(device))
        if getattr(model.config, "model_type", "") == "zoedepth":
            predicted = processor.post_process_depth_estimation(outputs, source_sizes=[(height, width)],
                                                                target_sizes=[(height, width)])[0]["predicted_depth"]
        else:
            predicted = torch.nn.functional.interpolate(outputs.predicted_depth[:, None].float(), size=(height, width),
                                                        mode="bicubic", align_corners=False)[0, 0]
    return predicted.float().cpu().numpy().astype(np.float32)


def relative(depth: np.ndarray) -> np.ndarray:
    """``depth`` stretched to [0, 1] (0 the farthest, 1 the nearest); all zeros for a flat estimate."""
    low, high = float(depth.min()), float(depth.max())
    if not high > low:
        return np.zeros_like(depth, dtype=np.float32)
    return ((depth - low) / (high - low)).astype(np.float32)


def depth_image(depth: np.ndarray) -> np.ndarray:
    """The extension's depth control image: near white, far black, 8-bit grey."""
    return np.round(relative(depth) * 255.0).clip(0, 255).astype(np.uint8)


def metric_depth_image(depth: np.ndarray) -> np.ndarray:
    """The extension's ``depth_zoe`` image from metric depth: stretched between its 2nd and 85th percentiles and
    inverted, so near is white and the far background saturates to black."""
    near, far = float(np.percentile(depth, 2)), float(np.percentile(depth, 85))
    if not far > near:
        return np.zeros(depth.shape, dtype=np.uint8)
    return np.round((1.0 - (depth - near) / (far - near)) * 255.0).clip(0, 255).astype(np.uint8)


def normal_image(depth: np.ndarray, background_threshold: float, z: float = NORMAL_Z) -> np.ndarray:
    """The extension's ``normal_midas`` image: a normal per pixel from the depth's Sobel gradients (x, y) and a
    constant ``z``, flat (pointing at the viewer) where the relative depth is below ``background_threshold``,
    encoded as RGB = (normal + 1) * 127.5."""
    import cv2

    depth = depth.astype(np.float32)
    x = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    y = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    background = relative(depth) < background_threshold
    x[background] = 0
    y[background] = 0
    normal = np.stack([x, y, np.full_like(x, z)], axis=2)
    normal /= np.sqrt(np.sum(normal ** 2, axis=2, keepdims=True))
    return (normal * 127.5 + 127.5).clip(0, 255).astype(np.uint8)
