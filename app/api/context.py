"""What every route needs, reached through the request (``Depends(get_context)``) instead of a module global."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request

from modules.runtime.config import AppConfig

if TYPE_CHECKING:
    from modules.runtime.services import Services

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass
class ApiContext:
    """The services behind the API plus its access settings (filled by launch.py from the command line)."""

    services: Services
    api_auth: tuple[tuple[str, str], ...] = ()  # --api-auth user:pass pairs (HTTP Basic)
    keys_file: Path | None = None  # --api-keys path (Bearer keys with tiers), or None
    exposed: bool = False  # bound to a network address or shared: credentials required
    allowed_origins: tuple[str, ...] = ()  # --cors-allow-origins: other origins that may call the API
    local_hosts: tuple[str, ...] = LOCAL_HOSTS  # Host names accepted while bound to localhost
    usage_file: Path | None = None  # where the monthly image counts persist (None: in memory only)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_services(cls, services: Services) -> ApiContext:
        """The context the command line asked for, read from ``services.config``."""
        return cls.from_config(services.config, services)

    @classmethod
    def from_config(cls, config: AppConfig, services: Services | None = None) -> ApiContext:
        """Also usable before the services exist (``services`` None), so launch.py can refuse unsafe flags
        before loading anything."""
        return cls(
            services=services,  # type: ignore[arg-type]  # only the access checks run on a context without them
            api_auth=tuple(config.api_auth),
            keys_file=config.api_keys_file,
            exposed=bool(config.listen or config.share),
            allowed_origins=tuple(config.cors_allow_origins),
            usage_file=Path(config.data_dir) / "api-usage.json",
        )

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_auth or self.keys_file)


def get_context(request: Request) -> ApiContext:
    return request.app.state.sfumato


def get_services(request: Request) -> Services:
    return request.app.state.sfumato.services


def get_owner(request: Request) -> str | None:
    """Who the request counts against (``key:<name>``, ``user:<name>``), or None for an anonymous local client.

    Set by the access middleware; dialects pass it as ``owner=`` when they submit a job.
    """
    return getattr(request.state, "api_owner", None)
