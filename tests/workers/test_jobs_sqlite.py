"""The JobStore contract on SQLite, plus SQLite-specific guarantees (WAL, cross-process)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
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


def test_one_connection_per_thread_sees_every_commit(
    sqlite_store: SQLiteJobStore, make_job: Callable[..., Job]
) -> None:
    """Issue 13 §8: the store keeps a connection per thread (not one per call); each read still sees
    the latest commit of any other thread, because the connection is in autocommit mode."""
    job = make_job()
    sqlite_store.create(job)
    with sqlite_store._connect() as first, sqlite_store._connect() as again:
        assert first is again  # reused within a thread
    seen: list[int] = []

    def other_thread() -> None:
        sqlite_store.bump_attempts(job.id)  # written on that thread's own connection
        with sqlite_store._connect() as conn:
            assert conn is not first
        sqlite_store.close()

    for _ in range(3):
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        seen.append(sqlite_store.get(job.id).attempts)
    assert seen == [1, 2, 3]


def test_a_failed_transaction_never_leaks_into_the_next_call(
    sqlite_store: SQLiteJobStore, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    sqlite_store.create(job)
    with pytest.raises(RuntimeError), sqlite_store._tx() as conn:
        conn.execute("UPDATE jobs SET status = 'failed' WHERE id = ?", (job.id,))
        raise RuntimeError("boom")
    assert sqlite_store.get(job.id).status is job.status  # rolled back
    with sqlite_store._connect() as conn:
        assert not conn.in_transaction
    with pytest.raises(sqlite3.OperationalError), sqlite_store._connect() as conn:
        conn.execute("SELECT nope FROM jobs")
    with sqlite_store._connect() as fresh:  # a connection that raised is replaced
        assert fresh is not conn
    assert sqlite_store.get(job.id).id == job.id


def _bump_inherited(store: SQLiteJobStore, job_id: str) -> None:
    store.bump_attempts(job_id)  # the parent's connection must not cross the fork


def test_a_forked_child_opens_its_own_connection(
    sqlite_store: SQLiteJobStore, make_job: Callable[..., Job]
) -> None:
    job = sqlite_store.create(make_job()).job
    assert sqlite_store.get(job.id).attempts == 0  # the parent now holds a connection
    proc = multiprocessing.get_context("fork").Process(target=_bump_inherited, args=(sqlite_store, job.id))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert sqlite_store.get(job.id).attempts == 1


def test_a_database_from_before_the_report_column_reads_and_keeps_its_reports(
    tmp_path: Path, make_job: Callable[..., Job]
) -> None:
    """Jobs stored with the report inside their JSON (no ``report`` column) still read back whole; the
    store adds the column, a lean read leaves the report out, and the next write moves it over."""
    path = tmp_path / "old.sqlite3"
    job = make_job(status="succeeded", report={"summary": {"ratio": 3.0}}, enqueued=False)
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL,"
        " created_us INTEGER NOT NULL, expires_us INTEGER, data TEXT NOT NULL)"
    )
    conn.execute(
        "INSERT INTO jobs VALUES (?,?,?,?,?,?)",
        (job.id, job.owner, "succeeded", 1, None, job.model_dump_json()),
    )
    conn.commit()
    conn.close()
    store = SQLiteJobStore(path, retention_s=60)
    assert store.get(job.id) == job and store.get(job.id, report=False).report is None
    assert [j.report for j in store.list(job.owner).items] == [None]
    store.mark_enqueued(job.id)
    assert store.get(job.id).report == {"summary": {"ratio": 3.0}}
    with sqlite3.connect(path) as conn:
        data, report = conn.execute("SELECT data, report FROM jobs").fetchone()
    assert '"report"' not in data and report is not None


def test_threads_of_one_process_take_turns_without_sqlite_busy_waits(
    sqlite_store: SQLiteJobStore, make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers of one process queue on the store's lock, never on SQLite's sleeping busy handler: with
    busy_timeout=0 a writer that met SQLite's lock would fail at once with 'database is locked'."""
    jobs = [sqlite_store.create(make_job(enqueued=False)).job for _ in range(8)]
    open_conn = sqlite_store._open

    def impatient() -> sqlite3.Connection:
        conn = open_conn()
        conn.execute("PRAGMA busy_timeout=0")
        return conn

    monkeypatch.setattr(sqlite_store, "_open", impatient)
    errors: list[BaseException] = []

    def hammer(job: Job) -> None:
        try:
            for _ in range(40):
                sqlite_store.bump_attempts(job.id)
                sqlite_store.create(make_job())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert {sqlite_store.get(j.id).attempts for j in jobs} == {40}


def test_mark_enqueued_with_the_stored_job_writes_the_flag_without_reading_the_job(
    sqlite_store: SQLiteJobStore, make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13 §8: after the API's create, the outbox flag is one UPDATE of the row as written (no
    read and parse of the job, no rewrite of the indexed columns); a changed row falls back to the
    read (the contract's ``test_mark_enqueued_with_the_stored_job_keeps_a_change_made_since``)."""
    job = sqlite_store.create(make_job(enqueued=False)).job
    before = _indexed_columns(sqlite_store.path, job.id)

    def no_read(*args: object, **kwargs: object) -> Job:
        raise AssertionError("the fast path read the job")

    monkeypatch.setattr(SQLiteJobStore, "_read", staticmethod(no_read))
    sqlite_store.mark_enqueued(job.id, stored=job)
    monkeypatch.undo()
    after = _indexed_columns(sqlite_store.path, job.id)
    assert after == before
    stored = sqlite_store.get(job.id)
    assert stored.enqueued and stored.model_copy(update={"enqueued": False}) == job


def _indexed_columns(path: Path, job_id: str) -> tuple[object, ...]:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT owner, status, created_us, expires_us, report FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    finally:
        conn.close()
    return tuple(row)


def test_unenqueued_is_filtered_by_sqlite_without_parsing_queued_jobs(
    sqlite_store: SQLiteJobStore, make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reaper asks for the stranded jobs every pass: SQLite picks them (oldest first, ties by
    id) and no queued job is parsed, where a backlog of 10,000 once cost 180-260 ms of GIL-held
    parsing per pass. A row written before the ``enqueued`` flag existed reads as its default
    (enqueued), as parsing it would."""
    from datetime import timedelta

    from netshrink.workers import store_sqlite
    from netshrink.workers.jobs import utcnow

    t0 = utcnow() - timedelta(minutes=5)
    stranded = [sqlite_store.create(make_job(enqueued=False, created_at=t0)).job for _ in range(3)]
    for i in range(20):  # the backlog: queued and sent
        sqlite_store.create(make_job(created_at=t0 + timedelta(seconds=i)))
    legacy = sqlite_store.create(make_job(enqueued=False, created_at=t0)).job
    conn = sqlite3.connect(sqlite_store.path)
    try:  # the flag removed from its stored JSON: a job from before it existed
        conn.execute("UPDATE jobs SET data = json_remove(data, '$.enqueued') WHERE id = ?", (legacy.id,))
        conn.commit()
    finally:
        conn.close()
    assert sqlite_store.get(legacy.id).enqueued  # parsed, it takes the default: enqueued

    def no_parse(data: str) -> Job:
        raise AssertionError("unenqueued parsed a queued job")

    monkeypatch.setattr(store_sqlite, "_without_report", no_parse)
    got = sqlite_store.unenqueued(utcnow() - timedelta(minutes=1))
    assert got == sorted(j.id for j in stranded)  # the same created_at: by id
