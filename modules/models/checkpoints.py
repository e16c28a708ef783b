"""Turn a checkpoint from the registry into a diffusers txt2img pipeline, without ever touching a model hub.

Single-file checkpoints (.safetensors / .ckpt in the original LDM layout A1111 uses) are loaded through diffusers'
own ``from_single_file`` so its key conversion is what runs, but always with ``config=`` pointing at a local
diffusers-layout config folder: without it diffusers looks the family's configs up on the Hub, and when they are
not cached it silently retries with ``local_files_only=False``. The folders for the real families ship in
``modules/model_configs``; when a checkpoint's tensor shapes disagree with them (pruned or custom models, the tiny
test models) the shape-visible fields are derived from the tensors and written to a cache folder instead.

What tensor shapes cannot tell, and the rules used for it:

* family conventions (activation, scheduler, VAE scaling factor, sample size) come from the family's shipped config;
* UNet heads: SD 1.x uses 8 heads per attention; SD 2.x and SDXL use 64-wide heads (``max(1, channels // 64)``);
* CLIP heads: 64-wide (``max(1, hidden // 64)``);
* GroupNorm groups: the UNet uses ``min(32, block_out_channels[0] // 4)`` and the VAE ``min(32, smallest // 2)``,
  each lowered until it divides every block width (32 for all real models; 8 and 4 for ``tiny_model``'s);
* v-prediction (SD 2.x 768-v): from an A1111 sidecar ``<name>.yaml`` (``parameterization: "v"``) or the
  ``prediction_type`` argument.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.models.registry import read_safetensors_shapes

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

    from modules.models.registry import CheckpointInfo

CONFIG_ROOT = Path(__file__).parent / "configs"
UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_TEXT = "cond_stage_model.transformer.text_model."
SD2_TEXT = "cond_stage_model.model."
SDXL_TEXT_1 = "conditioner.embedders.0.transformer.text_model."
SDXL_TEXT_2 = "conditioner.embedders.1.model."
EOS_PAD, BANG_PAD = "<|endoftext|>", "!"
SIZES = {"sd1": 512, "sd2": 512, "sdxl": 1024, "sd3": 1024, "flux": 1024}
Shapes = dict[str, tuple[int, ...]]


class CheckpointLoadError(RuntimeError):
    """A checkpoint that cannot (or must not) be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Layout:
    """What a single-file checkpoint's keys reveal: its family and whether its UNet is an inpainting one."""

    family: str
    inpainting: bool

    @property
    def config_name(self) -> str:
        """The shipped config folder this layout starts from."""
        if self.family == "sd1":
            return "sd15-inpainting" if self.inpainting else "sd15"
        return self.family


def dtype_argument(dtype: torch.dtype | None) -> dict[str, Any]:
    """The weight dtype as the installed diffusers names it: ``dtype`` from 0.42 on (``torch_dtype`` still works
    there but warns on every load), ``torch_dtype`` before."""
    import diffusers
    from packaging.version import Version

    name = "dtype" if Version(diffusers.__version__).release >= (0, 42) else "torch_dtype"
    return {name: dtype}


def detect_layout(shapes: Shapes) -> Layout | None:
    """The family of an original-layout (LDM / A1111) state dict, or None when it is not an SD checkpoint."""
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None or len(conv_in) != 4:
        return None
    inpainting = conv_in[1] == 9
    if any(key.startswith(SDXL_TEXT_2) for key in shapes):
        return Layout("sdxl", inpainting)
    if any(key.startswith(SD2_TEXT) for key in shapes):
        return Layout("sd2", inpainting)
    if any(key.startswith("cond_stage_model.transformer.") for key in shapes):
        return Layout("sd1", inpainting)
    return None


def diffusers_folder_family(folder: Path) -> str | None:
    """The family of a diffusers folder, from its configs: SD3 and Flux by their transformer (``families``, checked
    first: SD3 has a second text encoder too), then a second text encoder means SDXL, OpenCLIP means SD 2."""
    from modules.models import families

    flow = families.folder_family(Path(folder))
    if flow:
        return flow
    index = _read_json(Path(folder) / "model_index.json")
    if "text_encoder_2" in index or "XL" in str(index.get("_class_name", "")):
        return "sdxl"
    text = Path(folder) / "text_encoder" / "config.json"
    if text.is_file() and _read_json(text).get("hidden_act") == "gelu":
        return "sd2"
    return "sd1" if "unet" in index else None


