"""Downloads: ``GET /v1/jobs/{id}/artifacts/{name}`` and ``GET /v1/jobs/{id}/report``.

Artifacts carry ``ETag`` (the quoted sha256), an RFC 9530 ``Content-Digest``, ``Content-Length`` and
``Content-Disposition``; ``If-None-Match`` answers 304. ``HEAD`` answers the same headers without the
body (a size or digest check before a download; 405 until 2026-12-05), and ``Range`` is served by
Starlette's ``FileResponse`` (206). Ref: docs/api.md "GET /v1/jobs/{id}/artifacts".
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from fastapi.responses import FileResponse, JSONResponse

from netshrink.service.deps import ArtifactsDep, PrincipalDep, SettingsDep, StoreDep
from netshrink.service.errors import ApiError, not_found
from netshrink.service.routes.responses import ERROR_RESPONSES, PROBLEM_RESPONSE, owned_job
from netshrink.workers.artifacts import MEDIA_TYPES

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_OCTET = "application/octet-stream"
ARTIFACT_MEDIA_TYPES = [_OCTET, *sorted({m.split(";")[0] for m in MEDIA_TYPES.values()} - {_OCTET})]


def content_digest(sha256_hex: str) -> str:
    """RFC 9530 ``Content-Digest`` from a hex sha256: ``sha-256=:<base64>:``."""
    return "sha-256=:" + base64.b64encode(bytes.fromhex(sha256_hex)).decode() + ":"


_ARTIFACT_HEADERS = {
    h: {"schema": {"type": "string"}}
    for h in ("ETag", "Content-Digest", "Content-Disposition", "Content-Length")
}


@router.get(
    "/{job_id}/artifacts/{name}",
    summary="Download an artifact",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file",
            # The Content-Type follows the name (workers.artifacts.MEDIA_TYPES); every one is a binary
            # body. application/octet-stream comes first: generators that use one media type per
            # response take the first they know, and then read each artifact as raw bytes.
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}} for media in ARTIFACT_MEDIA_TYPES
            },
            "headers": _ARTIFACT_HEADERS,
        },
        304: {"description": "Not modified (If-None-Match matched the ETag)"},
        **ERROR_RESPONSES,
    },
)
def download_artifact(
    job_id: str,
    name: str,
    principal: PrincipalDep,
    store: StoreDep,
    artifacts: ArtifactsDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    job = owned_job(store, job_id, principal.owner)
    info = next((a for a in job.artifacts if a.name == name), None)
    if info is None:
        raise not_found("artifact")
    etag = f'"{info.sha256}"'
    headers = {
        "ETag": etag,
        "Content-Digest": content_digest(info.sha256),
        "Cache-Control": "private, max-age=0",
    }
    if if_none_match and (
        if_none_match.strip() == "*"
        or etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    ):
        return Response(status_code=304, headers=headers)
    path = artifacts.path(job_id, name)
    if not path.is_file():
        raise not_found("artifact")
    return FileResponse(
        path,
        media_type=info.media_type,
        filename=name,
        headers=headers,
        content_disposition_type="attachment",
    )


# HEAD: the GET's own handler; Starlette's FileResponse sends the headers only.
router.head(
    "/{job_id}/artifacts/{name}",
    summary="An artifact's headers (size, digest, ETag) without its body",
    operation_id="head_artifact_v1_jobs__job_id__artifacts__name__head",
    description="The GET's status and headers without the body: a size or digest check before a download.",
    responses={
        200: {"description": "The headers a GET would send", "headers": _ARTIFACT_HEADERS},
        304: {"description": "Not modified (If-None-Match matched the ETag)"},
        **ERROR_RESPONSES,
    },
)(download_artifact)


@router.get(
    "/{job_id}/report",
    summary="The CompressionReport as JSON",
    response_model=dict[str, Any],
    responses={409: {"description": "The job has not finished yet", **PROBLEM_RESPONSE}, **ERROR_RESPONSES},
)
def get_report(job_id: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep) -> Response:
    job = owned_job(store, job_id, principal.owner, report=True)
    if job.report is None:
        if not job.status.is_terminal:
            raise ApiError(
                409,
                "not-ready",
                "The report is not ready",
                f"the job is {job.status.value}",
                headers={"Retry-After": str(settings.retry_after_s)},
            )
        raise ApiError(
            404,
            "not-found",
            "Not found",
            f"No such report: the job {job.status.value} without one; "
            f"GET /v1/jobs/{job_id} gives its status" + (" and error." if job.error else "."),
        )
    return JSONResponse(job.report)
