"""What every route needs, reached through the request (``Depends(get_context)``) instead of a module global."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass
class ApiContext:
    """The services behind the API plus its access settings (filled by launch.py from the command line)."""

    services: Any
    api_auth: tuple[tuple[str, str], ...] = ()  # --api-auth user:pass pairs (HTTP Basic)
    keys_file: Path | None = None  # --api-keys path (Bearer keys with tiers), or None
    exposed: bool = False  # bound to a network address or shared: credentials required
    allowed_origins: tuple[str, ...] = ()  # --cors-allow-origins: other origins that may call the API
    local_hosts: tuple[str, ...] = LOCAL_HOSTS  # Host names accepted while bound to localhost
    usage_file: Path | None = None  # where the monthly image counts persist (None: in memory only)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_services(cls, services: Any) -> ApiContext:
        """The context the command line asked for, read from ``services.config`` (an ``AppConfig``)."""
        return cls.from_config(getattr(services, "config", None), services)

    @classmethod
    def from_config(cls, config: Any, services: Any = None) -> ApiContext:
        """Also usable before the services exist, so launch.py can refuse unsafe flags before loading anything."""
        exposed = bool(getattr(config, "listen", False) or getattr(config, "share", False))
        data_dir = getattr(config, "data_dir", None)
        return cls(
            services=services,
            api_auth=tuple(getattr(config, "api_auth", ()) or ()),
            keys_file=getattr(config, "api_keys_file", None),
            exposed=exposed,
            allowed_origins=tuple(getattr(config, "cors_allow_origins", ()) or ()),
            usage_file=Path(data_dir) / "api-usage.json" if data_dir is not None else None,
        )

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_auth or self.keys_file)


def get_context(request: Request) -> ApiContext:
    return request.app.state.sfumato


def get_services(request: Request) -> Any:
    return request.app.state.sfumato.services


def get_owner(request: Request) -> str | None:
    """Who the request counts against (``key:<name>``, ``user:<name>``), or None for an anonymous local client.

    Set by the access middleware; dialects pass it as ``owner=`` when they submit a job.
    """
    return getattr(request.state, "api_owner", None)