def normalize_prediction_type(value: str | None) -> str | None:
    """Accept the spellings users and LDM configs use ("v", "v-prediction", "eps") for diffusers' names."""
    if value is None or value == "":
        return None
    lowered = value.strip().lower().replace("-", "_")
    if lowered in {"v", "v_prediction", "vpred", "v_pred"}:
        return "v_prediction"
    if lowered in {"eps", "epsilon"}:
        return "epsilon"
    if lowered == "sample":
        return "sample"
    raise ValueError(f"Unknown prediction type {value!r}; use 'epsilon' or 'v_prediction'")


def sidecar_prediction_type(checkpoint: Path) -> str | None:
    """The ``parameterization`` of an A1111 sidecar LDM config (``<name>.yaml`` next to the checkpoint), if any."""
    sidecar = Path(checkpoint).with_suffix(".yaml")
    if not sidecar.is_file():
        return None
    import yaml

    try:
        config = yaml.safe_load(sidecar.read_text(encoding="utf-8")) or {}
        parameterization = config.get("model", {}).get("params", {}).get("parameterization")
        return normalize_prediction_type(parameterization) if parameterization else None
    except (yaml.YAMLError, AttributeError, ValueError) as error:
        raise CheckpointLoadError(f"The sidecar config {sidecar.name} could not be used: {error}") from error


def default_size(family: str, prediction_type: str | None = None, model_path: Path | None = None) -> int:
    """The image side a model was trained at: a diffusers folder says so itself, otherwise the family decides."""
    if model_path is not None and (Path(model_path) / "transformer" / "config.json").is_file():
        transformer = _read_json(Path(model_path) / "transformer" / "config.json")
        vae = _read_json(Path(model_path) / "vae" / "config.json")
        scale = 2 ** (len(vae["block_out_channels"]) - 1) if "block_out_channels" in vae else 8
        if transformer.get("sample_size"):
            return int(transformer["sample_size"]) * scale
        return int(vae.get("sample_size") or SIZES.get(family, 1024))
    if model_path is not None and (Path(model_path) / "unet" / "config.json").is_file():
        unet = _read_json(Path(model_path) / "unet" / "config.json")
        vae = _read_json(Path(model_path) / "vae" / "config.json")
        scale = 2 ** (len(vae["block_out_channels"]) - 1) if "block_out_channels" in vae else 8
        return int(unet["sample_size"]) * scale
    if family not in SIZES:
        raise ValueError(f"Unknown model family {family!r}")
    if family == "sd2" and normalize_prediction_type(prediction_type) == "v_prediction":
        return 768
    return SIZES[family]


def load_pipeline(
    info: CheckpointInfo,
    torch_dtype: torch.dtype | None = None,
    config_root: Path | None = None,
    prediction_type: str | None = None,
    cache_dir: Path | None = None,
    base_folders: Sequence[Path] = (),
    quantize: str = "none",
) -> DiffusionPipeline:
    """The txt2img pipeline for a checkpoint (StableDiffusionPipeline or StableDiffusionXLPipeline; an SD3 or Flux
    diffusers folder gives StableDiffusion3Pipeline or FluxPipeline), offline. An SD3 / Flux single file gives its
    transformer, the other components coming from one of ``base_folders`` (the installed diffusers folders).

    Inpainting checkpoints come back in the same class with a 9-channel UNet; wrap them with
    ``StableDiffusionInpaintPipeline(**pipe.components)`` (or the XL one) to inpaint. ``prediction_type``
    overrides what the checkpoint's sidecar config says. No safety checker is loaded. ``quantize`` ("nf4",
    "int8") loads the UNet / transformer with bitsandbytes (CUDA only: the caller checks the device); a GGUF file
    is quantized as stored, and a folder saved pre-quantized is refused where it cannot load.
    """
    import torch

    dtype = torch_dtype or torch.float32
    cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "sfumato-model-configs"
    path = Path(info.path)
    if info.kind == "diffusers" or path.is_dir():
        return _load_diffusers_folder(path, dtype, normalize_prediction_type(prediction_type), cache, quantize)
    if path.suffix.lower() not in (".safetensors", ".ckpt", ".gguf"):
        raise CheckpointLoadError(f"{path.name}: unsupported checkpoint type {path.suffix!r}; use .safetensors")
    if not path.is_file():
        raise CheckpointLoadError(f"{path} does not exist (was it moved? refresh the model list)")
    return _load_single_file(path, dtype, Path(config_root or CONFIG_ROOT), prediction_type, cache, base_folders,
                             quantize)


