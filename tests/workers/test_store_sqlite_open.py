"""Several processes opening one new SQLite job store at once (``serve --workers N`` starting) all
succeed: turning WAL on takes an exclusive lock, and SQLite answered the loser of that race
"database is locked" at once, without its busy handler (a CI run of 2026-12-05 lost one API process
to it; before the retry in ``SQLiteJobStore._create`` this test failed in 6 of 40 rounds)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

from netshrink.workers.store_sqlite import SQLiteJobStore

PROCESSES, ROUNDS = 6, 30


def _open(path: Path, barrier: Any, results: Any) -> None:
    barrier.wait()  # every process opens the store at the same moment
    try:
        SQLiteJobStore(path, retention_s=60)
        results.put("ok")
    except Exception as exc:  # reported to the parent, which asserts
        results.put(repr(exc))


def test_concurrent_first_opens_all_succeed(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    failures = []
    for r in range(ROUNDS):
        path = tmp_path / f"round{r}" / "jobs.db"
        barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, results)) for _ in range(PROCESSES)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        outcomes = [results.get(timeout=10) for _ in procs]
        failures += [(r, o) for o in outcomes if o != "ok"]
    assert not failures, failures[:3]
    store = SQLiteJobStore(tmp_path / "round0" / "jobs.db", retention_s=60)
    with store._connect() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
