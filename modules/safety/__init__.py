"""NSFW filtering: the vocabulary of the ``safety`` request field and the rule an API key may impose.

A request asks for ``"off"``, ``"blur"`` or ``"black"`` (None: whatever the studio or the caller's key says).
The checker itself lives in ``modules.safety.checker``, its use on finished images in ``modules.safety.screen``.
Kept free of torch so the request, the access layer and the UI can import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from modules.errors import RequestError

SafetyMode = Literal["off", "blur", "black"]
SAFETY_MODES: tuple[str, ...] = ("off", "blur", "black")  # in order of strictness
SAFETY_FOLDER = "safety_checker"  # under the models folder


def check_mode(value: object, field: str = "safety") -> None:
    """A mode the filter knows (None allowed: the default applies), else a ``RequestError`` naming ``field``."""
    if value is not None and value not in SAFETY_MODES:
        raise RequestError(field, f"must be one of {', '.join(SAFETY_MODES)} (or left out for the default), "
                                  f"got {value!r}")


def stricter(first: str, second: str) -> str:
    """The stricter of two modes: black over blur over off."""
    return max(first, second, key=SAFETY_MODES.index)


@dataclass(frozen=True)
class SafetyRule:
    """What an API key (or its tier) says about filtering: ``mode`` is the default for requests that leave
    ``safety`` out; with ``always`` a request may only ask for something stricter, never for less."""

    mode: SafetyMode = "off"
    always: bool = False

    def apply(self, requested: str | None) -> str | None:
        """The mode a request from this key runs with; ``RequestError`` when it asks to switch an always-on
        filter off (said plainly rather than silently overruled, so the client knows its images are filtered)."""
        if requested is None:
            return self.mode if self.mode != "off" or self.always else None
        if not self.always:
            return requested
        if requested == "off" and self.mode != "off":
            allowed = " or ".join(repr(mode) for mode in SAFETY_MODES[SAFETY_MODES.index(self.mode):])
            raise RequestError("safety", f"this API key always filters images ({self.mode!r}); ask for {allowed} "
                                         "or leave safety out")
        return stricter(requested, self.mode)


def apply_rule(request: object, rule: SafetyRule | None) -> object:
    """``request`` with its ``safety`` decided by ``rule``; a request of a kind without the field (an upscale)
    comes back as it is."""
    if rule is None or not hasattr(request, "safety") or not hasattr(request, "replace"):
        return request
    mode = rule.apply(request.safety)  # type: ignore[attr-defined]
    return request if mode == request.safety else request.replace(safety=mode)  # type: ignore[attr-defined]
