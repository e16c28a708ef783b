"""The flow-matching families (Stable Diffusion 3 / 3.5 and Flux.1), told apart from SD 1.x / 2.x / XL.

An SD3 folder has a second text encoder like SDXL, so "has ``text_encoder_2``" cannot be the SDXL test: these
families are recognised first, from what only they have (a ``transformer`` instead of a ``unet``; in a single
file, SD3's ``joint_blocks`` or Flux's ``double_blocks`` / ``single_blocks``, or the diffusers-layout transformer
keys). Each family also has its own defaults (steps, guidance, size), which differ from SD's 20 steps at CFG 7:
Flux.1-schnell is distilled for 4 steps and ignores guidance, Flux.1-dev takes a distilled guidance of 3.5.

Single files of these families load their transformer only, taking the other components from an installed
diffusers folder of the same family (``load_single_file``): diffusers would need their configs and, for the text
encoders, the real T5 tokenizer from the Hub, which Sfumato never contacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

FLOW_FAMILIES = ("sd3", "flux")
# model_index.json "_class_name" prefixes and transformer classes of each family.
_PIPELINE_PREFIXES = {"StableDiffusion3": "sd3", "Flux": "flux"}
_TRANSFORMERS = {"SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux"}
# Key fragments of a single file: the original (Stability / Black Forest Labs) layout, then diffusers'.
_SD3_KEYS = ("joint_blocks.",)
_FLUX_KEYS = ("double_blocks.", "single_blocks.")
_SD3_DIFFUSERS_KEYS = ("context_embedder.", "pos_embed.proj.")
_FLUX_DIFFUSERS_KEYS = ("single_transformer_blocks.",)


def is_flow_family(family: str | None) -> bool:
    """Whether a family denoises with a flow-matching transformer (SD3, Flux) rather than an SD UNet."""
    return family in FLOW_FAMILIES


def folder_family(folder: Path) -> str | None:
    """"sd3" or "flux" for a diffusers folder of those families, else None (then the SD rules apply)."""
    folder = Path(folder)
    index = read_config(folder / "model_index.json")
    name = str(index.get("_class_name", ""))
    for prefix, family in _PIPELINE_PREFIXES.items():
        if name.startswith(prefix):
            return family
    if "transformer" in index:
        transformer = read_config(folder / "transformer" / "config.json")
        return _TRANSFORMERS.get(str(transformer.get("_class_name", "")))
    return None


def single_file_family(keys: Any) -> str | None:
    """"sd3" or "flux" when a single file's tensor names are those of these families' transformers, else None."""
    names = list(keys)

    def has(fragments: tuple[str, ...]) -> bool:
        return any(fragment in key for key in names for fragment in fragments)

    if has(_SD3_KEYS):
        return "sd3"
    if has(_FLUX_KEYS) or has(_FLUX_DIFFUSERS_KEYS):
        return "flux"
    if all(any(fragment in key for key in names) for fragment in _SD3_DIFFUSERS_KEYS) and has(
            ("transformer_blocks.",)):
        return "sd3"
    return None


LABELS = {"sd3": "Stable Diffusion 3", "flux": "Flux.1"}
# Tensor names only a guidance-distilled Flux (dev) has: Black Forest Labs' layout, then diffusers'.
_GUIDANCE_KEYS = ("guidance_in.", "guidance_embedder.")


def has_guidance_input(keys: Any) -> bool:
    """Whether a Flux transformer's tensor names include the guidance embedding (Flux.1-dev, not schnell)."""
    return any(fragment in key for key in keys for fragment in _GUIDANCE_KEYS)


