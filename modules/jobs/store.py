"""The job queue's memory on disk: one SQLite row per job, and the files its request and results need.

A server killed mid-job (kill -9) must lose nothing: a queued job runs after the restart, the interrupted one
runs again, a finished one keeps its results. So every change of a job is committed as it happens (WAL mode:
a commit survives the process dying), the request's images and any result images that were not saved to the
outputs folder are written to ``<files_dir>/<job id>/`` (atomically), and the row names those files.

One connection, guarded by a lock, serves the worker thread and the HTTP threads; it is opened on first use,
so building the services touches no file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modules.jobs.queue import Job

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
FINISHED_STATES = ("done", "failed", "cancelled")
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY,
            number INTEGER NOT NULL UNIQUE,
            state TEXT NOT NULL,
            source TEXT NOT NULL DEFAULT 'ui',
            owner TEXT,
            webhook TEXT,
            request_json TEXT NOT NULL,
            progress_json TEXT,
            error TEXT,
            error_field TEXT,
            created REAL NOT NULL,
            started REAL,
            finished REAL,
            attempts INTEGER NOT NULL DEFAULT 0,
            result_json TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, number)",
        "CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, number)",
    ),
    2: ("ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'image'",),  # every job before kinds was an image
}
_JOB_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


@dataclass
class StoredJob:
    """One row, its JSON decoded. ``request`` is None when the stored text cannot be read."""

    id: str
    number: int
    kind: str
    state: str
    source: str
    owner: str | None
    webhook: str | None
    request: dict[str, Any] | None
    progress: dict[str, Any]
    error: str | None
    error_field: str | None
    created: float
    started: float | None
    finished: float | None
    attempts: int
    result: dict[str, Any] | None


class JobStore:
    """Jobs in ``path`` (SQLite) and their files under ``files_dir`` (default: ``jobs/`` beside the database)."""

    def __init__(self, path: Path, files_dir: Path | None = None) -> None:
        self.path = Path(path)
        self.files_dir = Path(files_dir) if files_dir is not None else self.path.parent / "jobs"
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = None

    def job_dir(self, job_id: str) -> Path:
        """The folder of one job's files; the id is checked so a crafted one cannot point elsewhere."""
        if not _JOB_ID.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.files_dir / job_id

    def close(self) -> None:
        """Close the connection (it reopens on the next call)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # -- writing -------------------------------------------------------------------------------------------------
    def insert(self, job: Job, request: dict[str, Any]) -> None:
        """Record a new job with its request as its kind encoded it (the kind has already written the request's
        files into ``job_dir``, so the row never names a missing file)."""
        self._write(
            "INSERT INTO jobs (id, number, kind, state, source, owner, webhook, request_json, progress_json, error,"
            " error_field, created, started, finished, attempts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.number, job.kind, job.state, job.source, job.owner, job.webhook, _dumps(request),
             _progress_json(job), job.error, job.error_field, job.created, job.started, job.finished, job.attempts),
        )

    def save_state(self, job: Job) -> None:
        """A state change (claimed, cancelled, failed before it ran): state, times, error, attempts."""
        self._write(
            "UPDATE jobs SET state = ?, started = ?, finished = ?, error = ?, error_field = ?, attempts = ?"
            " WHERE id = ?",
            (job.state, job.started, job.finished, job.error, job.error_field, job.attempts, job.id),
        )

    def save_progress(self, job: Job) -> None:
        self._write("UPDATE jobs SET progress_json = ? WHERE id = ?", (_progress_json(job), job.id))

    def finish(self, job: Job, result_data: dict[str, Any] | None) -> None:
        """The end of a run: one update with the state, the error and the result as its kind encoded it (the kind
        has already written the result's files)."""
        result = _dumps(result_data) if result_data is not None else None
        self._write(
            "UPDATE jobs SET state = ?, started = ?, finished = ?, error = ?, error_field = ?, attempts = ?,"
            " progress_json = ?, result_json = ? WHERE id = ?",
            (job.state, job.started, job.finished, job.error, job.error_field, job.attempts, _progress_json(job),
             result, job.id),
        )

    def requeue(self, job: Job) -> None:
        """Put a job cut short by a shutdown back in the queue, so the next start runs it again."""
        self._write(
            "UPDATE jobs SET state = 'queued', started = NULL, finished = NULL, result_json = NULL,"
            " progress_json = NULL WHERE id = ?",
            (job.id,),
        )

    def recover(self, max_attempts: int) -> list[StoredJob]:
        """After a restart: jobs left running were killed mid-run, so they go back to the queue (attempts + 1),
        unless they have now been cut short ``max_attempts`` times (a job that kills the server must not do so
        forever). Returns every queued job in submission order."""
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'failed', finished = ?, attempts = attempts + 1, error = 'the server"
                " stopped during this job ' || (attempts + 1) || ' times; it is not run again'"
                " WHERE state = 'running' AND attempts + 1 >= ?",
                (now, max_attempts),
            )
            db.execute(
                "UPDATE jobs SET state = 'queued', started = NULL, progress_json = NULL, attempts = attempts + 1"
                " WHERE state = 'running'"
            )
            rows = db.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY number").fetchall()
        return [_record(row) for row in rows]

    # -- reading -------------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> StoredJob | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _record(rows[0]) if rows else None

    def page(self, limit: int = 20, offset: int = 0, state: str | None = None,
             owner: str | None = None) -> tuple[list[StoredJob], int]:
        """Newest first, optionally one state's or one owner's; and how many match in all."""
        where, params = _filters(state, owner)
        rows = self._read(f"SELECT * FROM jobs{where} ORDER BY number DESC LIMIT ? OFFSET ?",
                          (*params, max(0, limit), max(0, offset)))
        total = self._read(f"SELECT COUNT(*) FROM jobs{where}", params)[0][0]
        return [_record(row) for row in rows], total

    def max_number(self) -> int:
        """The highest job number ever given, so numbers keep rising across restarts."""
        return self._read("SELECT COALESCE(MAX(number), 0) FROM jobs")[0][0]

    def stats(self, window: int = 20) -> dict[str, Any]:
        """How many jobs have ended, and the mean run time of the last ``window`` that finished well."""
        marks = ", ".join("?" * len(FINISHED_STATES))
        finished = self._read(f"SELECT COUNT(*) FROM jobs WHERE state IN ({marks})", FINISHED_STATES)[0][0]
        average = self._read(
            "SELECT AVG(seconds) FROM (SELECT finished - started AS seconds FROM jobs WHERE state = 'done'"
            " AND started IS NOT NULL AND finished IS NOT NULL ORDER BY finished DESC LIMIT ?)", (window,)
        )[0][0]
        return {"finished": finished, "average_seconds": average}

    # -- the connection ------------------------------------------------------------------------------------------
    def _write(self, sql: str, params: tuple = ()) -> None:
        with self._transaction() as db:
            db.execute(sql, params)

    def _read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db().execute(sql, params).fetchall()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # with WAL: a commit survives the process being killed
            try:
                _migrate(db, self.path)
            except BaseException:
                db.close()
                raise
            self._connection = db
        return self._connection


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema up to ``SCHEMA_VERSION``; refuse a database written by a newer version."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{path} was written by a newer Sfumato (job schema {version}; this one knows "
                               f"up to {SCHEMA_VERSION}); upgrade, or point --data-dir elsewhere")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(target),))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _filters(state: str | None, owner: str | None) -> tuple[str, tuple]:
    clauses, params = [], []
    if state is not None:
        clauses.append("state = ?")
        params.append(state)
    if owner is not None:
        clauses.append("owner = ?")
        params.append(owner)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _record(row: sqlite3.Row) -> StoredJob:
    return StoredJob(
        id=row["id"], number=row["number"], kind=row["kind"], state=row["state"], source=row["source"],
        owner=row["owner"],
        webhook=row["webhook"], request=_loads(row["request_json"], row["id"], None),
        progress=_loads(row["progress_json"], row["id"], {}), error=row["error"],
        error_field=row["error_field"], created=row["created"], started=row["started"], finished=row["finished"],
        attempts=row["attempts"], result=_loads(row["result_json"], row["id"], None),
    )


def _progress_json(job: Job) -> str:
    progress = job.progress
    return _dumps({"job_no": progress.job_no, "job_count": progress.job_count, "step": progress.step,
                   "steps": progress.steps, "text": progress.text, "cell": progress.cell, "cells": progress.cells})


def _dumps(value: Any) -> str:
    # A value JSON cannot hold (an extension's object, a numpy number) is kept as its text rather than refusing
    # the job: the row must always be written.
    return json.dumps(value, default=str, ensure_ascii=False)


def _loads(text: str | None, job_id: str, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        log.error("job %s: stored JSON is damaged and is ignored", job_id)
        return default
