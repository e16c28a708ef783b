"""Loading upscaler model files safely, and keeping the last ones used in memory.

spandrel recognises the architecture (ESRGAN, Real-ESRGAN Compact, SwinIR, HAT, DAT, SPAN, ...) and its settings
from the weights alone, so one loader serves every folder. The file itself is read here, not by spandrel's
``ModelLoader.load_from_file``: that one unpickles ``.pth`` with its own allow-list (safe), but opens ``.pt`` with
``torch.jit.load`` first, which runs TorchScript code from the file. Reading with ``torch.load(weights_only=True)``
and safetensors, then handing spandrel a plain state dict, keeps every format to "tensors only".

Every way a file can fail becomes an ``UpscalerLoadError`` that names the file and says why in words a user can act
on, since these files come from anywhere and many are broken downloads.
"""

from __future__ import annotations

import contextlib
import gc
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.errors import RequestError
from modules.upscaling.registry import UpscalerInfo

if TYPE_CHECKING:
    import torch

_ACCEPTED_PURPOSES = ("SR", "Restoration")
_DAMAGED = "the file is truncated, damaged or not a model file ({})"
# How torch's weights-only unpickler says a pickle wants to build objects or call functions (other refusals, such as
# "Unsupported operand", mean bytes that are not a weights pickle at all).
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_UNSAFE_SIGNS = ("allowlisted", "unrecognized function", "is blocked")


class UpscalerLoadError(RequestError):
    """An upscaler file that cannot be used; the message names the file and the reason (field "upscaler")."""

    def __init__(self, shown_path: str, reason: str) -> None:
        super().__init__("upscaler", f"{shown_path} cannot be read as an upscaler model: {reason}")
        self.shown_path = shown_path
        self.reason = reason


@dataclass(frozen=True)
class LoadedUpscaler:
    """A model ready to run: spandrel's descriptor plus what the engine needs to know about it."""

    info: UpscalerInfo
    descriptor: Any  # spandrel.ImageModelDescriptor
    scale: int
    architecture: str
    device: str
    dtype: torch.dtype
    tiling_allowed: bool

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Run the model on a (1, 3, h, w) tensor in [0, 1] on its device and dtype."""
        return self.descriptor(image)


def _shown(info: UpscalerInfo) -> str:
    return info.display_path or (info.path.name if info.path is not None else info.name)


def _short(error: BaseException, path: Path | None = None) -> str:
    """The error in one short line, without the server's folder names (the message goes back to API clients)."""
    text = " ".join(str(error).split()) or "no details"
    if path is not None:
        text = text.replace(str(path), path.name).replace(str(path.parent), "")
    return f"{type(error).__name__}: {text[:160]}{'...' if len(text) > 160 else ''}"


