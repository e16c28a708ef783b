"""API keys and their tiers, read once at start-up from the ``--api-keys`` JSON file.

A key is kept only as its SHA-256 digest (the file may give the key itself or its digest), so a key never
sits in memory or in logs longer than the request that presents it. Keys are long random strings, so an
unsalted hash is enough; presented keys are compared in constant time against every digest.

The file::

    {
      "tiers": {
        "free": {"requests_per_minute": 10, "concurrent_jobs": 1, "monthly_images": 200},
        "pro":  {"requests_per_minute": 120, "concurrent_jobs": 4, "monthly_images": null}
      },
      "keys": [
        {"name": "alice", "tier": "free", "key": "sk-alice-3f9c..."},
        {"name": "bob",   "tier": "pro",  "sha256": "<hex digest of bob's key>"},
        {"name": "ops",   "tier": "pro",  "key": "sk-ops-...", "admin": true}
      ]
    }

``null`` (or leaving a limit out) means no limit, except ``requests_per_minute`` which defaults to 6000. A tier
named ``default`` applies to ``--api-auth`` users and to anonymous local clients.

``"admin": true`` on a key, or on a tier (then every key of that tier), lets the key do what only the studio's
operator may: change the global options (``POST /sdapi/v1/options``), read the launch flags and their paths
(``/sdapi/v1/cmd-flags``), and open the web UI when the API's credentials guard it. The local user (no
credentials configured) and ``--api-auth`` users are operators already; other keys get 403 on those routes.

``"safety": "blur"`` (or ``"black"``, or ``"off"``) on a tier or a key is the NSFW filter its requests get when
they leave the request's ``safety`` field out (a key's own value wins over its tier's); with
``"safety_always": true`` a request may ask for a stricter filter but never switch it off (asking for ``"off"``
is refused, naming the field). A studio with such keys needs a checker in ``models/safety_checker``. The
anonymous local client has no key rule: its filter is the studio's default (Settings), off unless changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.safety import SAFETY_MODES, SafetyRule

DEFAULT_TIER_NAME = "default"
DEFAULT_REQUESTS_PER_MINUTE = 6000  # generous: local UIs and scripts poll progress often
_TIER_FIELDS = ("requests_per_minute", "concurrent_jobs", "monthly_images", "admin", "safety", "safety_always")
_KEY_FIELDS = ("name", "tier", "key", "sha256", "admin", "safety", "safety_always")


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the file and the entry at fault."""


@dataclass(frozen=True)
class Tier:
    """What one class of client may do: requests a minute, jobs at once, images a calendar month."""

    name: str
    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    concurrent_jobs: int | None = None  # None: no limit
    monthly_images: int | None = None  # None: no limit
    admin: bool = False  # every key of this tier may use the operator's routes
    safety: str | None = None  # the NSFW filter for requests that leave ``safety`` out; None: not said
    safety_always: bool = False  # requests may not switch that filter off


DEFAULT_TIER = Tier(DEFAULT_TIER_NAME)


@dataclass(frozen=True)
class ApiKey:
    name: str
    tier: Tier
    digest: bytes  # SHA-256 of the key
    admin_flag: bool = False  # "admin": true on the key itself
    safety_flag: str | None = None  # "safety" on the key itself (wins over the tier's)
    safety_always_flag: bool | None = None  # "safety_always" on the key itself

    @property
    def admin(self) -> bool:
        """May use the operator's routes (global options, launch flags, the guarded web UI)."""
        return self.admin_flag or self.tier.admin

    @property
    def safety_rule(self) -> SafetyRule | None:
        """The NSFW filter rule this key's requests run under (the key's own fields over its tier's)."""
        return safety_rule(self.safety_flag or self.tier.safety,
                           self.tier.safety_always if self.safety_always_flag is None else self.safety_always_flag)


def safety_rule(mode: str | None, always: bool) -> SafetyRule | None:
    """A tier's or key's filter fields as a rule; None when they say nothing (the studio's default applies)."""
    if mode is None and not always:
        return None
    return SafetyRule(mode or "off", always)  # type: ignore[arg-type]  # checked when the file was read


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class KeyRing:
    """The keys and tiers of one keys file (empty when there is none)."""

    keys: tuple[ApiKey, ...] = ()
    tiers: tuple[Tier, ...] = ()

    def find(self, presented: str) -> ApiKey | None:
        """The key matching ``presented``; every digest is compared so the time taken does not tell which."""
        wanted = digest_of(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.digest, wanted):
                found = key
        return found

    @property
    def default_tier(self) -> Tier:
        """The tier for Basic-auth users and anonymous local clients."""
        return next((tier for tier in self.tiers if tier.name == DEFAULT_TIER_NAME), DEFAULT_TIER)


