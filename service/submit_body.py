"""The OpenAPI description of ``POST /v1/jobs``'s multipart body (FastAPI cannot derive it from a
streamed upload): its parts, their types and limits, and the cross-part rules the server applies
(``submission._check_parts``). Split from ``submission.py`` (2026-12-05). Ref: docs/api.md "POST /v1/jobs".
"""

from __future__ import annotations

FINETUNE = {"const": "finetune"}
NOT_FINETUNE = {"enum": ["compress", "analyze"]}
SUBMIT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["model", "spec"],
                "additionalProperties": False,  # any other part is 422
                # kind finetune takes `train` (and optionally `validation`), the other kinds neither;
                # `calibration` goes with kind compress only (submission._check_parts). Said in
                # `dependentSchemas`: a top-level `anyOf` would make generators split the body type,
                # and schemathesis 4.32 cannot judge `if`/`not` in a body holding bytes.
                "dependentRequired": {"validation": ["train"]},
                "dependentSchemas": {
                    "spec": {  # always there: kind finetune needs `train`
                        "anyOf": [
                            {"required": ["train"]},
                            {"properties": {"spec": {"properties": {"kind": NOT_FINETUNE}}}},
                        ]
                    },
                    "train": {
                        "properties": {"spec": {"required": ["kind"], "properties": {"kind": FINETUNE}}}
                    },
                    # kind analyze measures nothing (until 2026-12-05 its calibration was ignored)
                    "calibration": {"properties": {"spec": {"properties": {"kind": {"const": "compress"}}}}},
                },
                "properties": {
                    "model": {
                        "type": "string",
                        "format": "binary",  # generators send bytes (openapi-python-client: File)
                        "contentMediaType": "application/octet-stream",
                        "minLength": 1,
                        "description": "ONNX model, PyTorch state dict (.pt/.pth) or .safetensors; the "
                        "container is sniffed from the bytes: anything else (or an empty part) is 415.",
                    },
                    "spec": {
                        "$ref": "#/components/schemas/JobSpecCreate",
                        "description": "JobSpec as a JSON part (or a text field holding the JSON).",
                    },
                    "architecture": {
                        "type": "object",
                        "description": "Network description for state dicts (netshrink.architecture/v1), "
                        "as a JSON part.",
                    },
                    "calibration": {
                        "type": "string",
                        "format": "binary",
                        "contentMediaType": "application/octet-stream",
                        "minLength": 1,
                        "description": ".npz with `inputs` (N x input shape) and optional `labels`, or a "
                        "bare .npy of inputs.",
                    },
                    **{
                        part: {
                            "type": "string",
                            "format": "binary",
                            "contentMediaType": "application/octet-stream",
                            "minLength": 1,
                            "description": f"kind finetune only{need}: .npz with `inputs` and "
                            f"integer `labels` (the {part} split).",
                        }
                        for part, need in (("train", ", required there"), ("validation", ", optional"))
                    },
                },
            },
            "encoding": {
                "spec": {"contentType": "application/json"},
                "architecture": {"contentType": "application/json"},
            },
        }
    },
}


__all__ = ["SUBMIT_BODY"]
