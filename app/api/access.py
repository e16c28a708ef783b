"""Placeholder: authentication, API keys with tiers, rate limits and the Origin/Host check (being written)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


def install_access(app: FastAPI, context: Any) -> None:
    """Install the access middleware on ``app`` (no rules yet)."""
