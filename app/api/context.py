"""What every route needs, reached through the request (``Depends(get_context)``) instead of a module global."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request


@dataclass
class ApiContext:
    """The services behind the API plus its access settings (filled by launch.py from the command line)."""

    services: Any
    api_auth: tuple[tuple[str, str], ...] = ()  # --api-auth user:pass pairs (HTTP Basic)
    keys_file: Any = None  # --api-keys path (Bearer keys with tiers), or None
    exposed: bool = False  # bound to a network address or shared: credentials required
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_services(cls, services: Any) -> ApiContext:
        config = getattr(services, "config", None)
        exposed = bool(getattr(config, "listen", False) or getattr(config, "share", False))
        return cls(services=services, exposed=exposed)


def get_context(request: Request) -> ApiContext:
    return request.app.state.sfumato


def get_services(request: Request) -> Any:
    return request.app.state.sfumato.services
