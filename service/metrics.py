"""Prometheus metrics computed from the job store at scrape time.

Worker processes never share counters with the API, and there may be many API replicas, so
process-local counters would lie. ``StoreCollector`` reads the job store (the single source of
truth) on each scrape and registers on its own ``CollectorRegistry`` (never the global one, so
several apps in one test process do not collide). Ref: docs/api.md "Operations"; issue 4.

Exported families:
- ``netshrink_jobs{status}``: jobs per status (gauge; retention removes old ones);
- ``netshrink_queue_depth``: jobs waiting for a worker (gauge);
- ``netshrink_job_duration_seconds``: started -> finished of terminal jobs (histogram);
- ``netshrink_upload_bytes``: sizes of the uploaded models of stored jobs (histogram);
- ``netshrink_workers_alive``: workers with a fresh heartbeat (gauge).

The histograms scan at most ``scan_limit`` most recent jobs, bounding a scrape's cost.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from netshrink.workers.jobs import Job, JobStatus, JobStore

DURATION_BUCKETS_S = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
UPLOAD_BUCKETS_BYTES = (2.0**10, 2.0**16, 2.0**20, 2.0**24, 2.0**27, 2.0**29, 2.0**31)


def _histogram(
    name: str, doc: str, values: Sequence[float], bounds: Sequence[float]
) -> HistogramMetricFamily:
    """Cumulative buckets (``le``) plus ``+Inf``, as the exposition format wants."""
    ordered = sorted(values)
    buckets = [(repr(b), bisect.bisect_right(ordered, b)) for b in bounds]
    buckets.append(("+Inf", len(ordered)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(sum(ordered)))


class StoreCollector(Collector):
    """A custom collector that queries ``store`` on every ``collect()``."""

    def __init__(self, store: JobStore, *, heartbeat_ttl_s: float = 60.0, scan_limit: int = 5000) -> None:
        self.store, self.heartbeat_ttl_s, self.scan_limit = store, heartbeat_ttl_s, scan_limit

    def _recent_jobs(self) -> Iterator[Job]:
        cursor: str | None = None
        seen = 0
        while seen < self.scan_limit:
            page = self.store.list(None, limit=min(500, self.scan_limit - seen), cursor=cursor)
            yield from page.items
            seen += len(page.items)
            if page.next_cursor is None or not page.items:
                return
            cursor = page.next_cursor

    def collect(self) -> Iterable[Metric]:
        counts = self.store.counts_by_status()
        jobs = GaugeMetricFamily("netshrink_jobs", "Jobs in the store, by status.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], float(counts.get(status, 0)))
        yield jobs
        yield GaugeMetricFamily(
            "netshrink_queue_depth",
            "Jobs queued and not yet started.",
            value=float(counts.get(JobStatus.QUEUED, 0)),
        )
        durations, uploads = [], []
        for job in self._recent_jobs():
            uploads.append(float(job.input.size_bytes))
            if job.status.is_terminal and job.started_at and job.finished_at:
                durations.append((job.finished_at - job.started_at).total_seconds())
        yield _histogram(
            "netshrink_job_duration_seconds", "Run time of finished jobs.", durations, DURATION_BUCKETS_S
        )
        yield _histogram("netshrink_upload_bytes", "Size of uploaded models.", uploads, UPLOAD_BUCKETS_BYTES)
        alive = len(self.store.list_workers(max_age_s=self.heartbeat_ttl_s))
        yield GaugeMetricFamily(
            "netshrink_workers_alive", "Workers with a fresh heartbeat.", value=float(alive)
        )


def build_registry(store: JobStore, *, heartbeat_ttl_s: float = 60.0) -> CollectorRegistry:
    """A fresh registry holding only the store collector (``auto_describe`` off: no scrape at register)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, heartbeat_ttl_s=heartbeat_ttl_s))
    return registry


__all__ = ["StoreCollector", "build_registry"]
