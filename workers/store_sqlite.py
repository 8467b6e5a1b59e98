"""``SQLiteJobStore``: the embedded-mode ``JobStore`` (one file under ``data_dir``).

WAL journal so readers never block the writer; every mutation runs in ``BEGIN IMMEDIATE`` (the
write lock is taken before the read, so read-modify-write is atomic across threads *and*
processes). Each thread keeps one connection (autocommit, so every read sees the latest commit),
opened again after a fork or an error: opening a connection per call (open, two PRAGMAs, WAL
index, close) was the largest store cost of a status read (issue 13 §8). The job itself is stored
as JSON; its report in its own column (a status read never parses it), the other columns beside
it exist only to index (owner, status, created, expires).
Ref: ``workers/jobs.py`` (protocol), https://www.sqlite.org/wal.html.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from netshrink.workers.jobs import (
    ApiKeyRecord,
    CreateResult,
    IdempotencyConflictError,
    Job,
    JobNotFoundError,
    JobPage,
    JobStatus,
    WorkerHeartbeat,
    decode_cursor,
    encode_cursor,
    to_us,
    utcnow,
)
from netshrink.workers.store_common import (
    DEFAULT_LEASE_S,
    REPORT_JSON,
    TransitionMethods,
    job_json,
    report_json,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL,
    created_us INTEGER NOT NULL, expires_us INTEGER, data TEXT NOT NULL, report TEXT);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_us DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_us DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_expires ON jobs (expires_us);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE TABLE IF NOT EXISTS idempotency (
    owner TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, job_id TEXT NOT NULL,
    expires_us INTEGER NOT NULL, PRIMARY KEY (owner, key));
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, created_us INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY, last_seen_us INTEGER NOT NULL, data TEXT NOT NULL);
"""


def _without_report(data: str) -> Job:
    """A job from its ``data`` column, its report left out like ``get(report=False)``."""
    job = Job.model_validate_json(data)
    job.report = None  # stored before the report column: it was inside ``data``
    return job


