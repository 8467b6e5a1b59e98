"""Celery tasks: one-liners into ``run_job``, plus webhook delivery with exponential backoff.

Tasks are registered on an explicit app (``register_tasks``), never on ``current_app``. The job
store and artifact store are built lazily in the process that runs the task (after a prefork
fork), and rebuilt if the pid changes. Ref: docs/development.md "workers/tasks.py — as thin as a view".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task

from netshrink.workers.artifacts import ArtifactStore
from netshrink.workers.celery_app import TASK_ANALYZE, TASK_COMPRESS, TASK_WAKE, TASK_WEBHOOK, WEBHOOK_QUEUE
from netshrink.workers.jobs import Job, JobStore
from netshrink.workers.run import run_job
from netshrink.workers.settings import WorkerSettings
from netshrink.workers.store import get_store
from netshrink.workers.webhooks import (
    WebhookDeliveryError,
    WebhookTargetError,
    backoff_s,
    build_event,
    deliver,
    new_message_id,
)

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What a task needs, built once per worker process."""

    settings: WorkerSettings
    store: JobStore
    artifacts: ArtifactStore
    pid: int


def register_tasks(app: Celery, settings: WorkerSettings) -> None:
    """Define netshrink's tasks on ``app`` (idempotent per app)."""
    contexts: dict[int, WorkerContext] = {}

    def context() -> WorkerContext:
        pid = os.getpid()
        if pid not in contexts:
            contexts.clear()
            contexts[pid] = WorkerContext(
                settings, get_store(settings), ArtifactStore(settings.artifacts_dir), pid
            )
        return contexts[pid]

    notify = webhook_notifier(app)

    def run(job_id: str, task_id: str | None) -> None:
        ctx = context()
        run_job(
            job_id,
            store=ctx.store,
            artifacts=ctx.artifacts,
            settings=ctx.settings,
            notify=notify,
            lease_owner=task_id,
        )

    @app.task(name=TASK_COMPRESS, bind=True, ignore_result=True, acks_late=True, shared=False)
    def compress(self: Task, job_id: str) -> None:
        run(job_id, self.request.id)

    @app.task(name=TASK_ANALYZE, bind=True, ignore_result=True, acks_late=True, shared=False)
    def analyze(self: Task, job_id: str) -> None:
        run(job_id, self.request.id)

    @app.task(name=TASK_WEBHOOK, bind=True, ignore_result=True, max_retries=None, shared=False)
    def deliver_webhook(self: Task, owner: str, url: str, msg_id: str, payload: dict[str, Any]) -> None:
        ctx = context()
        secret = webhook_secret(ctx.store, owner, ctx.settings)
        if secret is None:
            log.warning("webhook %s for owner %s not sent: no signing secret", msg_id, owner)
            return
        try:
            deliver(
                url,
                secret,
                payload,
                msg_id=msg_id,
                timeout_s=ctx.settings.webhook_timeout_s,
                allow_hosts=ctx.settings.webhook_allow_hosts,
            )
        except WebhookTargetError as exc:  # permanent: the target is refused
            log.warning("webhook %s dropped: %s", msg_id, exc)
        except WebhookDeliveryError as exc:
            retries = int(self.request.retries)
            if retries >= ctx.settings.webhook_max_retries:
                log.warning("webhook %s dropped after %d retries: %s", msg_id, retries, exc)
                return
            # Stay well under the broker's visibility timeout: a longer ETA gets redelivered twice.
            cap_s = min(3600.0, ctx.settings.visibility_timeout_s / 2)
            countdown = backoff_s(retries, ctx.settings.webhook_backoff_base_s, cap_s=cap_s)
            raise self.retry(exc=exc, countdown=countdown) from exc

    @app.task(name=TASK_WAKE, ignore_result=True, shared=False)
    def wake() -> None:
        """No-op: wakes an idle in-process worker so it notices a stop request at once."""


def webhook_notifier(app: Celery) -> Callable[[str, Job], None]:
    """``notify(event_type, job)``: queue the signed delivery of one webhook event for ``job``."""

    def notify(event_type: str, job: Job) -> None:
        if job.callback is None:
            return
        payload = build_event(event_type, job)
        args = [job.owner, job.callback.url, new_message_id(), payload]
        app.send_task(TASK_WEBHOOK, args=args, queue=WEBHOOK_QUEUE)

    return notify


def webhook_secret(store: JobStore, owner: str, settings: WorkerSettings) -> str | None:
    """The ``whsec_`` secret of the owner's API key; the dev secret for ``dev`` jobs."""
    record = store.get_api_key(owner)
    if record is not None:
        return None if record.revoked else record.webhook_secret
    return settings.webhook_dev_secret if owner == "dev" else None


__all__ = ["WorkerContext", "register_tasks", "webhook_notifier", "webhook_secret"]
