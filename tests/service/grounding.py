"""What the OpenAPI document cannot say about ``POST /v1/jobs``, supplied to schemathesis' positive cases.

JSON Schema describes the *shape* of a submission: which parts, the typed ``spec`` (with its
cross-field rules in ``dependentSchemas``), the headers. It cannot describe what depends on another
part's *content* or on the server's environment. A schema-valid request is accepted when, in addition
(docs/api.md "What the document says, and what it cannot"):

1. ``model`` holds a loadable ONNX model, PyTorch state dict or safetensors file (random bytes are
   refused with 415; tests/service/test_hostile.py has hostile files);
2. ``architecture`` is given exactly with a state dict that needs one, and describes it;
3. ``calibration``/``train``/``validation`` hold arrays of the model's input shape (and labels in
   its output range), a ``train`` set without ``validation`` leaves ``validation_fraction`` of its
   samples (24 here) at least one to carve, two when a follow-up compress measures on them (kind
   finetune with compress fields: its ``validation`` needs two samples too, as ``calibration`` does);
4. layer names in ``exclude``, ``prune.keep`` and ``quantize.bits`` name layers of that model;
5. ``callback.url``'s host resolves to a public address, or is in ``NETSHRINK_WEBHOOK_ALLOW_HOSTS``;
6. ``device: cuda`` is asked of an embedded server only when it has a CUDA device;
7. an ``Idempotency-Key`` is not one already used with a different payload (the IETF draft's 422);
8. a neuron/channel ``prune.keep`` (randomized draws) keeps more than one unit on average of every
   layer it prunes: κ·G > 1 for a layer that reads G units;
9. a top-1 agreement ``target`` is set only for a model with two outputs per sample or more (every
   model of the pool has four or five: nothing to ground);
10. a neuron/channel prune has a layer to act on: one whose input units another layer produces, not
   excluded, and named by a per-layer keep mapping when there is one.

``ground`` rewrites a *positive* schemathesis case so that these hold, keeping everything the
schema generated: which parts are present, every other spec value, the headers. Only the contents
named above change, drawn deterministically from a pool of real models (``POOL``). Negative cases
are left untouched, so ``negative_data_rejection`` still sees the server refuse them.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from onnx import helper, numpy_helper
from schemathesis import Case, GenerationMode
from schemathesis.core.jsonschema import make_validator
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import ComponentInfo
from schemathesis.transport.serialization import Binary

from netshrink.compression.algorithm.fraction import keeps_a_unit
from netshrink.compression.algorithm.scores import n_units
from netshrink.compression.graph.loading import load_model
from tests import factories

ALLOWED_CALLBACK_HOST = "127.0.0.1"  # the test server's NETSHRINK_WEBHOOK_ALLOW_HOSTS
_KEYS = itertools.count()


@dataclass(frozen=True)
class PoolModel:
    """One real upload: its bytes, the architecture it needs (or None), what the core reads from it."""

    name: str
    data: bytes
    architecture: dict[str, Any] | None
    layers: tuple[str, ...]
    input_shape: tuple[int, ...]
    classes: int
    min_units: int  # the fewest input units a neuron/channel prune draws over, among its layers (rule 8)
    structured: tuple[str, ...]  # the layers a neuron/channel prune can act on (rule 10)


def _mlp_onnx() -> bytes:
    """``tiny_mlp`` (8 -> 16 -> 16 -> 4) written with onnx.helper: Gemm -> Relu -> Gemm -> Relu -> Gemm.
    Seconds faster than the torch exporter, which the import of this module would otherwise pay."""
    sd = factories.state_dict_arrays(factories.tiny_mlp())
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in sd.items()]
    nodes, x = [], "input"
    for i, pos in enumerate((0, 2, 4)):
        nodes.append(
            helper.make_node("Gemm", [x, f"{pos}.weight", f"{pos}.bias"], [f"g{i}"], f"fc{i}", transB=1)
        )
        x = f"g{i}"
        if pos != 4:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], f"relu{i}"))
            x = f"r{i}"
    model = factories.chain_model(nodes, inits, ["batch", 8], x, ["batch", 4])
    return bytes(model.SerializeToString())


def _pool() -> tuple[PoolModel, ...]:
    with tempfile.TemporaryDirectory(prefix="netshrink-pool-") as d:
        root = Path(d)
        uploads: list[tuple[str, Path, dict[str, Any] | None]] = [
            ("mlp.onnx", factories.write_bytes(_mlp_onnx(), root / "mlp.onnx"), None),
            ("cnn.onnx", factories.write_bytes(factories.cnn_with_bn_node_onnx(), root / "cnn.onnx"), None),
            ("mlp.pt", factories.write_pt(factories.tiny_mlp(), root / "mlp.pt"), None),
            ("mlp.safetensors", factories.write_safetensors(factories.tiny_mlp(), root / "mlp.st"), None),
            (
                "cnn.pt",
                factories.write_pt(factories.tiny_cnn(), root / "cnn.pt"),
                factories.cnn_architecture(),
            ),
        ]
        pool = []
        for name, path, arch in uploads:
            net = load_model(path, architecture=arch)
            pool.append(
                PoolModel(
                    name=name,
                    data=path.read_bytes(),
                    architecture=arch,
                    layers=tuple(layer.name for layer in net.layers),
                    input_shape=tuple(int(s) for s in net.input_shape),
                    classes=int(net.layers[-1].weight.shape[0]),
                    min_units=min(n_units(layer) for layer in net.layers if layer.structured),
                    structured=tuple(layer.name for layer in net.layers if layer.structured),
                )
            )
        return tuple(pool)


POOL = _pool()


def _pick(items: tuple[Any, ...] | list[Any], key: object) -> Any:
    """A deterministic choice, so a failing case replays identically."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return items[int.from_bytes(digest[:4], "little") % len(items)]