def _load_diffusers_folder(path: Path, dtype: torch.dtype, prediction: str | None, cache: Path,
                           quantize: str = "none") -> DiffusionPipeline:
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

    from modules.models import families, quantization

    family = diffusers_folder_family(path)
    if family is None:
        raise CheckpointLoadError(f"{path.name} is a diffusers folder but not a Stable Diffusion pipeline")
    problem = quantization.prequantized_problem(path, torch.cuda.is_available(), quantization.has_bitsandbytes())
    if problem:
        raise CheckpointLoadError(problem)
    if families.is_flow_family(family):
        try:
            return families.load_folder(path, family, dtype, quantize=quantize)
        except (OSError, ValueError, RuntimeError, ImportError) as error:
            raise CheckpointLoadError(f"Could not load the {family} diffusers folder {path.name}: {error}") from error
    kwargs: dict[str, Any] = {**dtype_argument(dtype), "local_files_only": True}
    # A folder saved without tokenizers still loads: the tokenizers are the same for every SD model.
    for name, pad in _tokenizer_pads(family).items():
        if not (path / name).is_dir():
            kwargs[name] = _tokenizer(pad, cache)
    if family == "sdxl":
        pipeline_class = StableDiffusionXLPipeline
    else:
        pipeline_class = StableDiffusionPipeline
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        if quantize != "none":
            kwargs["unet"] = UNet2DConditionModel.from_pretrained(
                str(path), subfolder="unet", **dtype_argument(dtype), local_files_only=True,
                **quantization.denoiser_quantization(quantize, dtype))
        pipe = pipeline_class.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, RuntimeError, ImportError) as error:
        raise CheckpointLoadError(f"Could not load the diffusers folder {path.name}: {error}") from error
    if prediction:
        pipe.scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config, prediction_type=prediction)
    return pipe


