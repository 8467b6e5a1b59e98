"""release_large_buffers: glibc's mmap threshold is fixed at 1 MiB (the CLI and the worker call it),
checked by what it does in a fresh process: a buffer under 1 MiB is served from the heap, and one
over it is its own mapping, which goes back to the operating system at once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from netshrink.compression.io.memory import release_large_buffers

PROBE = """
import json, torch
from netshrink.compression.io.memory import release_large_buffers

def rss_pages():
    return int(open("/proc/self/statm").read().split()[1])

def in_heap(address):
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= address < hi:
                return True
    return False

applied = release_large_buffers()
spent = torch.empty((16 << 20) // 4).fill_(1.0)
del spent  # glibc's default threshold would now rise to 16 MiB; a fixed one stays
small = torch.empty((512 << 10) // 4).fill_(1.0)  # 512 KiB: under the threshold, from the heap
big = torch.empty((2 << 20) // 4).fill_(1.0)  # 2 MiB: over it, its own mapping
heap = [in_heap(small.data_ptr()), in_heap(big.data_ptr())]
r1 = rss_pages()
del big
print(json.dumps({"applied": applied, "in_heap": heap, "returned_pages": r1 - rss_pages()}))
"""


def test_release_large_buffers_is_applied_on_glibc() -> None:
    ok = release_large_buffers()
    assert isinstance(ok, bool)
    if sys.platform == "linux":
        assert ok


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt and /proc")
def test_small_buffers_come_from_the_heap_and_large_ones_are_returned() -> None:
    """The threshold is 1 MiB and fixed: glibc's default rises to the size of a freed mapping (the
    16 MiB one freed first) and would keep the 2 MiB buffer in the heap, and so would the 8 MiB
    threshold that was tried and reverted (dbe0c7a)."""
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["applied"]
    assert got["in_heap"] == [True, False], got
    assert got["returned_pages"] >= (2 << 20) // 4096 - 8, got  # the 2 MiB buffer left the process