def arrays(model: PoolModel, part: str, key: object) -> bytes:
    """An ``.npz`` of 24 inputs of the model's shape with integer labels in its output range."""
    seed = int.from_bytes(hashlib.sha256(repr((part, key)).encode()).digest()[:4], "little")
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((24, *model.input_shape)).astype(np.float32)  # (N, *input)
    labels = np.arange(24) % model.classes  # (N,) every class present
    buf = io.BytesIO()
    np.savez(buf, inputs=inputs, labels=labels)
    return buf.getvalue()


def _layer(name: object, model: PoolModel) -> str:
    return str(_pick(model.layers, name))


def _ground_spec(spec: dict[str, Any], model: PoolModel) -> dict[str, Any]:
    spec = json.loads(json.dumps(spec))  # a deep copy
    if isinstance(spec.get("exclude"), list):
        spec["exclude"] = sorted({_layer(n, model) for n in spec["exclude"]})
    prune, quantize = spec.get("prune"), spec.get("quantize")
    if isinstance(prune, dict) and isinstance(prune.get("keep"), dict):
        prune["keep"] = {_layer(n, model): v for n, v in prune["keep"].items()}
    if isinstance(quantize, dict) and isinstance(quantize.get("bits"), dict):
        quantize["bits"] = {_layer(n, model): v for n, v in quantize["bits"].items()}
    callback = spec.get("callback")
    if isinstance(callback, dict) and isinstance(callback.get("url"), str):
        parts = urlsplit(callback["url"])
        port = f":{parts.port}" if parts.port else ""
        query = f"?{parts.query}" if parts.query else ""
        callback["url"] = f"{parts.scheme}://{ALLOWED_CALLBACK_HOST}{port}{parts.path}{query}"
    if spec.get("device") == "cuda":
        spec["device"] = "cpu"
    if isinstance(prune, dict) and "keep" in prune:  # the default, 0.5, keeps 2 of the fewest (4)
        prune["keep"] = _unit_keep(prune, model)
    if isinstance(prune, dict) and prune.get("granularity") in ("neuron", "channel"):
        _a_layer_to_prune(spec, prune, model)
    return spec


def _a_layer_to_prune(spec: dict[str, Any], prune: dict[str, Any], model: PoolModel) -> None:
    """Rule 10: un-exclude the first structured layer when all are excluded, and name it in a
    per-layer keep mapping that names none (at a keep rule 8 admits)."""
    first = model.structured[0]
    exclude = spec.get("exclude")
    if isinstance(exclude, list) and set(model.structured) <= set(exclude):
        spec["exclude"] = [n for n in exclude if n != first]
    keep = prune.get("keep")
    if isinstance(keep, dict) and not set(keep) & set(model.structured) - set(spec.get("exclude") or []):
        keep[first] = (
            2.0 / model.min_units if prune.get("method", "randomized_greedy") == "randomized_greedy" else 0.5
        )


def _unit_keep(prune: dict[str, Any], model: PoolModel) -> Any:
    """Rule 8: a keep that would leave a layer one unit or fewer on average becomes 2/G (G the pool
    model's fewest units); any other keep, and every unstructured or deterministic one, is kept."""
    keep = prune.get("keep")
    structured = prune.get("granularity") in ("neuron", "channel")
    if not structured or prune.get("method", "randomized_greedy") != "randomized_greedy":
        return keep

    def unit(v: Any) -> Any:
        number = isinstance(v, int | float) and not isinstance(v, bool)
        return v if not number or keeps_a_unit(v, model.min_units) else 2.0 / model.min_units

    return {n: unit(v) for n, v in keep.items()} if isinstance(keep, dict) else unit(keep)