def load_keys(path: Path | str | None) -> KeyRing:
    """Read and check a keys file; ``KeysFileError`` says what is wrong and where."""
    if path is None:
        return KeyRing()
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise KeysFileError(f"cannot read the API keys file {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise KeysFileError(f"{path} is not valid JSON: {error}") from None
    try:
        return parse_keys(data)
    except KeysFileError as error:
        raise KeysFileError(f"{path}: {error}") from None


def parse_keys(data: Any) -> KeyRing:
    """The keys file's JSON -> a ``KeyRing``."""
    if not isinstance(data, dict):
        raise KeysFileError('expected an object with "tiers" and "keys"')
    tiers = _parse_tiers(data.get("tiers", {}))
    entries = data.get("keys", [])
    if not isinstance(entries, list):
        raise KeysFileError('"keys" must be a list')
    keys = [_parse_key(index, entry, tiers) for index, entry in enumerate(entries)]
    names = [key.name for key in keys]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise KeysFileError(f"key names must be unique; repeated: {', '.join(duplicates)}")
    digests = [key.digest for key in keys]
    if len(set(digests)) != len(digests):
        raise KeysFileError("two entries have the same key")
    return KeyRing(keys=tuple(keys), tiers=tuple(tiers.values()))


def _parse_tiers(raw: Any) -> dict[str, Tier]:
    if not isinstance(raw, dict):
        raise KeysFileError('"tiers" must be an object of tier name -> limits')
    return {str(name): _parse_tier(str(name), limits) for name, limits in raw.items()}


def _parse_tier(name: str, limits: Any) -> Tier:
    if not isinstance(limits, dict):
        raise KeysFileError(f"tier {name!r} must be an object")
    unknown = sorted(set(limits) - set(_TIER_FIELDS))
    if unknown:
        raise KeysFileError(f"tier {name!r}: unknown field(s) {', '.join(unknown)}; known: {', '.join(_TIER_FIELDS)}")
    rpm = _limit(name, "requests_per_minute", limits.get("requests_per_minute", DEFAULT_REQUESTS_PER_MINUTE))
    if rpm is None:
        raise KeysFileError(f"tier {name!r}: requests_per_minute must be a number")
    where = f"tier {name!r}"
    return Tier(name, rpm, _limit(name, "concurrent_jobs", limits.get("concurrent_jobs")),
                _limit(name, "monthly_images", limits.get("monthly_images")),
                _flag(where, limits.get("admin", False)), _safety(where, limits.get("safety")),
                _flag(where, limits.get("safety_always", False), "safety_always"))


def _flag(where: str, value: Any, field: str = "admin") -> bool:
    if not isinstance(value, bool):
        raise KeysFileError(f"{where}: {field} must be true or false, not {value!r}")
    return value


def _safety(where: str, value: Any) -> str | None:
    if value is not None and value not in SAFETY_MODES:
        raise KeysFileError(f"{where}: safety must be one of {', '.join(SAFETY_MODES)}, not {value!r}")
    return value


def _limit(tier: str, field: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KeysFileError(f"tier {tier!r}: {field} must be a whole number >= 0 or null, not {value!r}")
    return value


def _parse_key(index: int, entry: Any, tiers: dict[str, Tier]) -> ApiKey:
    where = f"keys[{index}]"
    if not isinstance(entry, dict):
        raise KeysFileError(f"{where} must be an object with name, tier and key (or sha256)")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise KeysFileError(f"{where} needs a name")
    where = f"key {name!r}"
    tier_name = entry.get("tier", DEFAULT_TIER_NAME)
    tier = tiers.get(tier_name) or (DEFAULT_TIER if tier_name == DEFAULT_TIER_NAME else None)
    if tier is None:
        raise KeysFileError(f"{where}: unknown tier {tier_name!r}; tiers: {', '.join(tiers) or 'none'}")
    unknown = sorted(set(entry) - set(_KEY_FIELDS))
    if unknown:
        raise KeysFileError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(_KEY_FIELDS)}")
    always = entry.get("safety_always")
    return ApiKey(name=name.strip(), tier=tier, digest=_key_digest(where, entry),
                  admin_flag=_flag(where, entry.get("admin", False)), safety_flag=_safety(where, entry.get("safety")),
                  safety_always_flag=None if always is None else _flag(where, always, "safety_always"))


def _key_digest(where: str, entry: dict) -> bytes:
    key, hashed = entry.get("key"), entry.get("sha256")
    if (key is None) == (hashed is None):
        raise KeysFileError(f"{where}: give exactly one of \"key\" or \"sha256\"")
    if key is not None:
        if not isinstance(key, str) or len(key) < 16:
            raise KeysFileError(f"{where}: a key must be a string of at least 16 characters")
        return digest_of(key)
    try:
        digest = bytes.fromhex(str(hashed))
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise KeysFileError(f"{where}: sha256 must be 64 hex digits")
    return digest
