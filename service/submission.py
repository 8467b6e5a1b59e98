"""POST /v1/jobs helpers: field parsing, idempotency, the fingerprint, and validation by the core.

The service never runs an algorithm, but it does *load* the model once (ONNX checker, shape
inference, supported ops; state dict + architecture consistency) and the calibration arrays,
so a request that can never succeed is refused with a 4xx and no job (docs/api.md "POST /v1/jobs").
The worker loads the same files again with the same functions, so the two cannot disagree.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from netshrink.compression.errors import CalibrationError
from netshrink.compression.finetune.spec import FinetuneSpec
from netshrink.compression.spec import CompressSpec
from netshrink.service.errors import ApiError, validation_errors
from netshrink.service.schemas import JobSpecCreate, ProblemFieldError
from netshrink.service.settings import ServiceSettings
from netshrink.service.uploads import ParsedUpload
from netshrink.workers.jobs import Job, JobNotFoundError, JobStore
from netshrink.workers.run import ARCHITECTURE_INPUT, CALIBRATION_INPUT, TRAIN_INPUT, VALIDATION_INPUT
from netshrink.workers.webhooks import WebhookTargetError, check_target


def fingerprint(upload: ParsedUpload, spec: JobSpecCreate, architecture: Any) -> str:
    """sha256 over everything that defines the job: model bytes, normalized spec, architecture,
    calibration bytes. Two requests with the same fingerprint are the same request
    (draft-ietf-httpapi-idempotency-key-header §2.2, "payload fingerprint")."""
    h = hashlib.sha256()
    h.update(upload.files["model"].sha256.encode())
    h.update(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode())
    h.update(json.dumps(architecture, sort_keys=True).encode())
    for name in ("calibration", "train", "validation"):
        part = upload.files.get(name)
        h.update((part.sha256 if part else "-").encode())
    return h.hexdigest()


def validate_inputs(
    upload: ParsedUpload,
    architecture: Any,
    spec: JobSpecCreate,
    settings: ServiceSettings,
    core: CompressSpec | FinetuneSpec | None = None,
) -> int:
    """Load model and calibration with the core; put the files under their final names.

    ``core`` is ``spec.to_core()`` when the caller has it already. Returns the model's parameter
    count. Raises ``CompressionError`` subclasses (mapped by ``service.errors``) or ``ApiError``.
    Blocking: call it from a thread.
    """
    core = core if core is not None else spec.to_core()
    # imported late: these pull in torch
    from netshrink.compression.graph.calibration import MIN_SAMPLES, check_calibration
    from netshrink.compression.graph.loading import load_model
    from netshrink.compression.search.spec_check import check_spec

    if spec.callback is not None:
        try:
            check_target(str(spec.callback.url), settings.webhook_allow_hosts)
        except WebhookTargetError as exc:
            raise ApiError(422, "invalid-callback", "The callback URL is refused", str(exc)) from None
    model = upload.files["model"]
    final = model.path.with_name(f"model.{model.format}")
    model.path.replace(final)
    model.path = final
    if architecture is not None:
        (final.parent / ARCHITECTURE_INPUT).write_text(json.dumps(architecture))
    net = load_model(final, architecture=architecture, limits=settings.load_limits())
    _check_parts(upload, spec)
    if spec.kind == "finetune":
        assert not isinstance(core, CompressSpec)
        if core.compress is not None:  # the follow-up compress: the same checks as kind compress's
            check_spec(net, core.compress)  # (until 2026-12-05 it failed after all the training)
        _validate_training(upload, net, core, settings)
    elif spec.kind != "analyze":
        assert isinstance(core, CompressSpec)
        check_spec(net, core)  # unknown layer names, structured pruning on a generic graph, ...
    if spec.device == "cuda" and settings.embedded and not _cuda_available():
        # Embedded mode runs jobs here; with Redis a GPU worker elsewhere takes the `gpu` queue.
        raise ApiError(
            422,
            "invalid-spec",
            "The compression spec is invalid",
            "device 'cuda' was asked for but this embedded server has no CUDA device",
        )
    calibration = upload.files.get("calibration")
    if calibration is not None:
        path = calibration.path.with_name(CALIBRATION_INPUT)
        calibration.path.replace(path)
        calibration.path = path
        # Streamed in 1 MiB chunks: a small file declaring GiBs of zeros never sits in the API's memory.
        measured = (
            isinstance(core, CompressSpec)
            and core.kind == "compress"
            and core.evaluation.inputs == "calibration"
        )
        check_calibration(
            path,
            net,
            max_bytes=settings.max_unzipped_bytes,
            min_samples=MIN_SAMPLES if measured else 1,  # a compress job measures its error on them
        )
    return int(net.n_params)


def warm_up() -> None:
    """Import the modules ``validate_inputs`` imports late (torch, onnx, the core's loaders), so the
    first submit does not pay for them and they can be frozen out of the GC (``main.settle_heap``)."""
    from netshrink.compression.finetune.job import check_inputs
    from netshrink.compression.graph.calibration import check_calibration
    from netshrink.compression.graph.loading import load_model
    from netshrink.compression.search.spec_check import check_spec

    del check_calibration, check_inputs, check_spec, load_model


def _check_parts(upload: ParsedUpload, spec: JobSpecCreate) -> None:
    """``train``/``validation`` go with kind finetune only (which needs ``train``), ``calibration`` with
    kind compress only (the document's ``dependentSchemas`` say so too: ``submit_body.SUBMIT_BODY``)."""
    if spec.kind == "finetune":
        if "train" not in upload.files:
            raise _part_refused("train", "kind finetune needs the train form field")
        if "calibration" in upload.files:
            raise _part_refused(
                "calibration",
                "kind finetune takes no calibration: its validation split calibrates the follow-up compress",
            )
    elif "train" in upload.files or "validation" in upload.files:
        raise _part_refused(
            "train" if "train" in upload.files else "validation", "train/validation need kind finetune"
        )
    elif spec.kind == "analyze" and "calibration" in upload.files:  # until 2026-12-05 accepted and ignored
        raise _part_refused(
            "calibration", "kind analyze takes no calibration: it measures nothing, it reads the weights"
        )


def _part_refused(part: str, detail: str) -> ApiError:
    where = ProblemFieldError(detail=detail, pointer=f"/{part}", field=part, location="body")
    return ApiError(422, "validation", "The request is invalid", detail, errors=[where])


def _validate_training(upload: ParsedUpload, net: Any, core: FinetuneSpec, settings: ServiceSettings) -> None:
    """Put the training files under their final names and check them against the model (labels, shapes)."""
    from netshrink.compression.finetune.job import check_inputs

    paths = {}
    for part, name in (("train", TRAIN_INPUT), ("validation", VALIDATION_INPUT)):
        f = upload.files.get(part)
        if f is not None:
            path = f.path.with_name(name)
            f.path.replace(path)
            f.path = path
            paths[part] = path
    check_inputs(
        net, core, paths["train"], validation=paths.get("validation"), max_bytes=settings.max_unzipped_bytes
    )
    if core.compress is not None:  # the follow-up measures on the validation split: 2 samples or more
        _check_measured_split(paths["train"], paths.get("validation"), core, settings)


def _check_measured_split(
    train: Path, validation: Path | None, core: FinetuneSpec, settings: ServiceSettings
) -> None:
    """The core's ``check_follow_up_samples`` (docs/api.md rule 3), from the array headers only (the
    files were checked in full just before): until 2026-12-05 a follow-up compress on a 1-sample
    split trained fully, then failed blaming ``/calibration``."""
    from netshrink.compression.finetune.checks import check_follow_up_samples
    from netshrink.compression.finetune.data import carved_validation
    from netshrink.compression.io.arrays import index_arrays

    def samples(path: Path) -> int:
        headers = index_arrays(path, max_bytes=settings.max_unzipped_bytes, invalid=CalibrationError)
        return int(headers["inputs"].shape[0])

    if validation is not None:
        check_follow_up_samples(core, samples(validation), carved=False, n_train_file=0)
        return
    n = samples(train)
    check_follow_up_samples(core, carved_validation(n, core.validation_fraction), carved=True, n_train_file=n)


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


# ---- request parsing (used by POST /v1/jobs) -------------------------------------------------------
# RFC 7240 §4.3: wait=delta-seconds, a whole number ending the preference ("wait=1e9" is no wait)
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)\s*(?:[,;]|$)", re.IGNORECASE)


MAX_JSON_DEPTH = 32  # the deepest real spec/architecture nests 5 levels


def parse_json_field(raw: str | None, name: str) -> Any:
    """A JSON form field, or 422: malformed JSON, nesting deeper than ``MAX_JSON_DEPTH`` (100k ``[``
    made ``json.loads`` raise RecursionError), integers longer than Python's 4300-digit conversion
    limit (ValueError), and non-finite ``NaN``/``Infinity`` literals are all refused here."""
    if raw is None:
        return None
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise _invalid_json(name, exc.msg) from None
    except RecursionError:
        raise _invalid_json(name, f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # int("9" * 5000): "Exceeds the limit (4300 digits) ..."
        raise _invalid_json(name, str(exc).split(";")[0][:120]) from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise _invalid_json(name, f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def _invalid_json(name: str, why: str) -> ApiError:
    return ApiError(422, "validation", "The request is invalid", f"{name} is not valid JSON: {why}")


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, iteratively (no recursion on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                stack.extend(
                    (child, depth + 1) for child in (node.values() if isinstance(node, dict) else node)
                )
    return deepest


def parse_spec(raw: str | None) -> JobSpecCreate:
    if raw is None:
        raise ApiError(422, "validation", "The request is invalid", "the spec form field is required")
    data = _json_integers(parse_json_field(raw, "spec"))
    try:
        spec = JobSpecCreate.model_validate(data)
    except ValidationError as exc:
        raise ApiError(
            422,
            "invalid-spec",
            "The compression spec is invalid",
            "the spec failed validation; see errors",
            errors=validation_errors(exc.errors(include_url=False), prefix=("body", "spec")),
        ) from None
    refused = spec.analyze_refusals()
    if refused:  # the document's `dependentSchemas` say so too (schemas.ANALYZE_REFUSES)
        why = "kind analyze compresses nothing and takes no compression options"
        raise ApiError(
            422,
            "invalid-spec",
            "The compression spec is invalid",
            f"{why}; got {', '.join(refused)} (it takes seed, device, full_diagnostics and callback; "
            "use kind compress)",
            errors=[
                ProblemFieldError(
                    detail=f"{name}: {why}", pointer=f"/spec/{name}", field=f"spec.{name}", location="body"
                )
                for name in refused
            ],
        )
    return spec


def _json_integers(value: Any) -> Any:
    """JSON Schema's integers include integral numbers written as ``4.0``; the strict models
    (``schemas._In``) take Python ints for them, and an int where a float is asked is fine."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _json_integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_integers(v) for v in value]
    return value


def prefer_wait_s(prefer: str | None, cap_s: float) -> float | None:
    match = _PREFER_WAIT.search(prefer or "")
    return min(float(match.group(1)), cap_s) if match else None


def idempotency_conflict(key: str) -> ApiError:
    return ApiError(
        422,
        "idempotency-key-reused",
        "Idempotency-Key reused with a different request",
        f"Idempotency-Key {key!r} was already used with a different payload; use a new key",
    )


def find_replay(store: JobStore, key: str, owner: str, fp: str) -> Job | None:
    found = store.idempotency_lookup(key, owner)
    if found is None:
        return None
    first_fp, first_id = found
    if first_fp != fp:
        raise idempotency_conflict(key)
    try:
        return store.get(first_id)
    except JobNotFoundError:  # the first job was deleted since: treat the key as fresh
        return None


__all__ = [
    "find_replay",
    "fingerprint",
    "idempotency_conflict",
    "parse_json_field",
    "parse_spec",
    "prefer_wait_s",
    "validate_inputs",
    "warm_up",
]
