"""netshrink's background side: the job store, the artifact store, Celery tasks and workers.

``run_job`` (``workers/run.py``) is the one place a job is executed; Celery tasks are one-liners
into it. Dependencies point one way: ``service → workers → compression``.
Ref: docs/development.md "Layout", docs/api.md.
"""
