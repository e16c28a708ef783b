"""The original (LDM / A1111) single-file layout for loader tests: the engine's own writer, now in
``modules.models.ldm_layout`` (DreamBooth results are written with it)."""

from modules.models.ldm_layout import (  # noqa: F401
    clip_to_ldm,
    open_clip_to_ldm,
    pipeline_to_ldm,
    save_single_file,
    save_vae_file,
    unet_to_ldm,
    vae_to_ldm,
)
