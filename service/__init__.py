"""netshrink's HTTP API (FastAPI only; never runs an algorithm).

``create_app()`` in ``service.main`` builds the app; every client (job store, Redis, Celery) is
created in its ``lifespan``, never at import. Ref: docs/api.md, docs/development.md "Layout".
"""
