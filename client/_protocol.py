"""Sans-I/O core shared by the sync and async clients: requests, retries, errors, digests.

Both clients build the same ``Call`` objects and feed responses through the same functions; only
the sending and sleeping differ (the ``httpx.Client``/``httpx.AsyncClient`` split, as httpx itself
does it). Ref: docs/api.md (contract), RFC 9457 (problems), RFC 9110 §10.2.3 (Retry-After),
RFC 9530 (Content-Digest), IETF Idempotency-Key draft.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from netshrink.client.errors import ApiError, DigestMismatchError
from netshrink.client.models import Job, JobPage

DEFAULT_SERVER = "http://127.0.0.1:8000"
ENV_SERVER, ENV_API_KEY = "NETSHRINK_SERVER", "NETSHRINK_API_KEY"
RETRY_STATUSES = frozenset({429, 503})
USER_AGENT = "netshrink-client/0.1"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for 429/503 and connection errors: honour ``Retry-After``, else exponential backoff.

    ``max_delay_s`` caps any single sleep, including a server's ``Retry-After``.
    """

    max_retries: int = 5
    backoff_s: float = 0.5
    max_delay_s: float = 30.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to sleep before retry ``attempt + 1``, or ``None`` to stop retrying."""
        if attempt >= self.max_retries:
            return None
        if response is not None and response.status_code not in RETRY_STATUSES:
            return None
        hinted = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        backoff = self.backoff_s * 2**attempt
        return min(self.max_delay_s, hinted if hinted is not None else backoff)


@dataclass(frozen=True)
class Call:
    """One logical request. File parts are paths, opened afresh for every attempt."""

    method: str
    path: str
    params: dict[str, str | int] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    @contextlib.contextmanager
    def open_files(self) -> Iterator[dict[str, tuple[str, IO[bytes], str]] | None]:
        """Yield httpx's ``files=`` argument with fresh handles; closes them afterwards."""
        if not self.files:
            yield None
            return
        with contextlib.ExitStack() as stack:
            yield {
                part: (path.name, stack.enter_context(path.open("rb")), "application/octet-stream")
                for part, path in self.files.items()
            }


# ---- configuration ---------------------------------------------------------------------------
def resolve_config(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """Explicit arguments win; then ``NETSHRINK_SERVER``/``NETSHRINK_API_KEY``; then the local default."""
    url = base_url or os.environ.get(ENV_SERVER) or DEFAULT_SERVER
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY) or None
    return url.rstrip("/"), key


def default_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json, application/problem+json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


# ---- request builders ------------------------------------------------------------------------
def submit_call(
    model_path: str | os.PathLike[str],
    spec: Mapping[str, Any] | None,
    *,
    architecture: str | os.PathLike[str] | Mapping[str, Any] | None,
    calibration: str | os.PathLike[str] | None,
    idempotency_key: str | None,
    wait_s: float | None,
    train: str | os.PathLike[str] | None = None,
    validation: str | os.PathLike[str] | None = None,
) -> Call:
    """``POST /v1/jobs`` as multipart. A missing ``Idempotency-Key`` is generated, so retries are safe."""
    model = Path(model_path)
    if not model.is_file():
        raise FileNotFoundError(model)
    data = {"spec": json.dumps(dict(spec or {}))}
    files = {"model": model}
    if isinstance(architecture, Mapping):
        data["architecture"] = json.dumps(dict(architecture))
    elif architecture is not None:
        files["architecture"] = Path(architecture)
    if calibration is not None:
        files["calibration"] = Path(calibration)
    for name, path in (("train", train), ("validation", validation)):  # kind finetune
        if path is not None:
            files[name] = Path(path)
    headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
    if wait_s is not None:
        headers["Prefer"] = f"wait={max(0, int(wait_s))}"
    return Call("POST", "/v1/jobs", headers=headers, data=data, files=files)


LONG_POLL_S = 25  # wait(): Prefer: wait=N per GET (the server caps N; the HTTP timeout must exceed it)


def watch_call(job_id: str, wait_s: int, etag: str | None) -> Call:
    """``GET /v1/jobs/{id}`` as a long poll: answered when the job differs from ``etag`` (docs/api.md)."""
    headers = {"Prefer": f"wait={wait_s}"} if wait_s > 0 else {}
    if etag and wait_s > 0:
        headers["If-None-Match"] = etag
    return Call("GET", job_path(job_id), headers=headers)


def long_poll_s(http_timeout_s: float | None, remaining_s: float) -> int:
    """Seconds to ask the server to hold a GET: under the HTTP read timeout and the caller's deadline."""
    room = LONG_POLL_S if http_timeout_s is None else min(LONG_POLL_S, http_timeout_s - 5.0)
    return max(0, int(min(room, remaining_s)))


