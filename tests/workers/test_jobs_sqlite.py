"""The JobStore contract on SQLite, plus SQLite-specific guarantees (WAL, cross-process)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from jobstore_contract import StoreContract  # tests/workers is on sys.path (rootdir-relative import)

from netshrink.workers.jobs import Job
from netshrink.workers.store_sqlite import SQLiteJobStore


@pytest.fixture
def store(sqlite_store: SQLiteJobStore) -> SQLiteJobStore:
    return sqlite_store


class TestSQLiteStore(StoreContract):
    pass


def test_wal_mode(sqlite_store: SQLiteJobStore) -> None:
    conn = sqlite3.connect(sqlite_store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def _bump_many(path: str, job_id: str, n: int) -> None:
    store = SQLiteJobStore(path, retention_s=60)
    for _ in range(n):
        store.bump_attempts(job_id)


def test_attempts_are_atomic_across_processes(tmp_path: Path, make_job: Callable[..., Job]) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteJobStore(path, retention_s=60)
    job = store.create(make_job()).job
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_bump_many, args=(str(path), job.id, 15)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert store.get(job.id).attempts == 45
