"""HTTP routers: ``jobs`` (/v1/jobs), ``artifacts`` (downloads, report), ``ops`` (health, metrics, ...)."""
