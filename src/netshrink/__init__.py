"""netshrink: randomized greedy pruning and quantization, with the measured error next to its bound.

One import namespace for the whole distribution:

- ``netshrink.client``: the Python SDK (HTTP only), ``NetshrinkClient`` / ``AsyncNetshrinkClient``;
- ``netshrink.compression``: the core (load, compress, analyze), importable without the web stack;
- ``netshrink.reporting``: ``report.html``;
- ``netshrink.service``, ``netshrink.workers``: the HTTP API and the Celery workers;
- ``netshrink.cli``: the ``netshrink`` command.

The repository keeps these as top-level folders; ``pyproject.toml`` maps them under this package with
setuptools' ``package-dir``. The SDK names below are resolved lazily, so that ``import
netshrink.compression`` does not pull in httpx (and the client does not pull in torch).
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("netshrink")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    __version__ = "0+unknown"

_LAZY = {
    "NetshrinkClient": "netshrink.client",
    "AsyncNetshrinkClient": "netshrink.client",
}

__all__ = ["AsyncNetshrinkClient", "NetshrinkClient", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'netshrink' has no attribute {name!r}")
