"""The JobSpec's cross-field rules as JSON Schema: ``JobSpecCreate``'s ``dependentSchemas``.

- ``finetune`` goes with kind finetune only;
- kind analyze compresses nothing: each compression option (``compression.spec.COMPRESSION_ONLY``)
  is refused with it unless at its neutral value (``ANALYZE_REFUSES``); the server applies the same
  rule (``JobSpecCreate.analyze_refusals``) and the core too (``CompressSpec.validate``);
- a target states its bound (``max`` for relative_l2, the default metric; ``min`` for
  top1_agreement).

``dependentSchemas``, not a top-level ``anyOf``/``if``: generators (openapi-python-client) would split
the model into variants, and schemathesis 4.32 cannot judge ``if``/``not`` in a body holding bytes.
Split from ``schemas.py`` (2026-12-05). Ref: docs/api.md "The document".
"""

from __future__ import annotations

from typing import Any

from netshrink.compression.spec import COMPRESSION_ONLY

ANALYZE_REFUSES: dict[str, dict[str, Any]] = {  # option -> its neutral value, the one analyze takes
    "prune": {"type": "null"},
    "quantize": {"type": "null"},
    "target": {"type": "null"},
    "exclude": {"maxItems": 0},
    "draws": {"const": "auto"},
    "compensate": {"type": "null"},
    "evaluation": {"type": "null"},
    "compare_baselines": {"const": False},
    "target_opset": {"type": "null"},
}
if tuple(ANALYZE_REFUSES) != COMPRESSION_ONLY:  # the core's list and this one name the same options
    raise AssertionError("ANALYZE_REFUSES must name compression.spec.COMPRESSION_ONLY, in order")


def _not_with_analyze(name: str, neutral: dict[str, Any]) -> dict[str, Any]:
    """``name`` given: the kind is not analyze (absent is compress), or the value is ``neutral``."""
    return {
        "anyOf": [
            {"properties": {"kind": {"enum": ["compress", "finetune"]}}},
            {"properties": {name: neutral}},
        ]
    }


_TARGET_BOUND = {
    "properties": {
        "target": {
            "anyOf": [
                {"type": "null"},
                {
                    "required": ["max"],
                    "properties": {"metric": {"const": "relative_l2"}, "max": {"type": "number"}},
                },
                {
                    "required": ["metric", "min"],
                    "properties": {"metric": {"const": "top1_agreement"}, "min": {"type": "number"}},
                },
            ]
        }
    }
}

SPEC_DEPENDENT_SCHEMAS: dict[str, Any] = {
    "finetune": {
        "anyOf": [
            {"required": ["kind"], "properties": {"kind": {"const": "finetune"}}},
            {"properties": {"finetune": {"type": "null"}}},
        ]
    },
    **{
        name: _not_with_analyze(name, neutral)
        for name, neutral in ANALYZE_REFUSES.items()
        if name != "target"
    },
    "target": {**_not_with_analyze("target", ANALYZE_REFUSES["target"]), **_TARGET_BOUND},
}

__all__ = ["ANALYZE_REFUSES", "SPEC_DEPENDENT_SCHEMAS"]