def _load_single_file(
    path: Path, dtype: torch.dtype, config_root: Path, prediction_type: str | None, cache: Path,
    base_folders: Sequence[Path] = (), quantize: str = "none",
) -> DiffusionPipeline:
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

    shapes = _checkpoint_shapes(path)
    layout = detect_layout(shapes)
    from modules.models import families

    flow = families.single_file_family(shapes) if layout is None else None
    if flow:
        return families.load_single_file(path, flow, dtype, shapes, base_folders, quantize=quantize)
    if layout is None and path.suffix.lower() == ".gguf":
        raise CheckpointLoadError(
            f"{path.name} is a GGUF file but not of an SD3 or Flux.1 transformer (no joint_blocks / double_blocks / "
            "single_transformer_blocks tensors); Sfumato loads GGUF files only for those families")
    if layout is None and any(key.startswith("conditioner.embedders.0.model.") for key in shapes):
        raise CheckpointLoadError(f"{path.name} is an SDXL refiner; refiner checkpoints are not supported yet")
    if layout is None:
        raise CheckpointLoadError(
            f"{path.name} is not a Stable Diffusion 1.x / 2.x / XL checkpoint in the original (A1111) layout: "
            "no UNet (model.diffusion_model.*) with a recognised text encoder. LoRAs, VAEs and ControlNets belong "
            "in their own folders."
        )
    prediction = normalize_prediction_type(prediction_type) or sidecar_prediction_type(path)
    base_dir = config_root / layout.config_name
    configs = resolve_configs(shapes, layout, config_root, prediction)
    config_dir = base_dir if configs == read_config_folder(base_dir) else _write_config_folder(configs, cache)

    # With a dtype of None diffusers still casts every weight to the (float32) dtype the model was built in, and
    # skips a final .to() that only logs a warning.
    load_dtype = None if dtype == torch.float32 else dtype
    components: dict[str, Any] = {
        name: _tokenizer(pad, cache) for name, pad in _tokenizer_pads(layout.family).items()
    }
    if layout.family == "sdxl":
        pipeline_class = StableDiffusionXLPipeline
    else:
        pipeline_class = StableDiffusionPipeline
        components.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        widths = {configs[name]["hidden_size"] for name in ("text_encoder", "text_encoder_2") if name in configs}
        if layout.family == "sdxl" and len(widths) == 1:
            # diffusers tells the two encoders apart by width alone; when the widths match it loads the first
            # encoder's weights into the second, so the second is converted from its own keys only.
            components["text_encoder_2"] = _open_clip_encoder(path, config_dir, load_dtype)
        if quantize != "none":
            from modules.models.quantization import denoiser_quantization

            components["unet"] = UNet2DConditionModel.from_single_file(
                str(path), config=str(config_dir), subfolder="unet", local_files_only=True,
                **dtype_argument(load_dtype), **denoiser_quantization(quantize, dtype))
        pipe = pipeline_class.from_single_file(
            str(path), config=str(config_dir), local_files_only=True, **dtype_argument(load_dtype), **components
        )
    except CheckpointLoadError:
        raise
    except Exception as error:  # diffusers raises ValueError, SingleFileComponentError, RuntimeError, KeyError...
        kind = layout.family.upper()
        raise CheckpointLoadError(f"Could not load {path.name} as an {kind} checkpoint: {error}") from error
    _require_all_weights(pipe, path)
    return pipe


def _tokenizer_pads(family: str) -> dict[str, str]:
    """SD 1.x pads with <|endoftext|>; the OpenCLIP tokenizers (SD 2.x, SDXL's second) pad with "!"."""
    if family == "sdxl":
        return {"tokenizer": EOS_PAD, "tokenizer_2": BANG_PAD}
    return {"tokenizer": BANG_PAD if family == "sd2" else EOS_PAD}


def _tokenizer(pad: str, cache: Path):
    from modules.models.clip_vocab import load_clip_tokenizer

    return load_clip_tokenizer(pad_token=pad, cache_dir=cache / "tokenizers")


def _checkpoint_shapes(path: Path) -> Shapes:
    """Tensor shapes without loading weights: the safetensors or GGUF header, or a weights-only (mmapped)
    torch.load."""
    if path.suffix.lower() == ".safetensors":
        try:
            return read_safetensors_shapes(path)
        except (OSError, ValueError) as error:
            raise CheckpointLoadError(f"{path.name} is not a readable safetensors file: {error}") from error
    if path.suffix.lower() == ".gguf":
        from modules.models.gguf_files import GgufFileError, read_gguf_shapes

        try:
            return read_gguf_shapes(path)
        except GgufFileError as error:
            raise CheckpointLoadError(str(error)) from error
    return {key: tuple(value.shape) for key, value in load_ckpt_state_dict(path).items()}


