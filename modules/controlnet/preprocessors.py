"""ControlNet preprocessors: turn a user's picture into the control image a ControlNet model reads.

Names, labels, slider ranges and defaults follow the sd-webui-controlnet extension, so a client that sends
``"module": "canny"`` (or the extension's UI label, such as ``"invert (from white bg & black line)"``) gets the
same kind of control image here. The preprocessors that need no weights run everywhere (OpenCV and NumPy). The
depth ones (``depth_midas``, ``depth_anything``, ``depth_anything_v2``, ``depth_zoe``) and ``normal_midas`` run
when their Hugging Face model folder is under ``models/ControlNet/annotators/`` (``DepthModel``; loaded with
``transformers`` by ``modules.controlnet.annotators``, never downloaded). The other model-based ones (pose, HED,
``normal_bae``...) are listed so a client sees the whole vocabulary, and asking for one says exactly which annotator
file it would need.

Conventions shared by every preprocessor, as in the extension:

- the input is flattened to RGB, a transparent area composited over white (line drawings often come as
  transparent PNGs, and "white background, black line" is what the line preprocessors expect);
- where a preprocessor uses the resolution, the image is first resized so its shorter side is ``resolution``
  (``processor_res``), and the control image has that size; ``none``, ``invert`` and ``tile_resample`` keep the
  input's size (the extension hides their resolution slider);
- a threshold below 0 (the extension's ``-1``) means the preprocessor's default; other values are clamped to the
  slider's range, because the extension passes them on unchecked and clients send out-of-range values (``webuiapi``
  sends 64 for both thresholds whatever the module), while an unbounded one (a blur sigma of 1e9) would make the
  work unbounded;
- line preprocessors answer white lines on black, the form the ControlNet line models were trained on;
- depth preprocessors answer near white, far black (8-bit grey as RGB), at the working size.

Aliases: a name is matched case-insensitively against the module names and the extension's UI labels. Legacy
names of the extension are accepted too (``LEGACY_ALIASES``): ``scribble`` is the extension's early preprocessor
that turned a black-on-white drawing into white strokes on black, which is what ``invert`` does today (XDoG finds
edges of photographs and would draw both sides of every stroke of a drawing), and ``fake_scribble`` was the old
name of ``scribble_hed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from modules.errors import RequestError

ANNOTATOR_FOLDER = "ControlNet/annotators"  # under the models folder: where model-based preprocessors' weights go
DEFAULT_RESOLUTION = 512
MIN_RESOLUTION = 64  # the range a client may ask for (processor_res), as the extension's slider
MAX_RESOLUTION = 2048
# Pixel-perfect units preprocess at the generation's own size, which may be smaller than MIN_RESOLUTION.
MIN_WORKING_RESOLUTION = 8
# The control image of one preprocessor call may not exceed this (a very long panorama at 2048 on its short side).
MAX_OUTPUT_PIXELS = 4096 * 4096


class PreprocessorNeedsModel(RequestError):
    """A known preprocessor whose annotator weights are not here, or that this studio cannot run; ``missing`` lists
    the files (or, for a depth model, the folder) under ``models/`` it looks for (empty when they are there but
    running them is not supported yet)."""

    def __init__(self, field_name: str, message: str, missing: tuple[str, ...]) -> None:
        super().__init__(field_name, message)
        self.missing = missing


@dataclass(frozen=True)
class Slider:
    """One parameter's control: the label, range, step and default the extension's UI and API describe."""

    label: str
    minimum: float
    maximum: float
    default: float
    step: float = 1.0

    def value(self, given: float | None) -> float:
        """The value to use: the default for a missing, negative or NaN one, else ``given`` clamped to the range."""
        if given is None or math.isnan(given) or given < 0:
            return self.default
        return min(max(float(given), self.minimum), self.maximum)

    def wire(self) -> dict[str, float | str]:
        """The extension's ``module_detail`` slider shape."""
        return {"name": self.label, "value": self.default, "min": self.minimum, "max": self.maximum,
                "step": self.step}


RESOLUTION_SLIDER = Slider("Resolution", MIN_RESOLUTION, MAX_RESOLUTION, DEFAULT_RESOLUTION, 8)

# The work of one preprocessor on an RGB uint8 array already at its working size: (pixels, a, b, seed) -> pixels.
Algorithm = Callable[[np.ndarray, float, float, int], np.ndarray]
# The same for one that reads a model: (pixels, a, b, the model's folder) -> pixels.
ModelAlgorithm = Callable[[np.ndarray, float, float, Path], np.ndarray]


