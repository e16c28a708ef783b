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
    serves_api: bool = True  # the API's routes are served (False: the access layer guards a UI-only server)
    ui_login: bool = False  # --gradio-auth: Gradio's own login protects the web UI and Gradio's routes
    allowed_origins: tuple[str, ...] = ()  # --cors-allow-origins: other origins that may call the API
    local_hosts: tuple[str, ...] = LOCAL_HOSTS  # Host names accepted while bound to localhost
    usage_file: Path | None = None  # where the monthly image counts persist (None: in memory only)
    max_body_bytes: int = 64 * 1024 * 1024  # larger request bodies get 413 (app.api.body_limit)
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
            ui_login=bool(config.gradio_auth),
            allowed_origins=tuple(config.cors_allow_origins),
            usage_file=Path(config.data_dir) / "api-usage.json",
            max_body_bytes=config.max_body_bytes,
        )

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_auth or self.keys_file)

    @property
    def guards_ui(self) -> bool:
        """Whether the web UI and Gradio's routes need the API's credentials: an exposed studio whose API has
        credentials and whose UI has no login of its own (else anyone could generate through the UI without the
        API's login, limits or quotas)."""
        return self.exposed and self.has_credentials and not self.ui_login


def get_context(request: Request) -> ApiContext:
    return request.app.state.sfumato


def get_services(request: Request) -> Services:
    return request.app.state.sfumato.services


def is_admin(request: Request) -> bool:
    """Whether the caller is the studio's operator: the local user (no credentials configured), an ``--api-auth``
    login, or a key marked ``admin`` in the keys file. Set by the access middleware; a request it did not see has
    no identity and counts as the local user, as in ``get_owner``."""
    admin = getattr(request.state, "api_admin", None)
    return get_owner(request) is None if admin is None else bool(admin)


def get_owner(request: Request) -> str | None:
    """Who the request counts against (``key:<name>``, ``user:<name>``), or None for an anonymous local client.

    Set by the access middleware; dialects pass it as ``owner=`` when they submit a job.
    """
    return getattr(request.state, "api_owner", None)