def load_ckpt_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A .ckpt's tensors, loaded with ``weights_only=True`` only: a pickle that needs more is refused.

    A pickle can run arbitrary code when loaded, and a downloaded .ckpt is untrusted; tensors and plain
    containers are all a checkpoint needs.
    """
    import pickle

    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        reason = _unpickling_reason(error)
        if "global" in reason.lower():
            raise CheckpointLoadError(
                f"{path.name} was refused: besides tensors it holds pickled Python objects ({reason}), and loading "
                "those could run code, so the file may contain code. If you trust its source, convert it to "
                ".safetensors with a trusted tool and use that file instead."
            ) from error
        raise CheckpointLoadError(
            f"{path.name} could not be read as a weights-only PyTorch checkpoint ({reason}): it is damaged or may "
            "contain code. Convert it to .safetensors with a trusted tool and use that file instead."
        ) from error
    except Exception as error:  # truncated or not a torch file at all
        raise CheckpointLoadError(f"{path.name} could not be read as a PyTorch checkpoint: {error}") from error
    while isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise CheckpointLoadError(f"{path.name} does not hold a state dict")
    return {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}


def _unpickling_reason(error: Exception) -> str:
    """The one line of torch's long weights-only error that says what was found.

    Torch words it "Unsupported global: GLOBAL x.y was not an allowed global" (2.4-2.5) or "Trying to load
    unsupported GLOBAL x.y whose module x is blocked" (newer); a line naming a global is preferred.
    """
    text = str(error).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = next((line for line in lines if "GLOBAL" in line or "global:" in line.lower()),
                lines[0] if lines else "unreadable pickle")
    return line.split(" was not an allowed global")[0][:200]


def _open_clip_encoder(path: Path, config_dir: Path, dtype: torch.dtype):
    """SDXL's second text encoder converted by diffusers from only its own (conditioner.embedders.1) keys."""
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModelWithProjection

    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            own = {key: handle.get_tensor(key) for key in handle.keys() if key.startswith(SDXL_TEXT_2)}  # noqa: SIM118
    else:
        own = {key: value for key, value in load_ckpt_state_dict(path).items() if key.startswith(SDXL_TEXT_2)}
    return create_diffusers_clip_model_from_ldm(
        CLIPTextModelWithProjection, own, subfolder="text_encoder_2", config=str(config_dir),
        torch_dtype=dtype, local_files_only=True,
    )


def _require_all_weights(pipe, path: Path) -> None:
    """diffusers builds models on the meta device and leaves weights the file lacks there; refuse those models."""
    import torch

    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        missing = [key for key, tensor in component.state_dict().items() if tensor.device.type == "meta"]
        if missing:
            raise CheckpointLoadError(
                f"{path.name} lacks {len(missing)} weights of its {name} (e.g. {missing[0]}); the file is "
                "incomplete or not in the layout its keys suggest."
            )


# --- configs -------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _config_files(folder: Path) -> dict[str, Path]:
    names = {"model_index": folder / "model_index.json", "scheduler": folder / "scheduler" / "scheduler_config.json"}
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2"):
        names[sub] = folder / sub / "config.json"
    return names


def read_config_folder(folder: Path) -> dict[str, dict]:
    """A diffusers config folder as {"model_index": ..., "scheduler": ..., "unet": ..., ...}."""
    return {name: _read_json(path) for name, path in _config_files(Path(folder)).items() if path.is_file()}


def resolve_configs(
    shapes: Shapes, layout: Layout, config_root: Path | None = None, prediction_type: str | None = None
) -> dict[str, dict]:
    """The diffusers configs for a checkpoint: its family's shipped ones, corrected where the tensors disagree.

    For every real SD 1.x / 2.x / XL checkpoint this returns the shipped configs unchanged.
    """
    base_dir = Path(config_root or CONFIG_ROOT) / layout.config_name
    if not (base_dir / "model_index.json").is_file():
        raise CheckpointLoadError(f"The config folder {base_dir} for {layout.family} models is missing")
    prediction = normalize_prediction_type(prediction_type)
    return _with_overrides(read_config_folder(base_dir), _derive_configs(shapes, layout), layout, prediction)


