"""release_large_buffers: glibc's mmap threshold is fixed (the CLI and the worker call it)."""

from __future__ import annotations

import sys

from netshrink.compression.io.memory import release_large_buffers


def test_release_large_buffers_is_applied_on_glibc() -> None:
    ok = release_large_buffers()
    assert isinstance(ok, bool)
    if sys.platform == "linux":
        assert ok