def _measures_validation(spec: dict[str, Any]) -> bool:
    """A finetune spec whose follow-up compress (any compress field given: ``JobSpecCreate.to_core``)
    measures its error on the validation split (``evaluation.inputs`` calibration, the default)."""
    if spec.get("kind") != "finetune":
        return False
    follow = set(spec) - {"kind", "finetune", "seed", "device", "callback"}
    evaluation = spec.get("evaluation")
    inputs = evaluation.get("inputs", "calibration") if isinstance(evaluation, dict) else "calibration"
    return bool(follow) and inputs == "calibration"


def ground(
    body: dict[str, Any], headers: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(body, headers)`` of a positive submission, with the contents listed in the module doc made real."""
    key = sorted(body)
    candidates = [m for m in POOL if (m.architecture is not None) == ("architecture" in body)]
    model = _pick(candidates, (key, repr(body.get("spec"))))
    out = dict(body)
    out["model"] = Binary(model.data)  # what schemathesis generates for `format: binary`
    if model.architecture is not None:
        out["architecture"] = model.architecture
    for part in ("calibration", "train", "validation"):
        if part in out:
            out[part] = Binary(arrays(model, part, key))
    if isinstance(out.get("spec"), dict):
        out["spec"] = _ground_spec(out["spec"], model)
        finetune = out["spec"].get("finetune")
        fraction = finetune.get("validation_fraction") if isinstance(finetune, dict) else None
        if "validation" not in out and isinstance(fraction, int | float):
            # rule 3: one of the 24 samples to carve, two when a follow-up compress measures on them
            least = 2 if _measures_validation(out["spec"]) else 1
            if round(24 * fraction) < least:
                finetune["validation_fraction"] = least / 24
    if headers is not None:
        headers = {
            name: f"grounded-{next(_KEYS)}" if name.lower() == "idempotency-key" else value
            for name, value in headers.items()
        }
    return out, headers


def ground_case(case: Case) -> Case:
    """``ground`` a positive ``POST /v1/jobs`` case in place; any other case is returned as it is.

    The grounded body is judged here against the document, each file part standing in as a
    non-empty string (what ``format: binary`` + ``minLength: 1`` asks): schemathesis re-judges an
    edited body itself, but counts any body holding bytes as invalid (``Case._validate_component``:
    ``contains_binary``), which would relabel every grounded case negative. So:

    - the document admits the grounded body: it stays positive (schemathesis' re-judging is skipped);
    - the document refuses it: it is labelled negative, as the document says. That happens when the
      coverage and examples phases draw a "positive" body breaking the ``dependentSchemas`` rules
      (keywords those phases do not apply); the server must then refuse it
      (``negative_data_rejection``).

    Grounding itself never turns an admitted body into a refused one (asserted).
    """
    meta = case.meta
    positive = meta is not None and meta.generation.mode is GenerationMode.POSITIVE
    if not (positive and case.method == "POST" and case.path == "/v1/jobs" and isinstance(case.body, dict)):
        return case
    alternative = case.operation.get_body_for_media_type(case.media_type or "multipart/form-data")
    assert alternative is not None
    validator = make_validator(
        alternative.validation_schema, case.operation.schema.adapter.jsonschema_validator_cls
    )

    def admitted(body: dict[str, Any]) -> bool:
        return bool(validator.is_valid({k: "file" if isinstance(v, Binary) else v for k, v in body.items()}))

    body, headers = ground(case.body, dict(case.headers) if case.headers else None)
    if admitted(case.body):
        assert admitted(body), f"grounding made a schema-invalid body: {body!r}"[:2000]
    case.body = body
    assert case._meta is not None
    if admitted(body):
        case._meta.clear_dirty(ParameterLocation.BODY)  # judged above
    else:  # say so outright: the examples phase's cases carry no body component to re-judge
        case._meta.components[ParameterLocation.BODY] = ComponentInfo(mode=GenerationMode.NEGATIVE)
        case._meta.generation.mode = GenerationMode.NEGATIVE
    if headers is not None:
        case.headers = headers  # schemathesis re-judges these itself
    return case


__all__ = ["ALLOWED_CALLBACK_HOST", "POOL", "PoolModel", "arrays", "ground", "ground_case"]
