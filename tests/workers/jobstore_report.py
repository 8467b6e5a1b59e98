"""The report part of the JobStore contract: the report is stored apart from the job, read only on
request (``get(report=False)`` is what a status read uses, issue 13 §8), and never lost by a later
write. Mixed into ``StoreContract`` so both stores are held to it."""

from __future__ import annotations

from collections.abc import Callable

from netshrink.workers.jobs import Job, JobStore

MakeJob = Callable[..., Job]
REPORT = {"summary": {"ratio": 2.5, "budget_met": True}, "layers": [{"name": "fc1", "error": 0.125}]}


class ReportContract:
    def test_report_is_read_only_on_request(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job(owner="k1")).job
        assert store.get(job.id, report=False) == store.get(job.id)  # no report yet: the same job
        store.mark_running(job.id)
        assert store.mark_succeeded(job.id, report=REPORT, artifacts=[])
        full, lean = store.get(job.id), store.get(job.id, report=False)
        assert full.report == REPORT and lean.report is None
        assert lean == full.model_copy(update={"report": None})
        assert [j.report for j in store.list("k1").items] == [None]

    def test_later_writes_keep_the_report(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job()).job
        store.mark_running(job.id)
        store.mark_succeeded(job.id, report=REPORT, artifacts=[])
        store.mark_enqueued(store.get(job.id, report=False).id)  # a write after the report
        store.request_cancel(job.id)  # a no-op on a finished job
        assert store.get(job.id).report == REPORT and store.get(job.id).enqueued

    def test_delete_removes_the_report(self, store: JobStore, make_job: MakeJob) -> None:
        job = store.create(make_job()).job
        store.mark_running(job.id)
        store.mark_succeeded(job.id, report=REPORT, artifacts=[])
        store.delete(job.id)
        again = store.create(make_job(id=job.id)).job  # the same id, stored again: no stale report
        assert store.get(again.id).report is None
