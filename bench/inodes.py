"""The kernel's cost of a submit's new inodes (a job directory and its upload file), before and after
a mass deletion, on a data root and on tmpfs: why ``bench.load``'s submit figures move with what
ran before them on the development machine.

    python -m bench.inodes [--root DIR] [--churn 20000] [--every-s 30] [--for-s 360]

Each probe makes ``--probe`` (200) job-like pairs (a directory and an 8 KiB file in it, as
``POST /v1/jobs`` does) in a fresh directory and reports µs per pair. First on the quiet root,
then it creates and deletes ``--churn`` such pairs (what a test run or a previous bench leaves
behind), then probes every ``--every-s`` for ``--for-s``. The same on /dev/shm (tmpfs) when it
exists, as the peer without an on-disk inode allocator.

On the development machine's root, an ext4 **without a journal** (no jbd2 for it;
``/proc/fs/ext4/<dev>/options``), the allocator calls ``recently_deleted`` for every free inode
it passes, and skips those deleted in the last 60 s (360 s while their inode-table block is
dirty): ``perf record -g -- python -m bench.inodes --churn 0 --probe 2000 --for-s 0`` puts half
of all its samples in ``find_get_block_common``, ``recently_deleted``, ``ext4_get_group_desc`` and
``find_inode_bit``. A journaled ext4 skips that check. Results: bench/results/inodes.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def inode_probe_us(root: Path, n: int = 200) -> float:
    """µs per new job-like pair of inodes in ``root``: a directory and an 8 KiB file in it."""
    base = root / f"inode-probe-{uuid.uuid4().hex[:8]}"
    base.mkdir()
    t0 = time.perf_counter()
    for i in range(n):
        job = base / f"job_{i}"
        job.mkdir()
        (job / "model.upload").write_bytes(bytes(8192))
    return round((time.perf_counter() - t0) / n * 1e6, 1)


def churn(root: Path, n: int) -> float:
    """Create then delete ``n`` job-like pairs; the seconds the deletion took."""
    base = root / f"churn-{uuid.uuid4().hex[:8]}"
    base.mkdir()
    for i in range(n):
        job = base / f"job_{i}"
        job.mkdir()
        (job / "model.upload").write_bytes(bytes(8192))
    t0 = time.perf_counter()
    shutil.rmtree(base)
    return time.perf_counter() - t0


def timeline(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="netshrink-inodes-", dir=root) as tmp:
        work = Path(tmp)
        quiet = inode_probe_us(work, args.probe)
        churn(work, args.churn)
        t0 = time.monotonic()
        after = []
        while True:
            after.append((round(time.monotonic() - t0), inode_probe_us(work, args.probe)))
            if time.monotonic() - t0 + args.every_s > args.for_s:
                break
            time.sleep(args.every_s)
    return {"root": str(root), "quiet_us": quiet, "after_churn_us": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--churn", type=int, default=20000, help="job-like pairs created, then deleted")
    parser.add_argument("--probe", type=int, default=200, help="pairs per probe")
    parser.add_argument("--every-s", type=float, default=30.0)
    parser.add_argument("--for-s", type=float, default=360.0)
    args = parser.parse_args()
    roots = [args.root] + ([Path("/dev/shm")] if Path("/dev/shm").is_dir() else [])
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    results["runs"] = [timeline(root, args) for root in roots]
    for run in results["runs"]:
        after = ", ".join(f"+{t} s: {us}" for t, us in run["after_churn_us"])
        print(f"{run['root']}: quiet {run['quiet_us']} µs per pair; after deleting {args.churn}: {after}")
    out = ROOT / "bench" / "results" / "inodes.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
