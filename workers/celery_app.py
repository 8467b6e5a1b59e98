"""The Celery application: broker settings, queues, enqueueing, and the embedded worker.

- With ``redis_url``: Redis broker, ``visibility_timeout`` longer than the hard time limit (else
  Redis redelivers a running job), late acks + ``task_reject_on_worker_lost`` (a job whose
  worker dies is redelivered, and ``run_job`` counts the attempts), prefetch 1 (long jobs), JSON
  only, no result backend (the job store is the truth).
- Without: the embedded single-machine mode. kombu's ``memory://`` transport (its queues are
  process-global, so the API's app and the worker thread's app share them) and an in-process
  solo-pool ``WorkController`` thread: the SAME task code path as a real worker.
- Queues: ``cpu`` (default), ``gpu`` (jobs whose ``spec.device == "cuda"``), ``webhooks``.
The app is always passed explicitly; ``current_app`` is never used by netshrink code.
Ref: docs/development.md "Celery settings"; Celery docs "Optimizing" (prefetch) and
"Redis: visibility timeout".
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from celery.utils.nodenames import anon_nodename
from celery.worker import WorkController

from netshrink.workers.jobs import Job
from netshrink.workers.redis_transport import TRANSPORT as REDIS_TRANSPORT
from netshrink.workers.settings import WorkerSettings

log = logging.getLogger(__name__)

CPU_QUEUE, GPU_QUEUE, WEBHOOK_QUEUE = "cpu", "gpu", "webhooks"
TASK_COMPRESS, TASK_ANALYZE, TASK_WEBHOOK = (
    "netshrink.compress",
    "netshrink.analyze",
    "netshrink.deliver_webhook",
)
TASK_WAKE = "netshrink.wake"
MEMORY_BROKER = "memory://localhost/"


def create_celery_app(settings: WorkerSettings) -> Celery:
    """A configured Celery app with netshrink's tasks registered (``workers/tasks.py``)."""
    from netshrink.workers.tasks import register_tasks

    app = Celery("netshrink", broker=settings.redis_url or MEMORY_BROKER, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport=broker_transport(settings.redis_url),
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_time_limit=settings.job_time_limit_s,
        task_soft_time_limit=settings.job_soft_time_limit_s,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_default_queue=CPU_QUEUE,
        task_routes={TASK_WEBHOOK: {"queue": WEBHOOK_QUEUE}},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    register_tasks(app, settings)
    return app


def broker_transport(redis_url: str | None) -> str | None:
    """``redis://``: kombu's Redis transport keeping one client per channel
    (``workers/redis_transport.py``); anything else: the transport the URL's scheme names."""
    if redis_url is not None and urlsplit(redis_url).scheme == "redis":
        return REDIS_TRANSPORT
    return None


def _transport_options(settings: WorkerSettings) -> dict[str, Any]:
    """``visibility_timeout`` > hard time limit; on Redis every broker key shares the store's prefix."""
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if settings.redis_url is not None:
        options["global_keyprefix"] = settings.redis_key_prefix
    else:
        options["polling_interval"] = 0.05  # memory:// is polled; the 1 s default adds latency to every job
    return options


def queue_for(job: Job) -> str:
    """``gpu`` for jobs that asked for CUDA, else ``cpu``."""
    return GPU_QUEUE if job.spec.get("device") == "cuda" else CPU_QUEUE


def enqueue_job(app: Celery, job: Job) -> None:
    """Send ``job.id`` to the task for its kind on its queue (called by the API after create).

    Through ``send_task`` with two of its options set (issue 13 §8: about a third of the publish's
    CPU, 0.20 -> 0.13 ms at best in bench-free loops on memory://, interleaved):

    - ``declare=[]``: no queue declaration per message. Celery's default declares the target queue
      on every publish (kombu binds a copy of the queue to the channel to look it up in the declared
      cache). The queues are direct ones, so Celery publishes to the anonymous exchange with the
      queue's name as routing key, and kombu's virtual transports (Redis, memory://: the only
      brokers netshrink runs on) put the message straight on the list of that name
      (``Channel.basic_publish`` -> ``_put``): no binding is read. Workers declare the queues they
      consume; the API declares them once per producer at start-up (``warm_producers``).
    - ``argsrepr``/``kwargsrepr``: the message's display of its arguments, ``repr`` of one id
      string (what ``saferepr`` would give), so Celery does not run its repr machinery.
    """
    name = TASK_ANALYZE if job.kind == "analyze" else TASK_COMPRESS
    args = [job.id]
    app.send_task(name, args=args, queue=queue_for(job), declare=[], argsrepr=repr(args), kwargsrepr="{}")


def warm_producers(app: Celery, queues: tuple[str, ...] = (CPU_QUEUE, GPU_QUEUE)) -> int:
    """Open every producer of the app's broker pool now (``broker_pool_limit`` of them), each with
    its connection, its channel and ``queues`` declared on it; return how many.

    Each is otherwise opened by the first publish that finds the pool's open producers all busy,
    inside that request: a kombu Redis channel (a connection and a PING), then the queue
    declaration on a second connection. Issue 13 §8: 19 channels opened during one 20-client submit
    run of ``serve --workers 2``, the last 18 s in, 52-157 ms each on the loaded 2-core machine.
    """
    pool = app.producer_pool
    producers = [pool.acquire(block=True) for _ in range(pool.limit or 0)]
    try:
        for producer in producers:
            for name in queues:
                producer.maybe_declare(app.amqp.queues[name])
    finally:
        for producer in producers:
            producer.release()
    return len(producers)


def default_queues(device: str) -> list[str]:
    """Queues a worker consumes for a device setting; ``auto`` adds ``gpu`` when CUDA is present."""
    if device == "cuda":
        return [GPU_QUEUE, WEBHOOK_QUEUE]
    if device == "auto" and _cuda_available():
        return [GPU_QUEUE, CPU_QUEUE, WEBHOOK_QUEUE]
    return [CPU_QUEUE, WEBHOOK_QUEUE]


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


class _ReadyWorkController(WorkController):
    """A WorkController that signals when its consumer is ready (as Celery's test worker does)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        self.ready.set()


class EmbeddedWorker:
    """An in-process, solo-pool Celery worker thread (embedded mode, and tests on a real broker).

    Only one may run per process: it becomes Celery's default app, and stopping uses Celery's
    process-global ``should_terminate``.
    """

    def __init__(
        self, app: Celery, queues: list[str] | None = None, *, startup_timeout_s: float = 30.0
    ) -> None:
        self.app = app
        self.queues = queues or [CPU_QUEUE, GPU_QUEUE, WEBHOOK_QUEUE]
        self.startup_timeout_s = startup_timeout_s
        self._thread: threading.Thread | None = None
        self._controller: _ReadyWorkController | None = None

    def start(self) -> EmbeddedWorker:
        self.app.finalize()
        self._controller = _ReadyWorkController(
            app=self.app,
            concurrency=1,
            pool="solo",
            hostname=f"embedded-{os.getpid()}@{anon_nodename().split('@', 1)[-1]}",
            queues=self.queues,
            loglevel="WARNING",
            ready_callback=None,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        self._thread = threading.Thread(target=self._run, name="netshrink-worker", daemon=True)
        self._thread.start()
        if not self._controller.ready.wait(self.startup_timeout_s):
            raise RuntimeError("the embedded worker did not start")
        return self

    def _run(self) -> None:
        assert self._controller is not None
        # Celery's worker internals (trace_task_ret, also on the ETA timer thread) resolve tasks
        # through current_app, which falls back to the process default app: this one.
        self.app.set_default()
        self.app.set_current()
        self._controller.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        from celery.worker import state

        if self._thread is None:
            return
        state.should_terminate = 0
        # Celery's blocking loop (memory:// has no async I/O) polls for 2 s per cycle and runs one
        # more cycle after the stop flag; a no-op message ends each of those two waits at once.
        if str(self.app.conf.broker_url).startswith("memory://"):
            for _ in range(2):
                self.app.send_task(TASK_WAKE, queue=self.queues[0])
        self._thread.join(timeout_s)
        alive = self._thread.is_alive()
        state.should_terminate = None
        self._thread = None
        if alive:
            raise RuntimeError("the embedded worker did not stop in time")

    def __enter__(self) -> EmbeddedWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "CPU_QUEUE",
    "GPU_QUEUE",
    "WEBHOOK_QUEUE",
    "EmbeddedWorker",
    "broker_transport",
    "create_celery_app",
    "default_queues",
    "enqueue_job",
    "queue_for",
    "warm_producers",
]
