"""The core's default size caps, in one place (the service passes its own from one setting).

``DEFAULT_MAX_DECOMPRESSED_BYTES`` caps what a zip-based ``.pt`` archive or an ``.npz``/``.npy``
may declare; ``graph.loading.LoadLimits`` and ``graph.calibration`` both default to it, so the
model and the calibration data of one job are held to the same number.
Ref: docs/method.md §6 "Loading safely".
"""

from __future__ import annotations

GIB = 2**30
DEFAULT_MAX_DECOMPRESSED_BYTES = 2 * GIB

__all__ = ["DEFAULT_MAX_DECOMPRESSED_BYTES", "GIB"]
