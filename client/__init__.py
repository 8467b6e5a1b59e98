"""netshrink Python SDK: talks to a netshrink server over HTTP only (httpx).

Depends on the HTTP contract (docs/api.md), never on ``service``/``workers``/``compression``.
"""

from netshrink.client._protocol import RetryPolicy
from netshrink.client.aio import AsyncNetshrinkClient
from netshrink.client.errors import (
    ApiError,
    DigestMismatchError,
    NetshrinkError,
    ServerUnreachableError,
    WaitTimeoutError,
)
from netshrink.client.models import TERMINAL_STATUSES, Artifact, Job, JobPage, JobStatus, Progress
from netshrink.client.sync import NetshrinkClient

__all__ = [
    "TERMINAL_STATUSES",
    "ApiError",
    "Artifact",
    "AsyncNetshrinkClient",
    "DigestMismatchError",
    "Job",
    "JobPage",
    "JobStatus",
    "NetshrinkClient",
    "NetshrinkError",
    "Progress",
    "RetryPolicy",
    "ServerUnreachableError",
    "WaitTimeoutError",
]
