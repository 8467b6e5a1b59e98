"""``netshrink worker``: a Celery worker process for the Redis deployment.

Consumes ``cpu`` (and ``gpu`` when the device allows) plus ``webhooks``; prefork pool by default
(a job that crashes its child is redelivered thanks to late acks, and failed after
``max_attempts``). Each process limits torch to ``NETSHRINK_TORCH_THREADS`` threads. A housekeeper
thread heartbeats the job store, runs the reaper (jobs whose lease expired are enqueued again,
``workers/reaper.py``) and retention cleanup. Ref: docs/development.md "Celery settings".
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

from netshrink.cli.threads import limit_threads

EXIT_BAD_INPUT = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queues", "-Q", default=None, help="comma-separated (default: from NETSHRINK_DEVICE)"
    )
    parser.add_argument("--concurrency", "-c", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    parser.add_argument("--loglevel", "-l", default="INFO")


def worker(
    queues: Sequence[str] | None = None,
    concurrency: int = 1,
    *,
    pool: str = "prefork",
    loglevel: str = "INFO",
) -> int:
    """Run a worker until it is stopped (SIGTERM: warm shutdown); return its exit code."""
    from celery.signals import worker_process_init

    from netshrink.workers.artifacts import ArtifactStore
    from netshrink.workers.celery_app import create_celery_app, default_queues, enqueue_job
    from netshrink.workers.retention import Housekeeper
    from netshrink.workers.settings import get_settings
    from netshrink.workers.store import get_store
    from netshrink.workers.tasks import webhook_notifier

    settings = get_settings()
    if settings.redis_url is None:
        print(
            "error: `netshrink worker` needs NETSHRINK_REDIS_URL; without Redis, `netshrink serve` runs "
            "the worker inside the API process (embedded mode)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    queue_list = list(queues) if queues else default_queues(settings.device)
    limit_threads(settings.torch_threads)

    def _child_init(**_: Any) -> None:
        limit_threads(settings.torch_threads)

    worker_process_init.connect(_child_init, weak=False)
    app = create_celery_app(settings)
    store = get_store(settings)
    housekeeper = Housekeeper(
        store,
        ArtifactStore(settings.artifacts_dir),
        settings,
        queues=queue_list,
        enqueue=partial(enqueue_job, app),
        notify=webhook_notifier(app),
    )
    housekeeper.start()
    try:
        w = app.Worker(
            hostname=f"netshrink-{'-'.join(queue_list)}@{socket.gethostname()}",
            queues=queue_list,
            concurrency=concurrency,
            pool=pool,
            loglevel=loglevel,
            without_gossip=True,
            without_mingle=True,
        )
        w.start()
        return int(w.exitcode or 0)
    finally:
        housekeeper.stop()
        store.close()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    return worker(queues, args.concurrency, pool=args.pool, loglevel=args.loglevel)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netshrink worker")
    add_arguments(parser)
    return run(parser.parse_args(argv))


__all__ = ["add_arguments", "main", "run", "worker"]
