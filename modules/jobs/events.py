"""Pushing job changes to whoever listens, the moment the worker makes them.

The UI's progress bar, the native API's server-sent events and a blocked A1111 request all wait on a
``Subscription`` instead of polling the job in loops of their own: the worker publishes after each progress report
and state change, and a waiting thread or coroutine wakes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


class Subscription:
    """One listener. ``wait`` (threads) or ``wait_async`` (coroutines) return True when something changed since
    the last wait, False on timeout; changes that happen while nobody waits are not lost (the flag stays set)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._changed = threading.Event()
        self._loop = loop
        self._async_changed = asyncio.Event() if loop is not None else None

    def notify(self) -> None:
        self._changed.set()
        if self._loop is not None and self._async_changed is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: its listener is gone
                self._loop.call_soon_threadsafe(self._async_changed.set)

    def wait(self, timeout: float | None = None) -> bool:
        changed = self._changed.wait(timeout)
        self._changed.clear()
        return changed

    async def wait_async(self, timeout: float | None = None) -> bool:
        if self._async_changed is None:
            raise RuntimeError("this subscription was made without an event loop; use wait()")
        try:
            await asyncio.wait_for(self._async_changed.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        self._async_changed.clear()
        self._changed.clear()
        return True


class JobEvents:
    """Subscriptions by job id (None = every job). Thread-safe; publishing never blocks on a listener."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str | None, set[Subscription]] = {}

    def publish(self, job_id: str) -> None:
        with self._lock:
            listeners = [*self._subscribers.get(job_id, ()), *self._subscribers.get(None, ())]
        for subscription in listeners:
            subscription.notify()

    @contextlib.contextmanager
    def subscribe(self, job_id: str | None = None, *, asynchronous: bool = False) -> Iterator[Subscription]:
        """Listen to one job (or all) for the ``with`` block. ``asynchronous`` binds it to the running loop."""
        subscription = Subscription(asyncio.get_running_loop() if asynchronous else None)
        with self._lock:
            self._subscribers.setdefault(job_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            with self._lock:
                listeners = self._subscribers.get(job_id)
                if listeners is not None:
                    listeners.discard(subscription)
                    if not listeners:
                        del self._subscribers[job_id]
