"""HTTP routers: ``jobs`` (the /v1/jobs resource) and ``ops`` (health, readiness, metrics, capabilities)."""