class SQLiteJobStore(TransitionMethods):
    """``JobStore`` over one SQLite database file. Ref: ``workers/jobs.py``."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention_s: int,
        idempotency_ttl_s: int = 24 * 3600,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self.path = Path(path)
        self.lease_s = lease_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self._local = threading.local()
        self._writer, self._writer_pid = threading.Lock(), os.getpid()
        self._create()
        with self._tx() as conn:  # a database from before the report column: add it (once)
            if "report" not in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}:
                conn.execute("ALTER TABLE jobs ADD COLUMN report TEXT")

    def _create(self, deadline_s: float = 30.0) -> None:
        """WAL mode and the schema. Several processes opening a new database at once (``serve
        --workers N``) race for the exclusive lock that turning WAL on takes, and SQLite answers the
        loser "database is locked" at once, without its busy handler (found on a CI run,
        2026-12-05: one API process of two failed to start; ``tests/workers/test_store_sqlite_open.py``
        reproduced it in 6 of 40 rounds of 6 processes). So: retry within ``deadline_s``."""
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                with self._connect() as conn:
                    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                        conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (a new one in a forked child: SQLite forbids crossing a fork)."""
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            conn = local.conn = self._open()
            local.pid = os.getpid()
        try:
            yield conn
        except BaseException as exc:
            # Never hand a half-finished transaction or a failed connection to the next caller.
            if conn.in_transaction or isinstance(exc, sqlite3.Error):
                local.conn = None
                conn.close()
            raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database lock from the first read.

        Threads of this process queue on a Python lock first: SQLite's busy handler makes a writer
        that finds the lock taken sleep and poll (1, 2, 5, 10 … 100 ms), so 20 concurrent submits,
        two write transactions each, spent most of their latency asleep (issue 13 §8, py-spy). The
        lock hands over at once; other processes still meet ``busy_timeout``."""
        if self._writer_pid != os.getpid():  # a forked child: the parent's lock may be held
            self._writer, self._writer_pid = threading.Lock(), os.getpid()
        with self._writer, self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- jobs ---------------------------------------------------------------------------------

    @staticmethod
    def _write(conn: sqlite3.Connection, job: Job) -> None:
        expires = to_us(job.expires_at) if job.expires_at else None
        conn.execute(
            "INSERT OR REPLACE INTO jobs (id, owner, status, created_us, expires_us, data, report)"
            " VALUES (?,?,?,?,?,?,?)",
            (job.id, job.owner, job.status.value, to_us(job.created_at), expires, job_json(job),
             report_json(job)),
        )  # fmt: skip

    @staticmethod
    def _read(conn: sqlite3.Connection, job_id: str, report: bool = True) -> Job:
        """The job; with ``report`` its report too (a write-back needs it: ``_write`` replaces the row)."""
        sql = "SELECT data, report FROM jobs WHERE id = ?" if report else "SELECT data FROM jobs WHERE id = ?"
        row = conn.execute(sql, (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        if not report:
            return _without_report(row[0])
        job = Job.model_validate_json(row[0])
        if row[1] is not None:
            job.report = REPORT_JSON.validate_json(row[1])
        return job

    def _mutate(self, job_id: str, fn: Callable[[Job], T]) -> T:
        with self._tx() as conn:
            job = self._read(conn, job_id)
            before = job.model_dump_json()
            result = fn(job)
            if job.model_dump_json() != before:
                self._write(conn, job)
            return result

    def create(
        self, job: Job, *, idempotency_key: str | None = None, fingerprint: str | None = None
    ) -> CreateResult:
        now_us = to_us(utcnow())
        with self._tx() as conn:
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT fingerprint, job_id FROM idempotency WHERE owner=? AND key=? AND expires_us>?",
                    (job.owner, idempotency_key, now_us),
                ).fetchone()
                if row is not None:
                    if row[0] != (fingerprint or ""):
                        raise IdempotencyConflictError(idempotency_key, row[1])
                    return CreateResult(self._read(conn, row[1]), False)
                job.idempotency_key = idempotency_key
                conn.execute(
                    "INSERT OR REPLACE INTO idempotency VALUES (?,?,?,?,?)",
                    (job.owner, idempotency_key, fingerprint or "", job.id,
                     now_us + self.idempotency_ttl_s * 1_000_000),
                )  # fmt: skip
            self._write(conn, job)
        return CreateResult(job, True)

    def mark_enqueued(self, job_id: str, *, stored: Job | None = None) -> None:
        """With ``stored``: one ``UPDATE`` of the ``data`` column while the row is still as
        ``create`` wrote it, instead of ``_mutate``'s read, parse, two dumps and a replace of the
        whole row (every index rewritten: the flag changes none). Issue 13 §8: a fifth of the
        embedded submit's store CPU. A job changed since (a worker took it) is read, then written."""
        if stored is not None and not stored.enqueued and stored.report is None:
            after = stored.model_copy(update={"enqueued": True})
            with self._tx() as conn:
                cursor = conn.execute(
                    "UPDATE jobs SET data = ? WHERE id = ? AND data = ?",
                    (job_json(after), job_id, job_json(stored)),
                )
            if cursor.rowcount == 1:
                return
        super().mark_enqueued(job_id)

    def get(self, job_id: str, *, report: bool = True) -> Job:
        with self._connect() as conn:
            return self._read(conn, job_id, report)

    def list(
        self,
        owner: str | None = None,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        where: builtins.list[str] = ["1=1"]
        args: builtins.list[str | int] = []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        if cursor is not None:
            c_us, c_id = decode_cursor(cursor)
            where.append("(created_us < ? OR (created_us = ? AND id < ?))")
            args += [c_us, c_us, c_id]
        sql = f"SELECT data FROM jobs WHERE {' AND '.join(where)} ORDER BY created_us DESC, id DESC LIMIT ?"
        with self._connect() as conn:
            rows = conn.execute(sql, [*args, limit + 1]).fetchall()
        jobs = [_without_report(r[0]) for r in rows]
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return JobPage(jobs, encode_cursor(jobs[-1]) if more and jobs else None)

    def idempotency_lookup(self, key: str, owner: str) -> tuple[str, str] | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT fingerprint, job_id FROM idempotency WHERE owner=? AND key=? AND expires_us>?",
                (owner, key, to_us(utcnow())),
            ).fetchone()
        return (row[0], row[1]) if row else None

    def delete(self, job_id: str) -> None:
        with self._tx() as conn:
            job = self._read(conn, job_id)
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            if job.idempotency_key is not None:
                conn.execute(
                    "DELETE FROM idempotency WHERE owner=? AND key=? AND job_id=?",
                    (job.owner, job.idempotency_key, job_id),
                )

    def unenqueued(self, older_than: datetime) -> builtins.list[str]:
        """``TransitionMethods.unenqueued`` filtered by SQLite: only the queued jobs whose message was
        never recorded are read, oldest first (ties by id), not every queued job parsed in Python.
        The reaper asks every pass; 10,000 queued jobs cost it 180-260 ms of parsing with the GIL
        held (a stall for every request of the API process it runs in), every 15 s. A row written
        before the flag existed reads as the model's default, enqueued."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE status = ? AND created_us < ?"
                " AND COALESCE(json_extract(data, '$.enqueued'), 1) = 0 ORDER BY created_us, id",
                (JobStatus.QUEUED.value, to_us(older_than)),
            ).fetchall()
        return [r[0] for r in rows]

    def _jobs_in(self, status: JobStatus) -> builtins.list[Job]:
        with self._connect() as conn:
            rows = conn.execute("SELECT data FROM jobs WHERE status = ?", (status.value,)).fetchall()
        return [_without_report(r[0]) for r in rows]

    def counts_by_status(self) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        with self._connect() as conn:
            for status, n in conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
                counts[JobStatus(status)] = n
        return counts

    def expired_jobs(self, now: datetime | None = None, limit: int = 500) -> builtins.list[str]:
        now_us = to_us(now or utcnow())
        terminal = [s.value for s in JobStatus if s.is_terminal]
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE expires_us <= ? AND status IN (?,?,?) ORDER BY expires_us LIMIT ?",
                (now_us, *terminal, limit),
            ).fetchall()
            conn.execute("DELETE FROM idempotency WHERE expires_us <= ?", (now_us,))
        return [r[0] for r in rows]

    # -- API keys and workers -------------------------------------------------------------------

    def create_api_key(self, record: ApiKeyRecord) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO api_keys (id, key_hash, created_us, data) VALUES (?,?,?,?)",
                (record.id, record.key_hash, to_us(record.created_at), record.model_dump_json()),
            )

    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT data FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return ApiKeyRecord.model_validate_json(row[0]) if row else None

    def get_api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT data FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
        return ApiKeyRecord.model_validate_json(row[0]) if row else None

    def list_api_keys(self) -> builtins.list[ApiKeyRecord]:
        with self._connect() as conn:
            rows = conn.execute("SELECT data FROM api_keys ORDER BY created_us, id").fetchall()
        return [ApiKeyRecord.model_validate_json(r[0]) for r in rows]

    def heartbeat(self, record: WorkerHeartbeat) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers VALUES (?,?,?)",
                (record.worker_id, to_us(record.last_seen), record.model_dump_json()),
            )
            stale = to_us(utcnow() - timedelta(days=1))
            conn.execute("DELETE FROM workers WHERE last_seen_us < ?", (stale,))

    def forget_worker(self, worker_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    def list_workers(self, max_age_s: float = 60.0) -> builtins.list[WorkerHeartbeat]:
        cutoff = to_us(utcnow() - timedelta(seconds=max_age_s))
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT data FROM workers WHERE last_seen_us >= ? ORDER BY worker_id", (cutoff,)
            ).fetchall()
        return [WorkerHeartbeat.model_validate_json(r[0]) for r in rows]

    def ping(self) -> bool:
        try:
            with self._connect() as conn:
                conn.execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def close(self) -> None:
        """Close this thread's connection; other threads' close when their thread ends."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None
