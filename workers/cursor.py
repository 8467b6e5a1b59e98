"""List cursors and the microsecond sort key (split from ``workers/jobs.py``, the job record).

Ref: docs/api.md "GET /v1/jobs"; ``JobStore.list`` in ``workers/jobs.py``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netshrink.workers.jobs import Job

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(when: datetime) -> int:
    """Exact integer microseconds since the epoch (sort key; exact in a Redis double score)."""
    return (when - _EPOCH) // timedelta(microseconds=1)


CURSOR_PATTERN = r"^[0-9]{1,16}\.[A-Za-z0-9_-]{1,64}$"
"""``<created µs>.<job id>``: a keyset position, so EVERY string of this form is a valid cursor
(the page starts after that position, issued by this server or not); the OpenAPI document gives
the pattern, and anything else is a 400. Ref: docs/api.md "GET /v1/jobs"."""
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(job: Job) -> str:
    """List cursor: the (created_at, id) of the last item on a page."""
    return f"{to_us(job.created_at)}.{job.id}"


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Inverse of ``encode_cursor``: (created_us, job_id). ValueError off ``CURSOR_PATTERN`` (API: 400)."""
    if not _CURSOR.fullmatch(cursor):
        raise ValueError("invalid cursor")
    us, job_id = cursor.split(".", 1)
    return int(us), job_id


__all__ = ["CURSOR_PATTERN", "decode_cursor", "encode_cursor", "to_us"]