def read_state_dict(path: Path, shown: str) -> dict[str, torch.Tensor]:
    """The tensors in a ``.safetensors`` / ``.pth`` / ``.pt`` file, without running anything the file contains."""
    import torch

    if not path.is_file():
        raise UpscalerLoadError(shown, "the file no longer exists (it was moved or deleted since the list was made)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = _UNSAFE_GLOBAL.search(str(error))
        if unsafe or any(sign in str(error) for sign in _UNSAFE_SIGNS):
            refers = f" (it refers to {unsafe.group(1)})" if unsafe else ""
            raise UpscalerLoadError(shown, "it holds Python objects besides weights, and loading those could run code "
                                           f"hidden in the file, so it was refused{refers}; a .safetensors version "
                                           "of the model is safe to use") from error
        raise UpscalerLoadError(shown, _DAMAGED.format(_short(error, path))) from error
    except RuntimeError as error:
        if "TorchScript" in str(error):
            raise UpscalerLoadError(shown, "it is a TorchScript program, not plain weights; only weights are "
                                           "loaded (.pth/.safetensors)") from error
        raise UpscalerLoadError(shown, _DAMAGED.format(_short(error, path))) from error
    except MemoryError:
        raise
    except Exception as error:  # safetensors, zip and pickle readers raise many unrelated types for damaged bytes
        raise UpscalerLoadError(shown, _DAMAGED.format(_short(error, path))) from error
    return _tensors_only(loaded, shown)


def _tensors_only(loaded: Any, shown: str) -> dict[str, torch.Tensor]:
    """The state dict inside what the file held (unwrapping "params_ema" and the like), tensors only."""
    import torch
    from spandrel import canonicalize_state_dict

    if not isinstance(loaded, dict):
        raise UpscalerLoadError(shown, f"it holds a {type(loaded).__name__}, not a set of named weights")
    state = canonicalize_state_dict(loaded)
    tensors = {key: value for key, value in state.items() if isinstance(key, str) and isinstance(value, torch.Tensor)}
    if not tensors:
        raise UpscalerLoadError(shown, "it contains no weights")
    return tensors


def _detects(support: Any, state: dict[str, torch.Tensor]) -> bool:
    """Whether an architecture claims the weights; a detector tripping over odd shapes just means "not mine"."""
    try:
        return bool(support.detect(state))
    except Exception:
        return False


def _describe(state: dict[str, torch.Tensor], shown: str) -> Any:
    """spandrel's descriptor for the weights, or the reason there is none."""
    from spandrel import MAIN_REGISTRY, ImageModelDescriptor, __version__

    architecture = next((support.architecture for support in MAIN_REGISTRY.architectures("detection")
                         if _detects(support, state)), None)
    if architecture is None:
        raise UpscalerLoadError(shown, f"its architecture is not one spandrel {__version__} knows (is it an upscaler? "
                                       "Stable Diffusion checkpoints, LoRAs and VAEs go in other folders)")
    try:
        descriptor = architecture.load(state)
    except Exception as error:  # an architecture's loader fails in its own way on weights that do not fit it
        raise UpscalerLoadError(shown, f"it looks like a {architecture.name} model but its weights do not fit that "
                                       f"architecture; the file may be damaged ({_short(error)})") from error
    if not isinstance(descriptor, ImageModelDescriptor):
        raise UpscalerLoadError(shown, f"it is a {architecture.name} model for {descriptor.purpose.lower()}, which "
                                       "needs a mask; only image-to-image upscalers are supported")
    if descriptor.purpose not in _ACCEPTED_PURPOSES:
        raise UpscalerLoadError(shown, f"it is a {architecture.name} face restoration model, not an upscaler")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UpscalerLoadError(shown, f"it works on {descriptor.input_channels}-channel images; only colour (RGB) "
                                       "models are supported")
    if descriptor.scale < 1:
        raise UpscalerLoadError(shown, f"its scale is {descriptor.scale}; upscalers enlarge (scale 1 or more)")
    return descriptor


def pick_dtype(device_type: str, preferred: torch.dtype | None, *, supports_half: bool,
               supports_bfloat16: bool) -> torch.dtype:
    """fp32 except on CUDA/ROCm, where fp16 or bf16 is used when asked for and the architecture supports it.

    Half precision halves memory and doubles speed on GPUs, but some architectures overflow in fp16 (spandrel marks
    them), and CPUs gain nothing from it, so fp32 is the fallback everywhere else.
    """
    import torch

    if device_type != "cuda" or preferred is None:
        return torch.float32
    if (preferred == torch.float16 and supports_half) or (preferred == torch.bfloat16 and supports_bfloat16):
        return preferred
    return torch.float32


def load_upscaler(info: UpscalerInfo, *, device: str = "cpu", dtype: torch.dtype | None = None) -> LoadedUpscaler:
    """Read ``info``'s file, build its model on ``device`` in the precision ``pick_dtype`` allows, ready to run."""
    import torch
    from spandrel import ModelTiling

    if info.path is None:
        raise ValueError(f"{info.name} is a built-in resize; it has no model to load")
    shown = _shown(info)
    descriptor = _describe(read_state_dict(Path(info.path), shown), shown)
    target = torch.device(device)
    chosen = pick_dtype(target.type, dtype, supports_half=descriptor.supports_half,
                        supports_bfloat16=descriptor.supports_bfloat16)
    descriptor.to(target, chosen).eval()
    for parameter in descriptor.model.parameters():
        parameter.requires_grad_(False)
    return LoadedUpscaler(info=info, descriptor=descriptor, scale=int(descriptor.scale),
                          architecture=descriptor.architecture.name, device=str(target), dtype=chosen,
                          tiling_allowed=descriptor.tiling != ModelTiling.INTERNAL)


def _file_key(path: Path) -> tuple[str, int, int]:
    """A file's identity for the cache: replacing a model file under the same name must load the new weights."""
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


class UpscalerModels:
    """The upscaler models loaded on one device, most recently used last, at most ``max_loaded`` of them.

    A second upscale with the same model must not read the file again, but upscalers compete with the diffusion
    model for accelerator memory, so by default only one stays loaded. Owned and used by one worker thread.
    """

    def __init__(self, device: str | Callable[[], str] = "cpu", dtype: torch.dtype | None = None,
                 max_loaded: int = 1) -> None:
        if max_loaded < 1:
            raise ValueError("max_loaded must be at least 1")
        self._device = device  # a callable decides on first use (torch is slow to import)
        self.dtype = dtype
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[tuple[str, int, int], LoadedUpscaler] = OrderedDict()
        self._scales: dict[tuple[str, int, int], int] = {}

    @property
    def device(self) -> str:
        return self._device() if callable(self._device) else self._device

    @property
    def device_type(self) -> str:
        """"cuda", "mps", "cpu", ... (what tile defaults and precision depend on)."""
        return self.device.split(":", 1)[0].lower()

    def get(self, info: UpscalerInfo) -> LoadedUpscaler:
        """The loaded model for ``info``, reading its file only if it is not loaded (or changed on disk)."""
        if info.path is None:
            raise ValueError(f"{info.name} is a built-in resize; it has no model to load")
        try:
            key = _file_key(Path(info.path))
        except OSError:  # gone since it was listed: let the loader say so
            return load_upscaler(info, device=self.device, dtype=self.dtype)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        self._evict(keep=self.max_loaded - 1, path=key[0])
        loaded = load_upscaler(info, device=self.device, dtype=self.dtype)
        self._loaded[key] = loaded
        self._scales[key] = loaded.scale
        return loaded

    def known_scale(self, info: UpscalerInfo) -> int | None:
        """The model's true scale if it was loaded before (even if evicted since), else the one its name gives."""
        if info.path is None:
            return None
        try:
            return self._scales.get(_file_key(Path(info.path)), info.scale)
        except OSError:
            return info.scale

    def loaded(self) -> list[str]:
        """Names of the models in memory, least recently used first (for a status page)."""
        return [loaded.info.name for loaded in self._loaded.values()]

    def clear(self) -> None:
        """Unload every model (e.g. before loading a large diffusion model)."""
        self._evict(keep=0)

    def _evict(self, keep: int, path: str | None = None) -> None:
        """Unload least recently used models until ``keep`` remain (and any older version of ``path``).

        Dropping the reference is not enough on an accelerator while anything else still holds the model, so its
        weights are moved to the "meta" device (which frees their storage) and the CUDA cache is emptied.
        """
        stale = [key for key in self._loaded if path is not None and key[0] == path]
        while len(self._loaded) - len(stale) > max(keep, 0):
            oldest = next(key for key in self._loaded if key not in stale)
            stale.append(oldest)
        if not stale:
            return
        for key in stale:
            loaded = self._loaded.pop(key)
            with contextlib.suppress(RuntimeError, NotImplementedError):
                loaded.descriptor.model.to("meta")
            del loaded
        gc.collect()
        if self.device_type == "cuda":
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
