"""netshrink Python SDK: talks to a netshrink server over HTTP only (httpx).

Depends on the HTTP contract (API.md), never on ``service``/``workers``/``compression``.
"""

from client._protocol import RetryPolicy
from client.aio import AsyncNetshrinkClient
from client.errors import (
    ApiError,
    DigestMismatchError,
    NetshrinkError,
    ServerUnreachableError,
    WaitTimeoutError,
)
from client.models import TERMINAL_STATUSES, Artifact, Job, JobPage, JobStatus, Progress
from client.sync import NetshrinkClient

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
