"""Placeholder: routes of the a1111 dialect (being written)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