@dataclass(frozen=True)
class DepthModel:
    """Where a model-based preprocessor finds its weights: Hugging Face model folders under
    ``models/ControlNet/annotators/`` (the first one present is used), the repository the first comes from, and
    the extension's own single file for the same model, which ``transformers`` cannot read (named in the error so
    a user who copied it knows to put the folder instead)."""

    folders: tuple[str, ...]
    source: str  # the Hugging Face repository to copy into the first folder
    extension_file: str

    def find(self, models_dir: Path | None) -> Path | None:
        """The folder to load from, or None when none is there."""
        if models_dir is None:
            return None
        from modules.controlnet.annotators import has_model

        root = Path(models_dir) / ANNOTATOR_FOLDER
        return next((root / name for name in self.folders if has_model(root / name)), None)

    def shown_folders(self) -> tuple[str, ...]:
        """The folders as paths under the models folder, with the trailing slash that says "a folder"."""
        return tuple(f"models/{ANNOTATOR_FOLDER}/{name}/" for name in self.folders)


@dataclass(frozen=True)
class Preprocessor:
    """One entry of the vocabulary: its names, its parameters as data, and its algorithm or the files it needs."""

    name: str  # the extension's module name (what ``module_list`` answers)
    label: str  # the extension's UI name (``module_list?alias_names=true``)
    algorithm: Algorithm | None = None  # None: needs a model (``model`` or ``needs``)
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    uses_resolution: bool = True  # False: the control image keeps the input's size
    needs: tuple[str, ...] = ()  # annotator files this studio cannot run yet, relative to models/ControlNet/annotators
    model: DepthModel | None = None  # the folders a model-based one that runs here loads
    model_algorithm: ModelAlgorithm | None = None

    @property
    def model_free(self) -> bool:
        """Whether it runs with no model file at all (everywhere)."""
        return self.algorithm is not None

    def available_in(self, models_dir: Path | None) -> bool:
        """Whether it runs in this studio with the models under ``models_dir``."""
        return self.model_free or (self.model_algorithm is not None and self.model_folder(models_dir) is not None)

    def model_folder(self, models_dir: Path | None) -> Path | None:
        """The model folder it would load from, if one is there."""
        return self.model.find(models_dir) if self.model is not None else None

    def required_files(self) -> tuple[str, ...]:
        """What it needs, as paths under the models folder (``models/ControlNet/annotators/...``): the files, or
        the first of the model folders it accepts."""
        if self.model is not None:
            return self.model.shown_folders()[:1]
        return tuple(f"models/{ANNOTATOR_FOLDER}/{name}" for name in self.needs)

    def sliders(self) -> list[Slider]:
        """The controls a client shows, in the extension's order: resolution (when used), threshold a, b."""
        found = [RESOLUTION_SLIDER] if self.uses_resolution else []
        return found + [slider for slider in (self.threshold_a, self.threshold_b) if slider is not None]

    def run(self, image: Image.Image, resolution: int = DEFAULT_RESOLUTION, threshold_a: float = -1,
            threshold_b: float = -1, seed: int = 0, models_dir: Path | None = None) -> Image.Image:
        """The control image (RGB) for ``image``; ``seed`` only matters to ``shuffle``. ``RequestError`` naming
        ``processor_res`` for a resolution out of range, ``PreprocessorNeedsModel`` for a model-based one whose
        model is not under ``models_dir``."""
        folder = self.model_folder(models_dir)
        if self.algorithm is None and (self.model_algorithm is None or folder is None):
            raise self.needs_model_error("module", models_dir)
        pixels = rgb_array(image)
        if self.uses_resolution:
            pixels = resize_short_side(pixels, resolution)
        a = self.threshold_a.value(threshold_a) if self.threshold_a else 0.0
        b = self.threshold_b.value(threshold_b) if self.threshold_b else 0.0
        if self.algorithm is not None:
            result = self.algorithm(pixels, a, b, seed)
        else:
            assert self.model_algorithm is not None and folder is not None
            result = self.model_algorithm(pixels, a, b, folder)
        if result.ndim == 2:
            result = np.repeat(result[:, :, None], 3, axis=2)
        return Image.fromarray(np.ascontiguousarray(result, dtype=np.uint8), "RGB")

    def needs_model_error(self, field_name: str, models_dir: Path | None = None) -> PreprocessorNeedsModel:
        """The error for asking to run a model-based preprocessor, naming the files that are missing."""
        if self.model is not None:
            return self._missing_folder_error(field_name, models_dir)
        missing = tuple(shown for shown, name in zip(self.required_files(), self.needs, strict=True)
                        if models_dir is None or not (Path(models_dir) / ANNOTATOR_FOLDER / name).is_file())
        shown_name = self._shown_name()
        if missing:
            message = (f"preprocessor {shown_name} needs a model this studio does not have: "
                       f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
        else:
            message = (f"preprocessor {shown_name} needs a model ({', '.join(self.required_files())}); the file is "
                       "there but this version of Sfumato cannot run it yet: use a model-free preprocessor or "
                       "send a ready control image with module 'none'")
        return PreprocessorNeedsModel(field_name, message, missing)

    def _missing_folder_error(self, field_name: str, models_dir: Path | None) -> PreprocessorNeedsModel:
        """Which folder to put, where to get it, and, when the extension's own file is there, that it is not read."""
        assert self.model is not None
        first, *others = self.model.shown_folders()
        alternatives = f" (or {', '.join(name + '/' for name in self.model.folders[1:])})" if others else ""
        message = (f"preprocessor {self._shown_name()} needs a depth model this studio does not have: {first} is "
                   f"missing{alternatives}. Put there the Hugging Face folder of {self.model.source} (config.json, "
                   "preprocessor_config.json and the weights)")
        single = f"models/{ANNOTATOR_FOLDER}/{self.model.extension_file}"
        if models_dir is not None and (Path(models_dir) / ANNOTATOR_FOLDER / self.model.extension_file).is_file():
            message += f"; {single} is the extension's own file, which this studio cannot read: put the folder instead"
        return PreprocessorNeedsModel(field_name, message, (first,))

    def _shown_name(self) -> str:
        return repr(self.name) if self.label == self.name else f"{self.name!r} ({self.label})"


# -- image handling ------------------------------------------------------------------------------------------------


def rgb_array(image: Image.Image) -> np.ndarray:
    """``image`` as an RGB uint8 array; transparency composited over white, as the extension does."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        return (rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).round().clip(0, 255).astype(np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def working_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(width, height) with the shorter side at ``resolution``, the aspect kept (the extension's rounding)."""
    scale = resolution / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_resolution(resolution: int, width: int, height: int, field_name: str = "processor_res",
                     minimum: int = MIN_WORKING_RESOLUTION) -> None:
    """Refuse a resolution out of range, or one that would make the control image larger than the limit. Front
    ends that take ``processor_res`` from a client check it against ``MIN_RESOLUTION`` themselves; the working
    minimum is lower so a pixel-perfect unit of a small generation works."""
    if not (minimum <= resolution <= MAX_RESOLUTION):
        raise RequestError(field_name, f"must be between {minimum} and {MAX_RESOLUTION}, got {resolution}")
    out_w, out_h = working_size(width, height, resolution)
    if out_w * out_h > MAX_OUTPUT_PIXELS:
        raise RequestError(field_name, f"a {width}x{height} image at {resolution} would be {out_w}x{out_h}, over the "
                                       f"limit of {MAX_OUTPUT_PIXELS:,} pixels: lower the resolution")


def resize_short_side(pixels: np.ndarray, resolution: int) -> np.ndarray:
    """Resize so the shorter side is ``resolution``: bicubic when enlarging, area averaging when shrinking."""
    import cv2

    height, width = pixels.shape[:2]
    check_resolution(int(resolution), width, height)
    out_w, out_h = working_size(width, height, int(resolution))
    if (out_w, out_h) == (width, height):
        return pixels
    interpolation = cv2.INTER_CUBIC if out_w * out_h > width * height else cv2.INTER_AREA
    return cv2.resize(pixels, (out_w, out_h), interpolation=interpolation)


# -- the model-free algorithms -------------------------------------------------------------------------------------


def _identity(pixels: np.ndarray, a: float, b: float, seed: int) -> np.ndarray:
    return pixels


def _invert(pixels: np.ndarray, a: float, b: float, seed: int) -> np.ndarray:
    return 255 - pixels


def _canny(pixels: np.ndarray, low: float, high: float, seed: int) -> np.ndarray:
    import cv2

    return cv2.Canny(pixels, int(low), int(high))  # the strongest channel's gradient, as the extension's


def _scribble_xdog(pixels: np.ndarray, threshold: float, b: float, seed: int) -> np.ndarray:
    """Where a pixel is darker than its wide surroundings in every channel (a difference of Gaussians), a stroke."""
    import cv2

    image = pixels.astype(np.float32)
    fine = cv2.GaussianBlur(image, (0, 0), 0.5)
    wide = cv2.GaussianBlur(image, (0, 0), 5.0)
    darkness = np.clip(np.min(wide - fine, axis=2), 0, 255)
    return np.where(2 * darkness > threshold, 255, 0).astype(np.uint8)


def _lineart_standard(pixels: np.ndarray, a: float, b: float, seed: int) -> np.ndarray:
    """How much darker each pixel is than a wide blur of its surroundings, normalised by the typical line's
    darkness, so black lines on white become white lines on black of even strength."""
    import cv2

    image = pixels.astype(np.float32)
    surroundings = cv2.GaussianBlur(image, (0, 0), 6.0)
    darkness = np.clip(np.min(surroundings - image, axis=2), 0, 255)
    lines = darkness[darkness > 8]
    typical = max(16.0, float(np.median(lines))) if lines.size else 16.0
    return np.clip(darkness / typical * 127.0, 0, 255).astype(np.uint8)


def _threshold(pixels: np.ndarray, threshold: float, b: float, seed: int) -> np.ndarray:
    """White where every channel is brighter than the threshold."""
    return np.where(np.min(pixels, axis=2) > threshold, 255, 0).astype(np.uint8)


def _blur_gaussian(pixels: np.ndarray, sigma: float, b: float, seed: int) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(pixels, (0, 0), float(sigma))


def _tile_resample(pixels: np.ndarray, rate: float, b: float, seed: int) -> np.ndarray:
    """Shrink by the down-sampling rate (the tile model then re-imagines the detail); below 1.1 the image is kept,
    as in the extension."""
    import cv2

    if rate < 1.1:
        return pixels
    height, width = pixels.shape[:2]
    size = (max(1, int(width / rate)), max(1, int(height / rate)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


SHUFFLE_CELL = 256  # the scale, in pixels, of the random flow that moves the content around


def _smooth_noise(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Random values on a coarse grid, enlarged bicubically and stretched to [0, 1]: a smooth random field."""
    import cv2

    coarse = rng.uniform(size=(height // SHUFFLE_CELL + 2, width // SHUFFLE_CELL + 2)).astype(np.float32)
    field = cv2.resize(coarse, (width + 2 * SHUFFLE_CELL, height + 2 * SHUFFLE_CELL), interpolation=cv2.INTER_CUBIC)
    field = field[SHUFFLE_CELL:SHUFFLE_CELL + height, SHUFFLE_CELL:SHUFFLE_CELL + width]
    span = float(field.max() - field.min())
    return (field - field.min()) / span if span > 0 else np.full_like(field, 0.5)


def _shuffle(pixels: np.ndarray, a: float, b: float, seed: int) -> np.ndarray:
    """Content shuffle: every pixel is fetched from a place given by a smooth random flow, so colours and textures
    stay while the composition is scrambled (what the shuffle ControlNet was trained on); the same seed gives the
    same shuffle."""
    import cv2

    height, width = pixels.shape[:2]
    rng = np.random.default_rng(seed)
    map_x = _smooth_noise(height, width, rng) * (width - 1)
    map_y = _smooth_noise(height, width, rng) * (height - 1)
    return cv2.remap(pixels, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT_101)


# -- the model-based algorithms (the weights: modules.controlnet.annotators) -----------------------------------------


def _depth(pixels: np.ndarray, a: float, b: float, folder: Path) -> np.ndarray:
    from modules.controlnet import annotators

    return annotators.depth_image(annotators.estimate_depth(pixels, folder))


def _metric_depth(pixels: np.ndarray, a: float, b: float, folder: Path) -> np.ndarray:
    from modules.controlnet import annotators

    return annotators.metric_depth_image(annotators.estimate_depth(pixels, folder))


def _normal_from_depth(pixels: np.ndarray, background: float, b: float, folder: Path) -> np.ndarray:
    from modules.controlnet import annotators

    return annotators.normal_image(annotators.estimate_depth(pixels, folder), background)


# -- the vocabulary ------------------------------------------------------------------------------------------------

_MODEL_FREE: tuple[Preprocessor, ...] = (
    Preprocessor("none", "none", _identity, uses_resolution=False),
    Preprocessor("invert", "invert (from white bg & black line)", _invert, uses_resolution=False),
    Preprocessor("canny", "canny", _canny, Slider("Low Threshold", 1, 255, 100), Slider("High Threshold", 1, 255, 200)),
    Preprocessor("scribble_xdog", "scribble_xdog", _scribble_xdog, Slider("XDoG Threshold", 1, 64, 32)),
    Preprocessor("lineart_standard", "lineart_standard (from white bg & black line)", _lineart_standard),
    Preprocessor("threshold", "threshold", _threshold, Slider("Binarization Threshold", 0, 255, 127)),
    Preprocessor("shuffle", "shuffle", _shuffle),
    Preprocessor("tile_resample", "tile_resample", _tile_resample, Slider("Down Sampling Rate", 1.0, 8.0, 1.0, 0.01),
                 uses_resolution=False),
    Preprocessor("blur_gaussian", "blur_gaussian", _blur_gaussian, Slider("Sigma", 0.01, 64.0, 9.0, 0.01)),
)

# Model-based ones that run here: their Hugging Face folders (the first present is used; the smallest comes first,
# as it is the one to fetch for a CPU) and the extension's own file for the same model.
_MIDAS = DepthModel(("dpt-hybrid-midas", "dpt-large"), "Intel/dpt-hybrid-midas", "dpt_hybrid-midas-501f0c75.pt")
_DEPTH_ANYTHING = DepthModel(("depth-anything-small", "depth-anything-base", "depth-anything-large"),
                             "LiheYoung/depth-anything-small-hf", "depth_anything_vitl14.pth")
_DEPTH_ANYTHING_V2 = DepthModel(("depth-anything-v2-small", "depth-anything-v2-base", "depth-anything-v2-large"),
                                "depth-anything/Depth-Anything-V2-Small-hf", "depth_anything_v2_vitl.pth")
_ZOE = DepthModel(("zoedepth-nyu", "zoedepth-nyu-kitti"), "Intel/zoedepth-nyu", "ZoeD_M12_N.pt")
_WITH_MODEL: tuple[Preprocessor, ...] = (
    Preprocessor("depth", "depth_midas", model=_MIDAS, model_algorithm=_depth),
    Preprocessor("depth_anything", "depth_anything", model=_DEPTH_ANYTHING, model_algorithm=_depth),
    Preprocessor("depth_anything_v2", "depth_anything_v2", model=_DEPTH_ANYTHING_V2, model_algorithm=_depth),
    Preprocessor("depth_zoe", "depth_zoe", model=_ZOE, model_algorithm=_metric_depth),
    Preprocessor("normal_map", "normal_midas", threshold_a=Slider("Normal Background Threshold", 0.0, 1.0, 0.4, 0.01),
                 model=_MIDAS, model_algorithm=_normal_from_depth),
)

# Model-based ones that do not run here yet: (name, UI label, annotator files). The files are the ones the
# extension downloads for them.
_OPENPOSE = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
_NEEDS_MODEL: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("depth_leres", "depth_leres", ("res101.pth",)),
    ("depth_leres++", "depth_leres++", ("res101.pth", "latest_net_G.pth")),
    ("normal_bae", "normal_bae", ("scannet.pt",)),
    ("openpose", "openpose", _OPENPOSE[:1]),
    ("openpose_hand", "openpose_hand", _OPENPOSE[:2]),
    ("openpose_face", "openpose_face", _OPENPOSE[:1] + _OPENPOSE[2:]),
    ("openpose_faceonly", "openpose_faceonly", _OPENPOSE[2:]),
    ("openpose_full", "openpose_full", _OPENPOSE),
    ("dw_openpose_full", "dw_openpose_full", ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")),
    ("hed", "softedge_hed", ("ControlNetHED.pth",)),
    ("hed_safe", "softedge_hedsafe", ("ControlNetHED.pth",)),
    ("pidinet", "softedge_pidinet", ("table5_pidinet.pth",)),
    ("pidinet_safe", "softedge_pidisafe", ("table5_pidinet.pth",)),
    ("te_hed", "softedge_teed", ("7_model.pth",)),
    ("scribble_hed", "scribble_hed", ("ControlNetHED.pth",)),
    ("pidinet_scribble", "scribble_pidinet", ("table5_pidinet.pth",)),
    ("pidinet_sketch", "t2ia_sketch_pidi", ("table5_pidinet.pth",)),
    ("mlsd", "mlsd", ("mlsd_large_512_fp32.pth",)),
    ("lineart", "lineart_realistic", ("sk_model.pth",)),
    ("lineart_coarse", "lineart_coarse", ("sk_model2.pth",)),
    ("lineart_anime", "lineart_anime", ("netG.pth",)),
    ("lineart_anime_denoise", "lineart_anime_denoise", ("erika.pth",)),
    ("segmentation", "seg_ufade20k", ("upernet_global_small.pth",)),
    ("oneformer_coco", "seg_ofcoco", ("150_16_swin_l_oneformer_coco_100ep.pth",)),
    ("oneformer_ade20k", "seg_ofade20k", ("250_16_swin_l_oneformer_ade20k_160k.pth",)),
    ("inpaint_only+lama", "inpaint_only+lama", ("ControlNetLama.pth",)),
)

PREPROCESSORS: dict[str, Preprocessor] = {
    p.name: p for p in (*_MODEL_FREE, *_WITH_MODEL,
                        *(Preprocessor(name, label, needs=files) for name, label, files in _NEEDS_MODEL))
}
# Names the extension once used (or that clients commonly send) -> the module they mean today.
LEGACY_ALIASES: dict[str, str] = {"scribble": "invert", "fake_scribble": "scribble_hed"}

_BY_KEY: dict[str, Preprocessor] = {}
for _p in PREPROCESSORS.values():
    _BY_KEY.setdefault(_p.name.lower(), _p)
    _BY_KEY.setdefault(_p.label.lower(), _p)
for _alias, _target in LEGACY_ALIASES.items():
    _BY_KEY.setdefault(_alias, PREPROCESSORS[_target])


def module_names(alias_names: bool = False) -> list[str]:
    """Every preprocessor (module names, or the extension's UI labels), the model-free ones first, ``none`` first
    of all, as the extension lists them."""
    return [p.label if alias_names else p.name for p in PREPROCESSORS.values()]


def module_detail(alias_names: bool = False, models_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """The extension's ``module_detail``: per module, ``model_free`` (False: every one needs a ControlNet model)
    and its ``sliders``; plus ``available`` (runs in this studio, with the models under ``models_dir``) and
    ``requires`` (the annotator files, or the model folder, a model-based one needs under ``models/``; ``accepts``
    lists every folder it would load from), which the extension's clients ignore."""
    detail: dict[str, dict[str, Any]] = {}
    for p in PREPROCESSORS.values():
        entry: dict[str, Any] = {"model_free": False, "sliders": [slider.wire() for slider in p.sliders()],
                                 "available": p.available_in(models_dir), "requires": list(p.required_files())}
        if p.model is not None:
            entry["accepts"] = list(p.model.shown_folders())
        detail[p.label if alias_names else p.name] = entry
    return detail


def find(name: str | None, field_name: str = "module") -> Preprocessor:
    """The preprocessor a client means by ``name`` (module name or UI label, any case, or a legacy alias; empty
    means ``none``); ``RequestError`` naming ``field_name`` for an unknown one."""
    key = (name or "none").strip().lower()
    found = _BY_KEY.get(key)
    if found is None:
        raise RequestError(field_name, f"unknown preprocessor {name!r}; expected one of {', '.join(module_names())}")
    return found


def run(module: str | None, image: Image.Image, resolution: int = DEFAULT_RESOLUTION,
                     threshold_a: float = -1, threshold_b: float = -1, *, seed: int = 0,
                     models_dir: Path | None = None, field_name: str = "module") -> Image.Image:
    """Find ``module`` and run it on ``image``: the one call the API's detect and generation both use. A
    resolution below 0 means the default (512). Errors name ``field_name`` for the module and ``processor_res``
    for the resolution."""
    preprocessor = find(module, field_name)
    if not preprocessor.available_in(models_dir):
        raise preprocessor.needs_model_error(field_name, models_dir)
    return preprocessor.run(image, DEFAULT_RESOLUTION if resolution < 0 else int(resolution), threshold_a,
                            threshold_b, seed=seed, models_dir=models_dir)


def check_runnable(module: str | None, field_name: str = "module", models_dir: Path | None = None) -> Preprocessor:
    """The preprocessor ``module`` names, if it can run here: what a check before queueing calls, so a model-based
    one is refused at submission instead of failing the job. ``RequestError`` (unknown) or
    ``PreprocessorNeedsModel`` naming ``field_name``."""
    preprocessor = find(module, field_name)
    if not preprocessor.available_in(models_dir):
        raise preprocessor.needs_model_error(field_name, models_dir)
    return preprocessor