def _write_config_folder(configs: dict[str, dict], cache: Path) -> Path:
    """A diffusers config folder (no weights) in the cache, named by its content so it is written only once."""
    text = json.dumps(configs, sort_keys=True)
    folder = cache / "configs" / hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".config-", dir=folder.parent))
    for name, path in _config_files(staging).items():
        if name in configs:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(configs[name], indent=2, sort_keys=True), encoding="utf-8")
    try:
        os.replace(staging, folder)
    except OSError:  # another process wrote the same folder first; its content is identical
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _with_overrides(base: dict[str, dict], derived: dict[str, dict], layout: Layout, prediction: str | None):
    """The base configs with every derived value that differs from what the base already means."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    classes = {"unet": UNet2DConditionModel, "vae": AutoencoderKL}
    configs = json.loads(json.dumps(base))
    for name, values in derived.items():
        for key, value in values.items():
            current = configs[name].get(key, _default(classes.get(name), key))
            if _plain(current) != _plain(value):
                configs[name][key] = value
    if prediction and prediction != configs["scheduler"].get("prediction_type", "epsilon"):
        configs["scheduler"]["prediction_type"] = prediction
        if layout.family == "sd2" and prediction == "v_prediction":
            # The published SD 2.x 768-v config: 96 latents (768 px) and fp32 attention to avoid fp16 overflow.
            configs["unet"].update(sample_size=96, upcast_attention=True)
            configs["vae"]["sample_size"] = 768
    return configs


def _default(cls, key: str):
    if cls is None:
        return None
    import inspect

    parameter = inspect.signature(cls.__init__).parameters.get(key)
    return None if parameter is None else parameter.default


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _numbered(shapes: Shapes, prefix: str) -> list[int]:
    """The distinct integers that follow ``prefix`` in the keys (block or layer indices)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(match.group(1)) for key in shapes if (match := pattern.match(key))})


def _groups(channels: list[int], target: int) -> int:
    """The largest group count not above ``target`` that divides every width (GroupNorm needs that)."""
    groups = max(1, min(32, target))
    while any(width % groups for width in channels):
        groups -= 1
    return groups


def _derive_configs(shapes: Shapes, layout: Layout) -> dict[str, dict]:
    try:
        derived = {"unet": _derive_unet(shapes, layout), "vae": _derive_vae(shapes)}
        if layout.family == "sdxl":
            derived["text_encoder"] = _derive_clip(shapes, SDXL_TEXT_1)
            derived["text_encoder_2"] = _derive_open_clip(shapes, SDXL_TEXT_2, drop_last=False)
        elif layout.family == "sd2":
            # SD 2.x conditions on the penultimate layer; diffusers' config (and conversion) drop the last block.
            derived["text_encoder"] = _derive_open_clip(shapes, SD2_TEXT, drop_last=True)
        else:
            derived["text_encoder"] = _derive_clip(shapes, SD1_TEXT)
    except (KeyError, IndexError, ZeroDivisionError) as error:
        raise CheckpointLoadError(
            f"The checkpoint's {layout.family} layout is incomplete or unusual (missing {error}); it cannot be "
            "configured from its tensor shapes."
        ) from error
    return derived


