"""Counting what each API identity uses: requests per minute (in memory) and images per month (on disk).

One ``RateLimiter`` and one ``MonthlyUsage`` belong to one API application, so two apps (or two tests) never
share counters. Requests use a fixed one-minute window that starts with an identity's first request; it is
simple, and the ``X-RateLimit-*`` headers it gives are exact. The image counter is a small JSON file in the data
folder, so a restart does not hand every key a fresh month.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from modules.runtime.files import atomic_write

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
_PRUNE_ABOVE = 1024  # identities kept before expired windows are dropped


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one request against its identity's window, with the numbers for the headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # whole seconds until the window starts over

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(self.reset_after)}


class RateLimiter:
    """Requests per minute per identity, thread-safe; ``clock`` is injectable so tests can move time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # identity -> (window start, requests in it)
        self._lock = threading.Lock()

    def hit(self, identity: str, limit: int) -> RateDecision:
        """Count one request; refused (and not counted) once ``limit`` requests were made this window."""
        now = self._clock()
        with self._lock:
            start, count = self._windows.get(identity, (now, 0))
            if now - start >= WINDOW_SECONDS:
                start, count = now, 0
            allowed = count < limit
            if allowed:
                count += 1
            self._windows[identity] = (start, count)
            if len(self._windows) > _PRUNE_ABOVE:
                self._prune(now)
        reset_after = max(1, math.ceil(start + WINDOW_SECONDS - now))
        return RateDecision(allowed, limit, max(0, limit - count), reset_after)

    def _prune(self, now: float) -> None:
        expired = [key for key, (start, _) in self._windows.items() if now - start >= WINDOW_SECONDS]
        for key in expired:
            del self._windows[key]


def month_key(moment: datetime | None = None) -> str:
    """The calendar month (UTC) a quota counts in, e.g. ``2025-06``."""
    return (moment or datetime.now(timezone.utc)).strftime("%Y-%m")


def seconds_to_next_month(moment: datetime | None = None) -> int:
    moment = moment or datetime.now(timezone.utc)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    start = datetime(year, month, 1, tzinfo=timezone.utc)
    return max(1, math.ceil((start - moment).total_seconds()))


class MonthlyUsage:
    """Images generated per identity and calendar month, kept in ``path`` (JSON) when one is given."""

    def __init__(self, path: Path | None = None, now: Callable[[], datetime] | None = None) -> None:
        self._path = path
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._lock = threading.Lock()
        self._months: dict[str, dict[str, int]] = self._load()

    def used(self, identity: str) -> int:
        with self._lock:
            return self._months.get(month_key(self._now()), {}).get(identity, 0)

    def add(self, identity: str, images: int) -> None:
        """Count ``images`` for this month and write the file, so the count survives a crash."""
        if images <= 0:
            return
        with self._lock:
            month = self._months.setdefault(month_key(self._now()), {})
            month[identity] = month.get(identity, 0) + images
            self._save()

    def _load(self) -> dict[str, dict[str, int]]:
        if self._path is None or not self._path.exists():
            return {}
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            return {str(month): {str(who): int(n) for who, n in counts.items()} for month, counts in data.items()}
        except (OSError, ValueError, AttributeError, TypeError) as error:
            # Refusing to start over a damaged counter would lock every user out; say so and start from zero.
            log.warning("could not read API usage from %s (%s); counting from zero", self._path, error)
            return {}

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self._path, permissions=0o644) as file:
            file.write(json.dumps(self._months, indent=1, sort_keys=True))
