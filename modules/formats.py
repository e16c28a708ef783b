"""Shared vocabularies every front end and the engine speak: output formats and the VAE choices' special names."""

from __future__ import annotations

from typing import Literal

ImageFormat = Literal["png", "jpeg", "webp"]
IMAGE_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp")
FORMAT_ALIASES = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}  # what users and A1111 write
FILE_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}

AUTOMATIC_VAE = "Automatic"  # the checkpoint's own VAE
NO_VAE = "None"  # A1111's other word for the same
OWN_VAE_NAMES = (AUTOMATIC_VAE, NO_VAE)


def normal_format(name: str | None) -> str | None:
    """"jpg"/"JPEG" -> "jpeg"; None for a format Sfumato does not write."""
    return FORMAT_ALIASES.get(str(name or "").strip().lower())


def is_own_vae(name: str | None) -> bool:
    """Whether a VAE choice means the checkpoint's own VAE (nothing chosen, "Automatic" or "None")."""
    return name is None or not str(name).strip() or str(name).strip() in OWN_VAE_NAMES