def _derive_unet(shapes: Shapes, layout: Layout) -> dict[str, Any]:
    unet = {key[len(UNET):]: shape for key, shape in shapes.items() if key.startswith(UNET)}
    blocks = _numbered(unet, "input_blocks.")
    downsamplers = [i for i in blocks if f"input_blocks.{i}.0.op.weight" in unet]
    levels = len(downsamplers) + 1
    per_level, remainder = divmod(len(blocks) - 1 - len(downsamplers), levels)
    if remainder or per_level < 1:
        raise CheckpointLoadError(f"Unrecognised UNet layout: {len(blocks)} input blocks for {levels} levels")
    channels, down_types, depths = [], [], []
    for level in range(levels):
        first = f"input_blocks.{1 + level * (per_level + 1)}."
        channels.append(unet[first + "0.out_layers.3.weight"][0])
        has_attention = first + "1.proj_in.weight" in unet
        down_types.append("CrossAttnDownBlock2D" if has_attention else "DownBlock2D")
        depths.append(len(_numbered(unet, first + "1.transformer_blocks.")) if has_attention else None)
    mid_depth = len(_numbered(unet, "middle_block.1.transformer_blocks.")) or 1
    if depths[-1] is not None and depths[-1] != mid_depth:
        raise CheckpointLoadError("Unsupported UNet: its last level and middle block differ in transformer depth")
    depths = [mid_depth if i == levels - 1 else (d or 1) for i, d in enumerate(depths)]
    proj_in = next(unet[k] for k in unet if k.endswith("proj_in.weight"))
    cross_dim = next(unet[k] for k in unet if k.endswith("attn2.to_k.weight"))[1]
    config: dict[str, Any] = {
        "in_channels": unet["input_blocks.0.0.weight"][1],
        "out_channels": unet["out.2.weight"][0],
        "block_out_channels": channels,
        "layers_per_block": per_level,
        "down_block_types": down_types,
        "up_block_types": ["CrossAttnUpBlock2D" if t.startswith("CrossAttn") else "UpBlock2D"
                           for t in reversed(down_types)],
        "cross_attention_dim": cross_dim,
        "transformer_layers_per_block": depths[0] if len(set(depths)) == 1 else depths,
        "use_linear_projection": len(proj_in) == 2,
        "attention_head_dim": 8 if layout.family == "sd1" else [max(1, c // 64) for c in channels],
        "norm_num_groups": _groups(channels, channels[0] // 4),
    }
    if unet["time_embed.0.weight"][0] != channels[0] * 4:
        config["time_embedding_dim"] = unet["time_embed.0.weight"][0]
    if "label_emb.0.0.weight" in unet:
        if layout.family != "sdxl":
            raise CheckpointLoadError("Class-conditioned SD 1.x/2.x UNets (unCLIP, upscalers) are not supported")
        adm = unet["label_emb.0.0.weight"][1]
        pooled = shapes[SDXL_TEXT_2 + "text_projection"][1]
        config.update(
            addition_embed_type="text_time",
            projection_class_embeddings_input_dim=adm,
            addition_time_embed_dim=(adm - pooled) // 6,  # six size/crop numbers are embedded next to the pooled text
        )
    return config


def _derive_vae(shapes: Shapes) -> dict[str, Any]:
    vae = {key[len(VAE):]: shape for key, shape in shapes.items() if key.startswith(VAE)}
    levels = _numbered(vae, "encoder.down.")
    channels = [vae[f"encoder.down.{i}.block.0.conv2.weight"][0] for i in levels]
    return {
        "in_channels": vae["encoder.conv_in.weight"][1],
        "out_channels": vae["decoder.conv_out.weight"][0],
        "block_out_channels": channels,
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "layers_per_block": len(_numbered(vae, "encoder.down.0.block.")),
        "latent_channels": vae["encoder.conv_out.weight"][0] // 2,  # the encoder outputs mean and log-variance
        "norm_num_groups": _groups(channels, min(channels) // 2),
        "mid_block_add_attention": "encoder.mid.attn_1.q.weight" in vae,
    }


def _clip_config(vocab: int, hidden: int, positions: int, layers: int, intermediate: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "max_position_embeddings": positions,
        "num_hidden_layers": layers,
        "intermediate_size": intermediate,
        "num_attention_heads": max(1, hidden // 64),
    }


def _derive_clip(shapes: Shapes, prefix: str) -> dict[str, Any]:
    """An OpenAI CLIP text encoder in transformers' own layout (SD 1.x, SDXL's first encoder)."""
    vocab, hidden = shapes[prefix + "embeddings.token_embedding.weight"]
    return _clip_config(
        vocab, hidden, shapes[prefix + "embeddings.position_embedding.weight"][0],
        len(_numbered(shapes, prefix + "encoder.layers.")), shapes[prefix + "encoder.layers.0.mlp.fc1.weight"][0],
    )


def _derive_open_clip(shapes: Shapes, prefix: str, drop_last: bool) -> dict[str, Any]:
    """An OpenCLIP text tower (SD 2.x, SDXL's second encoder)."""
    vocab, hidden = shapes[prefix + "token_embedding.weight"]
    layers = len(_numbered(shapes, prefix + "transformer.resblocks."))
    config = _clip_config(
        vocab, hidden, shapes[prefix + "positional_embedding"][0], layers - 1 if drop_last else layers,
        shapes[prefix + "transformer.resblocks.0.mlp.c_fc.weight"][0],
    )
    if not drop_last and prefix + "text_projection" in shapes:
        config["projection_dim"] = shapes[prefix + "text_projection"][1]
    return config
