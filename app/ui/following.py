"""Which job a tab shows: the newest one its browser session started there.

Each Generate click is a job, so a second click while the first job runs starts a second event whose handler
writes to the same progress bar, gallery and status as the first. Left alone, the running job's step updates
would hide the new job's "waiting in queue" line and its results would land on top of the newer job's. So a
tab follows its newest job: an older job's handler stops updating the page as soon as a newer one is submitted
from the same tab of the same browser session, and the older job goes on in the queue (the Queue tab shows,
cancels and downloads it; its images are saved and listed in history as usual).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

MAX_TRACKED = 4096  # browser sessions x tabs remembered; the oldest are forgotten first


@dataclass
class TabFollowers:
    """The newest job of each (browser session, tab); one per studio page (built with the Blocks)."""

    limit: int = MAX_TRACKED
    _newest: OrderedDict[tuple[str, str], str] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def slot(self, session: str | None, tab: str) -> Following:
        """The follower of one tab in one browser session (``None``: a caller without a session, e.g. a test
        or the Gradio client, whose every job is followed to its end)."""
        return Following(self, (session, tab) if session else None)

    def claim(self, key: tuple[str, str], job_id: str) -> None:
        with self._lock:
            self._newest[key] = job_id
            self._newest.move_to_end(key)
            while len(self._newest) > self.limit:
                self._newest.popitem(last=False)

    def newest(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            return self._newest.get(key)


@dataclass(frozen=True)
class Following:
    """One tab's view of ``TabFollowers``: claim a new job, ask whether a job is still the one shown."""

    followers: TabFollowers | None = None
    key: tuple[str, str] | None = None

    def claim(self, job_id: str) -> None:
        if self.followers is not None and self.key is not None:
            self.followers.claim(self.key, job_id)

    def shows(self, job_id: str) -> bool:
        if self.followers is None or self.key is None:
            return True
        newest = self.followers.newest(self.key)
        return newest is None or newest == job_id


ALWAYS = Following()
