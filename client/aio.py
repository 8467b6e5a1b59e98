"""Asynchronous netshrink SDK on ``httpx.AsyncClient``: the same methods as ``NetshrinkClient``.

Request building, retry decisions, problem parsing and digest checks are shared through
``client._protocol``; this module only awaits. Ref: docs/api.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from netshrink.client import _protocol as p
from netshrink.client.errors import ServerUnreachableError, WaitTimeoutError
from netshrink.client.models import Job, JobPage

AsyncProgressCallback = Callable[[Job], Awaitable[None] | None]


class AsyncNetshrinkClient:
    """Async twin of ``client.sync.NetshrinkClient``; use as ``async with``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: p.RetryPolicy | None = None,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.base_url, self.api_key = p.resolve_config(base_url, api_key)
        self.retry = retry or p.RetryPolicy()
        self.poll_interval_s = poll_interval_s
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=p.default_headers(self.api_key),
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncNetshrinkClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def submit(
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
        return p.job_from(await self._send(call))

    async def get(self, job_id: str) -> Job:
        return p.job_from(await self._send(p.Call("GET", p.job_path(job_id))))

    async def list(
        self, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JobPage:
        return p.page_from(await self._send(p.list_call(status, limit, cursor)))

    async def iter_jobs(self, status: str | None = None, page_size: int | None = None) -> AsyncIterator[Job]:
        cursor: str | None = None
        while True:
            page = await self.list(status=status, limit=page_size, cursor=cursor)
            for job in page.items:
                yield job
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def wait(
        self, job_id: str, *, timeout_s: float, on_progress: AsyncProgressCallback | None = None
    ) -> Job:
        """Follow the job until terminal with long polls, as ``NetshrinkClient.wait`` does;
        ``on_progress`` may be sync or async."""
        deadline = time.monotonic() + timeout_s
        etag: str | None = None
        while True:
            wait_n = p.long_poll_s(self._http.timeout.read, deadline - time.monotonic())
            response = await self._send(p.watch_call(job_id, wait_n, etag))
            job = p.job_from(response)
            etag = response.headers.get("ETag")
            if on_progress is not None:
                maybe = on_progress(job)
                if maybe is not None:
                    await maybe
            remaining = deadline - time.monotonic()
            if job.is_terminal:
                return job
            if remaining <= 0:
                raise WaitTimeoutError(f"job {job_id} still {job.status} after {timeout_s:g} s", job)
            await asyncio.sleep(p.poll_delay(job, self.poll_interval_s, remaining, response))

    async def cancel(self, job_id: str) -> Job:
        return p.job_from(await self._send(p.Call("POST", p.job_path(job_id) + "/cancel")))

    async def delete(self, job_id: str) -> None:
        p.raise_for_problem(await self._send(p.Call("DELETE", p.job_path(job_id))))

    async def report(self, job_id: str) -> dict[str, Any]:
        return p.json_from(await self._send(p.Call("GET", p.job_path(job_id) + "/report")))

    async def download(
        self, job_id: str, out_dir: str | os.PathLike[str], names: Sequence[str] | None = None
    ) -> dict[str, Path]:
        plan = p.download_plan(await self.get(job_id), Path(out_dir), names)
        paths: dict[str, Path] = {}
        for name, dest, stated in plan:
            paths[name] = await self._download_one(p.job_path(job_id) + f"/artifacts/{name}", dest, stated)
        return paths

    async def capabilities(self) -> dict[str, Any]:
        return p.json_from(await self._send(p.Call("GET", "/v1/capabilities")))

    async def _send(self, call: p.Call, *, stream: bool = False) -> httpx.Response:
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
                    response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                delay = self.retry.delay(attempt, None)
                if delay is None:
                    raise ServerUnreachableError(f"{self.base_url}: {exc}") from exc
            else:
                delay = self.retry.delay(attempt, response)
                if delay is None:
                    return response
                await response.aclose()
            await asyncio.sleep(delay)
            attempt += 1

    async def _download_one(self, path: str, dest: Path, stated: str | None) -> Path:
        response = await self._send(p.Call("GET", path), stream=True)
        try:
            if not response.is_success:
                await response.aread()
                p.raise_for_problem(response)
            sink = p.sink_for(response, dest, stated)
            try:
                async for chunk in response.aiter_bytes():
                    sink.write(chunk)
            except BaseException:
                sink.abort()
                raise
            return sink.finish()
        finally:
            await response.aclose()
