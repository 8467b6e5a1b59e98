"""Network objects built by hand for tests that need only a part of one (no ONNX export)."""

from __future__ import annotations

import numpy as np
import onnx

from netshrink.compression.graph.network import Network


def weights_only_network(raw: dict[str, np.ndarray]) -> Network:
    """A Network carrying only what diagnose_network reads: the weights as uploaded."""
    return Network(
        model=onnx.ModelProto(),
        upload=onnx.ModelProto(),
        layers=[],
        support="generic",
        input_name="x",
        input_shape=(8,),
        input_dtype=np.dtype(np.float32),
        logits="y",
        raw_weights=raw,
    )
