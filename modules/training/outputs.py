"""Writing what a run made where the rest of the studio (and A1111, ComfyUI) finds it, whole or not at all.

A LoRA goes to ``models/Lora/<name>.safetensors`` in kohya's key layout, the one A1111's Lora extension and
ComfyUI read: ``lora_unet_<module path with _>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` for the UNet
(diffusers module names, e.g. ``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q``) and
``lora_te_text_model_encoder_layers_<n>_self_attn_q_proj`` for the text encoder. An embedding goes to
``models/embeddings/<name>.pt`` in A1111's own layout (``string_to_param``). A token embedding trained with a LoRA
(pivotal tuning) travels inside the LoRA file as A1111 and kohya bundle it: ``bundle_emb.<token>.string_to_param.*``
(SD 1.x/2.x; SDXL would be ``bundle_emb.<token>.clip_l`` and ``.clip_g``). Every file is written to a
temporary name in the same folder and renamed over the target, so a failure (a full disk, a kill) leaves the old
file or none, never a half-written one.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from modules.runtime.files import atomic_write

LORA_PREFIXES = {"unet": "lora_unet", "text_encoder": "lora_te"}
XL_PREFIXES = {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}


def kohya_name(component: str, module_path: str, xl: bool = False, layers_per_block: int = 2) -> str:
    """``lora_unet_down_blocks_0_…_to_q`` for an SD 1.x/2.x UNet module path, ``lora_te_text_model_…`` for the
    text encoder. SDXL as kohya's SDXL trainer names it: the UNet by its original blocks
    (``lora_unet_input_blocks_4_1_…``, ``middle_block_1``, ``output_blocks_N_1``), the encoders ``lora_te1_`` and
    ``lora_te2_``."""
    if component != "unet" and not module_path.startswith("text_model."):
        module_path = "text_model." + module_path  # transformers 5's CLIPTextModel may be wrapped without it
    if xl and component == "unet":
        module_path = sgm_path(module_path, layers_per_block)
    prefixes = XL_PREFIXES if xl else LORA_PREFIXES
    return f"{prefixes[component]}_{module_path.replace('.', '_')}"


def sgm_path(path: str, layers_per_block: int) -> str:
    """A diffusers UNet attention path under its original (SGM) block name: the stem is input block 0, each down
    block has ``layers_per_block`` layers and a downsampler, each up block one layer more."""
    import re

    def down(match: re.Match) -> str:
        return f"input_blocks.{1 + int(match.group(1)) * (layers_per_block + 1) + int(match.group(2))}.1."

    def up(match: re.Match) -> str:
        return f"output_blocks.{int(match.group(1)) * (layers_per_block + 1) + int(match.group(2))}.1."

    path = re.sub(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.", down, path)
    path = re.sub(r"^up_blocks\.(\d+)\.attentions\.(\d+)\.", up, path)
    return re.sub(r"^mid_block\.attentions\.0\.", "middle_block.1.", path)


def lora_layers(model: Any, adapter: str = "default") -> dict[str, tuple[Any, Any]]:
    """Module path -> (down, up) weights of every PEFT LoRA layer in ``model``."""
    from peft.tuners.lora import LoraLayer

    found = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            found[name] = (module.lora_A[adapter].weight, module.lora_B[adapter].weight)
    return found


def kohya_state_dict(models: dict[str, Any], alpha: float, xl: bool = False, layers_per_block: int = 2
                     ) -> dict[str, Any]:
    """The kohya/A1111 tensors of the LoRA layers of ``models`` (component name -> model), float32 on the CPU."""
    import torch

    state: dict[str, Any] = {}
    for component, model in models.items():
        for path, (down, up) in lora_layers(model).items():
            base = kohya_name(component, path, xl, layers_per_block)
            state[f"{base}.lora_down.weight"] = down.detach().float().cpu().contiguous()
            state[f"{base}.lora_up.weight"] = up.detach().float().cpu().contiguous()
            state[f"{base}.alpha"] = torch.tensor(float(alpha))
    return state


def write_safetensors(path: Path, state: dict[str, Any], metadata: dict[str, str] | None = None) -> Path:
    """``state`` as one safetensors file at ``path``, atomically."""
    from safetensors.torch import save

    data = save({key: value.contiguous() for key, value in state.items()}, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as file:
        file.write(data)
    return path


def write_torch(path: Path, payload: Any) -> Path:
    """``torch.save(payload)`` at ``path``, atomically."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as file:
        file.write(buffer.getvalue())
    return path


def lora_metadata(name: str, rank: int, alpha: float, base_model: str, family: str, steps: int) -> dict[str, str]:
    """kohya's training metadata keys A1111 shows and uses (``ss_output_name`` is the alias a prompt may use)."""
    return {"ss_output_name": name, "ss_network_module": "networks.lora", "ss_network_dim": str(rank),
            "ss_network_alpha": f"{alpha:g}", "ss_sd_model_name": base_model, "ss_steps": str(steps),
            "ss_base_model_version": "sdxl_base_v1-0" if family == "sdxl" else "sd_v1",
            "modelspec.title": name, "sfumato_trainer": "sfumato"}


def embedding_payload(name: str, vectors: Any, step: int, checkpoint_hash: str | None,
                      checkpoint_name: str | None) -> dict[str, Any]:
    """A1111's embedding .pt layout: ``string_to_token`` / ``string_to_param`` under the key ``*``."""
    return {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors.detach().float().cpu().clone()},
            "name": name, "step": int(step), "sd_checkpoint": checkpoint_hash, "sd_checkpoint_name": checkpoint_name}


def bundled_embedding(token: str, vectors: Any) -> dict[str, Any]:
    """The tensors that bundle an SD 1.x/2.x embedding named ``token`` into a LoRA file (A1111 reads
    ``bundle_emb.<name>.string_to_param.<key>`` as that embedding's ``string_to_param``)."""
    return {f"bundle_emb.{token}.string_to_param.*": vectors.detach().float().cpu().clone().contiguous()}