def load_single_file(path: Path, family: str, dtype: torch.dtype, keys: Any, folders: Any,
                     quantize: str = "none") -> DiffusionPipeline:
    """A single-file SD3 / Flux checkpoint: its **transformer** from the file, every other component (VAE, text
    encoders, tokenizers, scheduler) from an installed diffusers folder of the same family whose transformer the
    file fits. The configs and the T5 tokenizer a whole single file would need are Hub downloads, so this is the
    honest limit: a fine-tuned transformer is what such files usually change. Folders are tried by name, a Flux
    file first on folders of its own variant (dev / schnell / Kontext); the first that takes every tensor wins.
    A GGUF file's transformer stays quantized as stored; a .safetensors one is quantized with bitsandbytes when
    ``quantize`` asks ("nf4", "int8")."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    from modules.models.checkpoints import CheckpointLoadError, dtype_argument
    from modules.models.gguf_files import is_gguf
    from modules.models.gguf_files import quantization_config as gguf_quantization
    from modules.models.quantization import denoiser_quantization

    label = LABELS[family]
    candidates = sorted((Path(folder) for folder in folders if folder_family(Path(folder)) == family),
                        key=lambda folder: folder.name.lower())
    if family == "flux":
        wanted, kontext = has_guidance_input(keys), named_kontext(path)
        candidates.sort(key=lambda folder: (read_config(folder / "transformer" / "config.json").get(
            "guidance_embeds", True) != wanted, is_kontext_folder(folder) != kontext))
    if not candidates:
        raise CheckpointLoadError(
            f"{path.name} is a {label} single file. Sfumato takes its transformer from the file and the other "
            f"components (VAE, text encoders, tokenizers) from an installed {label} diffusers folder, and there is "
            "none: put the base model's diffusers folder in the Stable-diffusion folder too (the configs and T5 "
            "tokenizer a single file lacks would be Hub downloads, which Sfumato never makes).")
    transformer_class = SD3Transformer2DModel if family == "sd3" else FluxTransformer2DModel
    load = load_dtype(family, dtype)
    if is_gguf(path):  # the file's blocks stay quantized in memory; each layer computes in the load dtype
        quantized: dict[str, Any] = {"quantization_config": gguf_quantization(load)}
    else:
        quantized = denoiser_quantization(quantize, load)
    reasons = []
    for folder in candidates:
        try:
            transformer = transformer_class.from_single_file(
                str(path), config=str(folder), subfolder="transformer", local_files_only=True,
                **dtype_argument(load), **quantized)
            missing = [key for key, tensor in transformer.state_dict().items() if tensor.device.type == "meta"]
            if missing:
                raise ValueError(f"the file lacks {len(missing)} of its weights (e.g. {missing[0]})")
        except Exception as error:  # shapes that do not fit this folder's config: try the next folder
            reasons.append(f"{folder.name}: {str(error).splitlines()[0][:200]}")
            continue
        return load_folder(folder, family, dtype, transformer=transformer, kontext=named_kontext(path))
    raise CheckpointLoadError(f"{path.name}'s {label} transformer fits none of the installed {label} folders: "
                              + "; ".join(reasons))


def load_folder(path: Path, family: str, dtype: torch.dtype, transformer: Any = None,
                quantize: str = "none", kontext: bool | None = None) -> DiffusionPipeline:
    """The txt2img pipeline of an SD3 or Flux diffusers folder, offline (with ``transformer`` instead of its own
    when given; its own quantized with bitsandbytes when ``quantize`` asks); an SD3 folder saved without its T5
    encoder loads without it (SD3 then conditions on the two CLIPs alone). A Flux.1 Kontext folder gives
    ``FluxKontextPipeline``: without an image it draws as plain Flux, with one it edits it (see ``is_kontext``);
    ``kontext`` overrides what the folder says (a single file's own variant)."""
    from diffusers import (
        FluxKontextPipeline,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    from modules.models.checkpoints import dtype_argument
    from modules.models.quantization import denoiser_quantization

    if family == "sd3":
        pipeline_class = StableDiffusion3Pipeline
    else:
        kontext = is_kontext_folder(path) if kontext is None else kontext
        pipeline_class = FluxKontextPipeline if kontext else FluxPipeline
    kwargs: dict[str, Any] = {**dtype_argument(load_dtype(family, dtype)), "local_files_only": True}
    if transformer is None and quantize != "none":
        transformer_class = SD3Transformer2DModel if family == "sd3" else FluxTransformer2DModel
        transformer = transformer_class.from_pretrained(
            str(path), subfolder="transformer", **kwargs,
            **denoiser_quantization(quantize, load_dtype(family, dtype)))
    if transformer is not None:
        kwargs["transformer"] = transformer
    if family == "sd3":
        for name in ("text_encoder_3", "tokenizer_3"):
            if not (Path(path) / name).is_dir():
                kwargs[name] = None
    return pipeline_class.from_pretrained(str(path), **kwargs)


def load_dtype(family: str, dtype: torch.dtype) -> torch.dtype:
    """Flux in float16 overflows (black or NaN images; Black Forest Labs publish bfloat16 weights), so on a CUDA
    GPU that has bfloat16 it is loaded in bfloat16 where float16 was chosen; everything else as asked."""
    import torch

    if family == "flux" and dtype == torch.float16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return dtype


def is_kontext_folder(folder: Path) -> bool:
    """Whether a diffusers folder is Flux.1 Kontext (its model_index names ``FluxKontextPipeline``): the same
    transformer as Flux.1-dev, trained to edit an input image it sees as extra tokens."""
    return str(read_config(Path(folder) / "model_index.json").get("_class_name", "")).startswith("FluxKontext")


def named_kontext(path: Path) -> bool:
    """Whether a single file is Flux.1 Kontext by its name (``flux1-kontext-dev-Q8_0.gguf``): its tensors are
    those of Flux.1-dev, so the name is all that tells them apart."""
    return "kontext" in Path(path).name.lower()


def is_kontext(pipe: Any) -> bool:
    """Whether a loaded pipeline is Flux.1 Kontext: its img2img edits the image (``image=``, no strength)."""
    return type(pipe).__name__.startswith("FluxKontext")


def denoiser(pipe: Any) -> Any:
    """The network that denoises: an SD pipeline's UNet or a flow pipeline's transformer."""
    unet = getattr(pipe, "unet", None)
    return unet if unet is not None else pipe.transformer


def pipeline_family(pipe: Any) -> str | None:
    """"sd3" or "flux" for a loaded pipeline of those families (from its transformer's class), else None."""
    transformer = getattr(pipe, "transformer", None)
    return _TRANSFORMERS.get(type(transformer).__name__) if transformer is not None else None


@dataclass(frozen=True)
class FamilyDefaults:
    """What a request that leaves steps or CFG unset gets on a model of this family (and which variant it is)."""

    variant: str
    steps: int
    cfg_scale: float
    guidance: bool  # False: the model ignores the CFG / guidance value (Flux.1-schnell)


SD_DEFAULTS = FamilyDefaults("sd", steps=20, cfg_scale=7.0, guidance=True)
SD3_DEFAULTS = FamilyDefaults("sd3", steps=28, cfg_scale=7.0, guidance=True)
FLUX_DEV_DEFAULTS = FamilyDefaults("flux-dev", steps=28, cfg_scale=3.5, guidance=True)
# Schnell ignores guidance; 1 is "no guidance" in A1111's and diffusers' convention, so that is what it records.
FLUX_SCHNELL_DEFAULTS = FamilyDefaults("flux-schnell", steps=4, cfg_scale=1.0, guidance=False)
# Kontext edits at a lower distilled guidance than dev's 3.5 (diffusers' and Black Forest Labs' example: 2.5).
FLUX_KONTEXT_DEFAULTS = FamilyDefaults("flux-kontext", steps=28, cfg_scale=2.5, guidance=True)


def checkpoint_defaults(family: str | None, path: Path) -> FamilyDefaults:
    """The published defaults of a checkpoint, from its configs without loading it: SD3 28 steps at CFG 7,
    Flux.1-dev 28 steps at distilled guidance 3.5, Flux.1 Kontext 28 steps at 2.5, Flux.1-schnell (no guidance
    input in its transformer) 4 steps; SD 1.x / 2.x / XL keep A1111's 20 steps at CFG 7. A single file's
    tensors cannot tell Kontext from dev, so there its name does (as it picks the folder it runs with)."""
    if family == "sd3":
        return SD3_DEFAULTS
    if family != "flux":
        return SD_DEFAULTS
    path = Path(path)
    if path.is_dir():
        guidance = read_config(path / "transformer" / "config.json").get("guidance_embeds", True)
        kontext = is_kontext_folder(path)
    else:
        from modules.models.gguf_files import is_gguf, read_gguf_shapes
        from modules.models.registry import read_safetensors_shapes

        try:
            guidance = has_guidance_input(read_gguf_shapes(path) if is_gguf(path) else read_safetensors_shapes(path))
        except (OSError, ValueError):
            guidance = True
        kontext = named_kontext(path)
    if not guidance:
        return FLUX_SCHNELL_DEFAULTS
    return FLUX_KONTEXT_DEFAULTS if kontext else FLUX_DEV_DEFAULTS


def default_size(pipe: Any) -> int:
    """The image side a flow model was trained at: SD3's transformer says it in latents (128 -> 1024 px); Flux's
    transformer has no size, so its VAE's ``sample_size`` (1024 for the published VAE) is used."""
    transformer = pipe.transformer
    sample = getattr(transformer.config, "sample_size", None)
    if sample:
        return int(sample) * int(pipe.vae_scale_factor)
    return int(getattr(pipe.vae.config, "sample_size", 1024) or 1024)


def read_config(path: Path) -> dict:
    """A JSON config as a dict; empty when missing or unreadable (the caller falls back on the family's rule)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
