"""The OpenAPI 3.1 document: FastAPI's, plus what it cannot infer.

- ``components.schemas.JobSpecCreate``: the ``spec`` form part is parsed by hand (streamed
  upload), so its schema is added here and referenced from the request body's ``contentSchema``.
- ``securitySchemes.bearerAuth`` and per-operation ``security`` (the probes and /metrics are open).
- ``webhooks``: one entry per ``job.*`` event with its payload and the Standard Webhooks headers.
- ``callbacks`` on ``POST /v1/jobs``: the same events, sent to ``spec.callback.url``.
Ref: OpenAPI 3.1.0 §4.8.1 (webhooks), §4.8.17 (callbacks); docs/api.md "Webhooks".
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from netshrink.service.errors import PROBLEM_MEDIA_TYPE
from netshrink.service.schemas import EVENTS, JobSpecCreate, Problem, WebhookEvent

OPEN_PATHS = ("/healthz", "/readyz", "/metrics")
_REF = "#/components/schemas/{model}"
_EVENT_DOC = {
    "job.started": "A worker picked the job up.",
    "job.progress": "The job advanced (throttled; at most one per interval).",
    "job.succeeded": "The job finished; artifacts and report are available.",
    "job.failed": "The job failed; `data.error` holds the problem.",
    "job.cancelled": "The job was cancelled.",
    "job.*": "Any job event this callback subscribed to (`spec.callback.events`); `type` names it.",
}


def _add_schema(components: dict[str, Any], model: type[Any]) -> None:
    schema = model.model_json_schema(ref_template=_REF)
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components[model.__name__] = schema


def _webhook_operation(event: str) -> dict[str, Any]:
    header = {"required": True, "schema": {"type": "string"}}
    return {
        "post": {
            "summary": event,
            "description": _EVENT_DOC[event] + " Verify `webhook-signature` with your key's `whsec_` secret.",
            "operationId": "webhook_" + event.replace(".", "_").replace("*", "event"),
            "parameters": [
                {"name": "webhook-id", "in": "header", "description": "Stable across retries.", **header},
                {"name": "webhook-timestamp", "in": "header", "description": "Unix seconds.", **header},
                {
                    "name": "webhook-signature",
                    "in": "header",
                    "description": "`v1,<base64 HMAC-SHA256 of id.timestamp.body>`.",
                    **header,
                },
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF.format(model="WebhookEvent")}}},
            },
            "responses": {"2XX": {"description": "Received; any other status is retried with backoff."}},
        }
    }


def _problem_responses(doc: dict[str, Any]) -> None:
    """Every error response is problem+json: replace FastAPI's default 422 (``HTTPValidationError``)
    and add ``default`` (any other status, e.g. 401/429/500) to each operation."""
    problem = {"content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _REF.format(model="Problem")}}}}
    for item in doc["paths"].values():
        for op in item.values():
            responses = op.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {
                    "description": responses["422"].get("description", "Validation error"),
                    **problem,
                }
            responses["default"] = {"description": "An error (RFC 9457 problem details)", **problem}
    for name in ("HTTPValidationError", "ValidationError"):
        doc["components"]["schemas"].pop(name, None)


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The full document for ``app`` (cached on ``app.openapi_schema``)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version="3.1.0",
        description=app.description,
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _add_schema(schemas, JobSpecCreate)
    _add_schema(schemas, WebhookEvent)
    _add_schema(schemas, Problem)
    components["securitySchemes"] = {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `netshrink keys create`.",
        }
    }
    doc["security"] = [{"bearerAuth": []}]
    for path in OPEN_PATHS:
        for op in doc["paths"].get(path, {}).values():
            op["security"] = []
    _problem_responses(doc)
    doc["webhooks"] = {event: _webhook_operation(event) for event in EVENTS}
    submit = doc["paths"]["/v1/jobs"]["post"]
    submit["callbacks"] = {"jobEvent": {"{$request.body#/spec/callback/url}": _webhook_operation("job.*")}}
    app.openapi_schema = doc
    return doc


__all__ = ["build_openapi"]
