"""Loading interrogate models from their folders and running them, on the worker thread that owns them.

Models load from local files only (``local_files_only``, no remote code), once, and stay in memory for the next
image; on an accelerator they go back to the CPU after each job, as A1111 does by default, so a captioner and a
CLIP model do not hold memory the diffusion model needs. The CLIP text features of the term lists are computed
once per model and list: ranking an image then costs one image encoding.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from modules.errors import RequestError
from modules.interrogate.folders import InterrogatorInfo
from modules.interrogate.terms import Category

if TYPE_CHECKING:
    import torch

# Captioners that answer a task prompt rather than an image alone (transformers-native model types).
CAPTION_PROMPTS = {"florence2": "<MORE_DETAILED_CAPTION>"}
TEXT_BATCH = 64


class InterrogateLoadError(RequestError):
    """A model folder that cannot be loaded, or whose processor and model do not fit an image: names the folder
    and says why (field "model"), since it is the folder that needs fixing."""

    def __init__(self, info: InterrogatorInfo, error: BaseException, doing: str = "be loaded") -> None:
        text = " ".join(str(error).split()).replace(str(info.path), info.shown)[:300] or "no details"
        super().__init__("model", f"{info.shown} ({info.role}) could not {doing}: {type(error).__name__}: {text}")


@dataclass
class Loaded:
    info: InterrogatorInfo
    stamp: float  # the config's modification time: a folder replaced on disk is read again
    model: Any
    processor: Any
    text_features: dict[tuple[str, tuple[str, ...]], Any] = field(default_factory=dict)


class InterrogateModels:
    """The last captioner and the last CLIP model used, loaded on ``device`` (a callable decides on first use:
    torch is slow to import). Used by one worker thread; the lock only guards against a test or tool calling in."""

    def __init__(self, device: str | Callable[[], str] = "cpu", dtype: Callable[[], Any] | None = None) -> None:
        self._device = device
        self._dtype = dtype
        self._loaded: dict[str, Loaded] = {}
        self._lock = threading.RLock()

    @property
    def device(self) -> str:
        return self._device() if callable(self._device) else self._device

    def dtype(self) -> torch.dtype:
        """float32 on the CPU (half precision there is slow and gains nothing for models this size), else the
        studio's precision."""
        import torch

        if self.device.split(":", 1)[0] == "cpu" or self._dtype is None:
            return torch.float32
        return self._dtype()

    def get(self, info: InterrogatorInfo) -> Loaded:
        with self._lock:
            stamp = _stamp(info.path)
            loaded = self._loaded.get(info.role)
            if loaded is None or loaded.info.path != info.path or loaded.stamp != stamp:
                self._loaded.pop(info.role, None)
                loaded = Loaded(info, stamp, *self._load(info))
                self._loaded[info.role] = loaded
            loaded.model.to(self.device)
            return loaded

    def _load(self, info: InterrogatorInfo) -> tuple[Any, Any]:
        from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

        model_class = AutoModel if info.role == "ranker" else AutoModelForImageTextToText
        try:
            processor = AutoProcessor.from_pretrained(str(info.path), local_files_only=True)
            model = model_class.from_pretrained(str(info.path), local_files_only=True, **_dtype_argument(self.dtype()))
        except Exception as error:  # a broken or foreign folder fails its job naming the folder, not the worker
            raise InterrogateLoadError(info, error) from None
        return model.eval(), processor

    def release(self) -> None:
        """After a job on an accelerator: the models go back to the CPU (kept loaded, memory freed)."""
        with self._lock:
            if self.device.split(":", 1)[0] == "cpu":
                return
            for loaded in self._loaded.values():
                loaded.model.to("cpu")
                loaded.text_features.clear()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def unload(self) -> None:
        with self._lock:
            self._loaded.clear()

    # -- running ---------------------------------------------------------------------------------------------------
    def caption(self, info: InterrogatorInfo, image: Image.Image, max_tokens: int) -> str:
        """The captioner's sentence for ``image``: greedy decoding, so the same image gives the same words."""
        import torch

        loaded = self.get(info)
        prompt = CAPTION_PROMPTS.get(info.model_type)
        try:
            inputs = loaded.processor(images=image, text=prompt, return_tensors="pt") if prompt else \
                loaded.processor(images=image, return_tensors="pt")
            inputs = {name: _to(value, self.device, self.dtype()) for name, value in inputs.items()}
            with torch.inference_mode():
                output = loaded.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False, num_beams=1)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            raise InterrogateLoadError(info, error, "caption the image") from None
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None and not getattr(loaded.model.config, "is_encoder_decoder", False):
            output = output[:, prompt_ids.shape[1]:]  # a decoder-only model repeats its prompt first
        text = loaded.processor.batch_decode(output, skip_special_tokens=True)[0]
        return " ".join(text.split())

    def rank(self, info: InterrogatorInfo, image: Image.Image, categories: list[Category],
             on_category: Callable[[int], bool] | None = None) -> list[tuple[str, str, float]]:
        """The best terms of each list for ``image`` by CLIP's cosine similarity: (list, term, score), the lists
        in order and each list's terms best first (ties keep file order). ``on_category(index)`` is called
        before each list; returning False stops early (an interrupted job)."""
        import torch

        loaded = self.get(info)
        try:
            pixels = loaded.processor(images=image, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                features = _features(loaded.model.get_image_features(pixel_values=_to(pixels, self.device,
                                                                                      self.dtype())))
        except (ValueError, TypeError, KeyError, IndexError) as error:
            raise InterrogateLoadError(info, error, "encode the image") from None
        chosen: list[tuple[str, str, float]] = []
        for index, category in enumerate(categories):
            if on_category is not None and not on_category(index):
                break
            text = self._text_features(loaded, category)
            scores = (features @ text.T)[0].float().cpu()
            order = sorted(range(len(category.terms)), key=lambda position: (-float(scores[position]), position))
            chosen.extend((category.name, category.terms[position], float(scores[position]))
                          for position in order[:category.top])
        return chosen

    def _text_features(self, loaded: Loaded, category: Category) -> torch.Tensor:
        import torch

        key = (category.name, category.terms)
        cached = loaded.text_features.get(key)
        if cached is not None:
            return cached
        parts = []
        for start in range(0, len(category.terms), TEXT_BATCH):
            batch = list(category.terms[start:start + TEXT_BATCH])
            tokens = loaded.processor(text=batch, return_tensors="pt", padding=True, truncation=True)
            tokens = {name: value.to(self.device) for name, value in tokens.items()}
            with torch.inference_mode():
                parts.append(_features(loaded.model.get_text_features(**tokens)))
        features = torch.cat(parts)
        loaded.text_features[key] = features
        return features


def _features(output: Any) -> torch.Tensor:
    """Unit-length embeddings from ``get_*_features`` (a tensor, or an output whose pooler holds them)."""
    import torch

    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(tensor.float(), dim=-1)


def _to(value: Any, device: str, dtype: torch.dtype) -> Any:
    """Inputs to the model's device; floating ones (pixels) to its dtype, token ids stay integers."""
    if not hasattr(value, "to"):
        return value
    return value.to(device, dtype) if value.is_floating_point() else value.to(device)


def _dtype_argument(dtype: torch.dtype) -> dict[str, Any]:
    """``from_pretrained``'s precision argument: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _stamp(path: Path) -> float:
    try:
        return (path / "config.json").stat().st_mtime
    except OSError:
        return 0.0