def job_path(job_id: str) -> str:
    return f"/v1/jobs/{httpx.URL(path=job_id).path}"  # percent-encodes anything odd in the id


def list_call(status: str | None, limit: int | None, cursor: str | None) -> Call:
    params: dict[str, str | int] = {}
    if status is not None:
        params["status"] = status
    if limit is not None:
        params["limit"] = limit
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/jobs", params=params)


# ---- response handling -----------------------------------------------------------------------
def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def raise_for_problem(response: httpx.Response) -> None:
    """Raise ``ApiError`` for a non-2xx response, with the problem body (synthesized if absent)."""
    if response.is_success:
        return
    problem: dict[str, Any] | None = None
    try:
        body = response.json()
        if isinstance(body, dict):
            problem = body
    except (ValueError, UnicodeDecodeError):
        pass
    if problem is None:
        problem = {
            "type": "about:blank",
            "title": response.reason_phrase,
            "detail": response.text[:500],
        }
    problem.setdefault("status", response.status_code)
    problem.setdefault("title", response.reason_phrase)
    raise ApiError(problem)


def job_from(response: httpx.Response) -> Job:
    raise_for_problem(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return Job.from_json(response.json(), retry_after_s=retry_after)


def page_from(response: httpx.Response) -> JobPage:
    """``GET /v1/jobs`` body: ``{"items": [JobPublic], "next_cursor": str | null}``."""
    raise_for_problem(response)
    body = response.json()
    return JobPage(
        items=tuple(Job.from_json(j) for j in body.get("items", [])),
        next_cursor=body.get("next_cursor"),
    )


def json_from(response: httpx.Response) -> dict[str, Any]:
    raise_for_problem(response)
    body: dict[str, Any] = response.json()
    return body


def poll_delay(
    job: Job, default_s: float, remaining_s: float, response: httpx.Response | None = None
) -> float:
    """Follow the server's ``Retry-After`` while a job runs, never sleeping past the deadline.

    No sleep after a long poll the server applied (``Preference-Applied``): it already waited."""
    if response is not None and "wait=" in response.headers.get("Preference-Applied", ""):
        return 0.0
    hinted = job.retry_after_s if job.retry_after_s is not None else default_s
    return max(0.0, min(hinted, remaining_s))


# ---- downloads -------------------------------------------------------------------------------
def content_digest_sha256(header: str | None) -> str | None:
    """The hex sha-256 from an RFC 9530 ``Content-Digest: sha-256=:<base64>:`` header, if present."""
    if not header:
        return None
    for member in header.split(","):
        algo, _, value = member.strip().partition("=")
        if algo.strip().lower() == "sha-256":
            return base64.b64decode(value.strip().strip(":")).hex()
    return None


class DigestSink:
    """Writes a download to ``dest`` via a temporary name, hashing as it goes.

    ``finish`` checks the sha256 against every digest the server stated (the ``Content-Digest``
    header and the job's artifact list) before renaming into place, so a corrupt file is never
    visible under its final name.
    """

    def __init__(self, dest: Path, expected: list[tuple[str, str]]) -> None:
        self.dest = dest
        self.expected = [(src, hexd.lower()) for src, hexd in expected if hexd]
        self.tmp = dest.with_name(f".{dest.name}.part")
        self._hash = hashlib.sha256()
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.tmp.open("wb")

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._fh.write(chunk)

    def abort(self) -> None:
        self._fh.close()
        self.tmp.unlink(missing_ok=True)

    def finish(self) -> Path:
        self._fh.close()
        actual = self._hash.hexdigest()
        for source, hexd in self.expected:
            if hexd != actual:
                self.tmp.unlink(missing_ok=True)
                raise DigestMismatchError(f"{self.dest.name}: sha256 {actual} != {hexd} stated by {source}")
        self.tmp.replace(self.dest)
        return self.dest


def download_plan(job: Job, out_dir: Path, names: Sequence[str] | None) -> list[tuple[str, Path, str | None]]:
    """(name, destination, stated sha256) per artifact: all listed ones, or just ``names``.

    A name the job does not list is still requested (the server answers 404 if it has none).
    """
    stated = {a.name: a.sha256 for a in job.artifacts}
    wanted = names if names is not None else list(stated)
    plan = []
    for name in wanted:
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"refusing artifact name {name!r}")  # never write outside out_dir
        plan.append((name, out_dir / name, stated.get(name)))
    return plan


def sink_for(response: httpx.Response, dest: Path, stated_sha256: str | None) -> DigestSink:
    """Start writing a (successful, streamed) artifact response to ``dest``."""
    expected = [("Content-Digest", content_digest_sha256(response.headers.get("Content-Digest")) or "")]
    expected.append(("the job's artifact list", stated_sha256 or ""))
    return DigestSink(dest, expected)
