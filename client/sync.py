"""Synchronous netshrink SDK on ``httpx.Client``.

    >>> with NetshrinkClient("http://127.0.0.1:8000") as ns:
    ...     job = ns.submit("mlp.onnx", {"prune": {"keep": 0.5}, "quantize": {"bits": 4}})
    ...     job = ns.wait(job.id, timeout_s=600)
    ...     paths = ns.download(job.id, "out/")

Ref: docs/api.md (the HTTP contract). Request building, retries and digest checks live in
``client._protocol`` and are shared with ``client.aio``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from netshrink.client import _protocol as p
from netshrink.client.errors import ServerUnreachableError, WaitTimeoutError
from netshrink.client.models import Job, JobPage

ProgressCallback = Callable[[Job], None]


class NetshrinkClient:
    """A client for one netshrink server.

    ``base_url`` and ``api_key`` default to ``NETSHRINK_SERVER``/``NETSHRINK_API_KEY``.
    ``transport`` lets tests (or proxies) plug in any ``httpx.BaseTransport``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        retry: p.RetryPolicy | None = None,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.base_url, self.api_key = p.resolve_config(base_url, api_key)
        self.retry = retry or p.RetryPolicy()
        self.poll_interval_s = poll_interval_s
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=p.default_headers(self.api_key),
            timeout=timeout,
            transport=transport,
        )

    # ---- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NetshrinkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- jobs --------------------------------------------------------------------------------
    def submit(
        self,
        model_path: str | os.PathLike[str],
        spec: Mapping[str, Any] | None = None,
        *,
        architecture: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        calibration: str | os.PathLike[str] | None = None,
        idempotency_key: str | None = None,
        wait_s: float | None = None,
        train: str | os.PathLike[str] | None = None,
        validation: str | os.PathLike[str] | None = None,
    ) -> Job:
        """Upload a model with its ``JobSpec``; 202 gives a queued job, ``wait_s`` may give a finished one.

        ``train`` (and optionally ``validation``): the ``.npz`` files of a ``{"kind": "finetune"}`` job."""
        call = p.submit_call(
            model_path,
            spec,
            architecture=architecture,
            calibration=calibration,
            idempotency_key=idempotency_key,
            wait_s=wait_s,
            train=train,
            validation=validation,
        )
        return p.job_from(self._send(call))

    def get(self, job_id: str) -> Job:
        return p.job_from(self._send(p.Call("GET", p.job_path(job_id))))

    def list(self, status: str | None = None, limit: int | None = None, cursor: str | None = None) -> JobPage:
        """One page of the caller's jobs, newest first."""
        return p.page_from(self._send(p.list_call(status, limit, cursor)))

    def iter_jobs(self, status: str | None = None, page_size: int | None = None) -> Iterator[Job]:
        """Every job of the caller, following ``next_cursor`` across pages."""
        cursor: str | None = None
        while True:
            page = self.list(status=status, limit=page_size, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def wait(self, job_id: str, *, timeout_s: float, on_progress: ProgressCallback | None = None) -> Job:
        """Follow the job until it is terminal. Raises ``WaitTimeoutError``.

        Each GET is a long poll (``Prefer: wait`` with the last ``ETag`` in ``If-None-Match``): the
        server answers as soon as the job changes, so ``on_progress`` sees each state the job goes
        through (stage, layer, fraction; states closer together than the server's re-read interval
        are merged), the last one included. A server that does not apply the preference is polled
        as its ``Retry-After`` says.
        """
        deadline = time.monotonic() + timeout_s
        etag: str | None = None
        while True:
            remaining = deadline - time.monotonic()
            wait_n = p.long_poll_s(self._http.timeout.read, remaining)
            response = self._send(p.watch_call(job_id, wait_n, etag))
            job = p.job_from(response)
            etag = response.headers.get("ETag")
            if on_progress is not None:
                on_progress(job)
            remaining = deadline - time.monotonic()
            if job.is_terminal:
                return job
            if remaining <= 0:
                raise WaitTimeoutError(f"job {job_id} still {job.status} after {timeout_s:g} s", job)
            time.sleep(p.poll_delay(job, self.poll_interval_s, remaining, response))

    def cancel(self, job_id: str) -> Job:
        return p.job_from(self._send(p.Call("POST", p.job_path(job_id) + "/cancel")))

    def delete(self, job_id: str) -> None:
        p.raise_for_problem(self._send(p.Call("DELETE", p.job_path(job_id))))

    def report(self, job_id: str) -> dict[str, Any]:
        """The ``CompressionReport`` as JSON (docs/report-format.md)."""
        return p.json_from(self._send(p.Call("GET", p.job_path(job_id) + "/report")))

    def download(
        self, job_id: str, out_dir: str | os.PathLike[str], names: Sequence[str] | None = None
    ) -> dict[str, Path]:
        """Stream artifacts into ``out_dir``, each checked against its sha256; name -> path."""
        plan = p.download_plan(self.get(job_id), Path(out_dir), names)
        paths: dict[str, Path] = {}
        for name, dest, stated in plan:
            paths[name] = self._download_one(p.job_path(job_id) + f"/artifacts/{name}", dest, stated)
        return paths

    # ---- service -----------------------------------------------------------------------------
    def capabilities(self) -> dict[str, Any]:
        return p.json_from(self._send(p.Call("GET", "/v1/capabilities")))

    # ---- transport ---------------------------------------------------------------------------
    def _send(self, call: p.Call, *, stream: bool = False) -> httpx.Response:
        """Send with retries on 429/503 and connection errors (honouring ``Retry-After``)."""
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                with call.open_files() as files:
                    request = self._http.build_request(
                        call.method,
                        call.path,
                        params=call.params,
                        headers=call.headers,
                        data=call.data or None,
                        files=files,
                    )
                    response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                delay = self.retry.delay(attempt, None)
                if delay is None:
                    raise ServerUnreachableError(f"{self.base_url}: {exc}") from exc
            else:
                delay = self.retry.delay(attempt, response)
                if delay is None:
                    return response
                response.close()
            time.sleep(delay)
            attempt += 1

    def _download_one(self, path: str, dest: Path, stated: str | None) -> Path:
        response = self._send(p.Call("GET", path), stream=True)
        try:
            if not response.is_success:
                response.read()
                p.raise_for_problem(response)
            sink = p.sink_for(response, dest, stated)
            try:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
            except BaseException:
                sink.abort()
                raise
            return sink.finish()
        finally:
            response.close()
