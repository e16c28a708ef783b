"""Placeholder: routes of the openai_images dialect (being written)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
