"""Small LoRAs and textual-inversion embeddings for the tiny models, in the file formats users download.

Tests need LoRA files without downloading any: these are made with PEFT on a tiny pipeline's own UNet and text
encoder, with random non-zero ``lora_B`` (a freshly initialised LoRA is a no-op, which would prove nothing), and
saved either as diffusers/PEFT keys or converted to the kohya/A1111 layout (``lora_unet_*``, ``lora_te_*``,
``lora_down``/``lora_up``/``alpha``) that most LoRAs in the wild use.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def tiny_lora_state_dict(pipe: Any, seed: int = 0, rank: int = 4, scale: float = 0.5) -> dict[str, Any]:
    """A LoRA for ``pipe``'s UNet (or SD3/Flux transformer) and CLIP text encoder(s) in diffusers/PEFT keys
    (``unet.….lora_A.weight``, ``transformer.…``).

    The pipeline is left untouched: the adapters are built on copies of its modules."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    torch.manual_seed(seed)
    state: dict[str, Any] = {}
    parts = [("unet", UNET_TARGETS), ("transformer", UNET_TARGETS), ("text_encoder", TEXT_TARGETS),
             ("text_encoder_2", TEXT_TARGETS)]
    for name, targets in parts:
        model = getattr(pipe, name, None)
        if model is None or not any(module.rsplit(".", 1)[-1] in targets or module.endswith(".to_out.0")
                                    for module, _ in model.named_modules()):
            continue  # e.g. Flux's T5 encoder, whose attention layers have other names
        model = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets),
                                        copy.deepcopy(model))
        for key, value in get_peft_model_state_dict(model).items():
            state[f"{name}.{key}"] = torch.randn_like(value) * scale
    return state


def to_kohya(state: dict[str, Any], alpha: float | None = None) -> dict[str, Any]:
    """diffusers/PEFT keys -> kohya's: ``unet.a.b.lora_A.weight`` -> ``lora_unet_a_b.lora_down.weight`` plus an
    ``alpha`` per module (= rank unless given, so the strength is the same as the PEFT file's)."""
    import torch

    prefixes = {"unet": "lora_unet", "text_encoder": "lora_te", "text_encoder_2": "lora_te2"}
    if any(key.startswith("text_encoder_2.") for key in state):
        prefixes["text_encoder"] = "lora_te1"
    kohya: dict[str, Any] = {}
    for key, value in state.items():
        component, _, rest = key.partition(".")
        module, _, part = rest.rpartition(".lora_")
        if component != "unet" and not module.startswith("text_model."):  # transformers 5 drops that level
            module = "text_model." + module
        base = f"{prefixes[component]}_{module.replace('.', '_')}"
        if part.startswith("A"):
            kohya[f"{base}.lora_down.weight"] = value.contiguous()
            kohya[f"{base}.alpha"] = torch.tensor(float(alpha if alpha is not None else value.shape[0]))
        else:
            kohya[f"{base}.lora_up.weight"] = value.contiguous()
    return kohya


def to_sgm_block_names(kohya: dict[str, Any], layers_per_block: int) -> dict[str, Any]:
    """Kohya UNet keys renamed to the original (SGM) block names kohya's SDXL trainer writes:
    ``down_blocks_1_attentions_0`` -> ``input_blocks_3_1``, ``mid_block_attentions_0`` -> ``middle_block_1``,
    ``up_blocks_0_attentions_1`` -> ``output_blocks_1_1`` (the UNet's first input block is its stem)."""
    def rename(match: re.Match) -> str:
        kind, block, layer = match.group(1), int(match.group(2)), int(match.group(3))
        if kind == "down":
            return f"lora_unet_input_blocks_{1 + block * (layers_per_block + 1) + layer}_1_"
        return f"lora_unet_output_blocks_{block * (layers_per_block + 1) + layer}_1_"

    renamed = {}
    for key, value in kohya.items():
        key = re.sub(r"^lora_unet_(down|up)_blocks_(\d+)_attentions_(\d+)_", rename, key)
        renamed[key.replace("lora_unet_mid_block_attentions_0_", "lora_unet_middle_block_1_")] = value
    return renamed


def save_tiny_lora(pipe: Any, path: Path, layout: Literal["peft", "kohya", "kohya-sgm"] = "peft",
                   seed: int = 0) -> Path:
    """Write a tiny LoRA for ``pipe`` to ``path`` (.safetensors) in the given key layout ("kohya-sgm": kohya keys
    with the original UNet block names, as kohya's SDXL LoRAs have)."""
    from safetensors.torch import save_file

    state = tiny_lora_state_dict(pipe, seed=seed)
    if layout.startswith("kohya"):
        state = to_kohya(state)
    if layout == "kohya-sgm":
        state = to_sgm_block_names(state, int(pipe.unet.config.layers_per_block))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"ss_output_name": path.stem} if layout != "peft" else None)
    return path


def save_tiny_embedding(path: Path, vectors: int = 2, dim: int = 64, seed: int = 0, sdxl_dim: int | None = None
                        ) -> Path:
    """A textual-inversion embedding: A1111's ``.pt`` (``string_to_param``), ``.safetensors`` (``emb_params``),
    or, with ``sdxl_dim``, an SDXL pair (``clip_l``, ``clip_g``)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(vectors, dim, generator=generator)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if sdxl_dim is not None:
        from safetensors.torch import save_file

        save_file({"clip_l": vector, "clip_g": torch.randn(vectors, sdxl_dim, generator=generator)}, str(path))
    elif path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"emb_params": vector}, str(path))
    else:
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vector}, "name": path.stem,
                    "step": 1000, "sd_checkpoint": "0123456789", "sd_checkpoint_name": "tiny"}, str(path))
    return path
