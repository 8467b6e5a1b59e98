"""The one in-memory network type the algorithms share.

Every input (an ONNX file, or a PyTorch state dict plus its architecture) becomes a ``Network``:
a validated ONNX graph (BatchNorm folded into the conv before it) plus the ordered list of its
compressible ``Layer``s, read in canonical PyTorch orientation.

Conventions (docs/method.md "Notation"):
- ``Layer.weight`` is float32 in PyTorch orientation: dense (n_out, n_in), conv (c_out, c_in, kh, kw).
  ``Layer.to_onnx_layout`` / ``Layer.from_onnx_layout`` convert to the initializer's own layout
  (skl2onnx MatMul and Gemm with transB=0 store (in, out)).
- Compression never changes shapes while it runs: a dropped neuron/channel is a zeroed group of
  input columns; the exporter deletes it (and the upstream rows) when it writes the artifact.
- ``Network.logits`` names the tensor Φ on which every error is measured: the input of the final
  Softmax/LogSoftmax/Sigmoid/ArgMax/ZipMap tail, or the graph output when there is no such tail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from netshrink.compression.errors import ModelFormatError

LayerKind = Literal["dense", "conv"]
SupportLevel = Literal["full", "generic"]
SourceFormat = Literal["onnx", "pytorch", "safetensors"]


@dataclass(frozen=True)
class ConvGeometry:
    """Conv hyper-parameters as ONNX states them (2-D only)."""

    kernel_shape: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # (top, left, bottom, right), ONNX order
    dilations: tuple[int, int] = (1, 1)
    group: int = 1


@dataclass
class Layer:
    """A compressible weight: a Gemm, a MatMul with an initializer, or a Conv."""

    name: str  # unique; the ONNX node name (or the state-dict prefix for PyTorch inputs)
    index: int  # position among the compressible layers, input -> output
    kind: LayerKind
    weight: np.ndarray  # float32; dense (n_out, n_in), conv (c_out, c_in, kh, kw); BN already folded
    bias: np.ndarray | None  # (n_out,) or None
    weight_key: str  # ONNX initializer name holding the weight
    bias_key: str | None  # ONNX initializer holding the bias (Gemm C, the Add after MatMul, Conv B)
    transposed: bool = False  # True when the initializer is stored (in, out)
    conv: ConvGeometry | None = None
    input: str = ""  # ONNX tensor name of this layer's input, ẑ_{ℓ-1}
    preact: str = ""  # ONNX tensor name of the pre-activation W ẑ + b (the Jacobian is taken here)
    output: str = ""  # ONNX tensor name of z_ℓ: after the activation and any pool/flatten that follows
    activation: str = "identity"  # the elementwise activation after the layer (relu, tanh, ...)
    lipschitz: float = 1.0  # L_ℓ: product of the Lipschitz constants between pre-activation and `output`
    # Structured pruning of this layer's INPUT units (neurons/channels of the previous layer):
    # ``input_group`` consecutive input columns belong to one upstream unit (H·W after a Flatten).
    structured: bool = False  # True when upstream units can be physically removed
    input_group: int = 1
    producer: str | None = None  # name of the Layer whose output rows feed this layer's inputs
    feeds_logits: bool = True  # False for a layer only another graph output reads (its error is not Φ's)
    notes: list[str] = field(default_factory=list)  # bound tiers not covered here, and why

    def __post_init__(self) -> None:
        # Arrays from onnx.numpy_helper can be read-only views; torch wants writable memory.
        if not self.weight.flags.writeable or self.weight.dtype != np.float32:
            self.weight = np.array(self.weight, dtype=np.float32)
        if self.bias is not None and (not self.bias.flags.writeable or self.bias.dtype != np.float32):
            self.bias = np.array(self.bias, dtype=np.float32)

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_in(self) -> int:
        """Columns of the im2col matrix: n_in for dense, c_in·kh·kw for conv (``math.prod`` of the
        shape: the same integer as ``np.prod``, without a numpy reduction per call; the budget search
        reads it ~1,000 times per run through its byte model)."""
        return math.prod(self.weight.shape[1:])

    @property
    def matrix(self) -> np.ndarray:
        """The weight as a 2-D (n_out, n_in) matrix (im2col order (c, u, v) for convs)."""
        return self.weight.reshape(self.n_out, -1)

    def to_onnx_layout(self, w: np.ndarray) -> np.ndarray:
        """Canonical -> the initializer's layout."""
        return np.ascontiguousarray(w.T) if self.transposed else w

    def from_onnx_layout(self, w: np.ndarray) -> np.ndarray:
        """The initializer's layout -> canonical."""
        return np.ascontiguousarray(w.T) if self.transposed else w


@dataclass(frozen=True)
class UploadFile:
    """An uploaded ONNX file kept on disk instead of as a second ``ModelProto`` (memory, issue 10).

    ``read`` refuses a file whose size or modification time changed since it was loaded: the job
    must describe the bytes it analyzed.
    """

    path: Path
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> UploadFile:
        st = path.stat()
        return cls(path, int(st.st_size), int(st.st_mtime_ns))

    def read(self) -> bytes:
        try:
            if UploadFile.of(self.path) != self:
                raise ModelFormatError(f"the model file {self.path.name} changed while the job ran")
            return self.path.read_bytes()
        except OSError as exc:
            raise ModelFormatError(f"cannot re-read the model file: {exc}") from exc


@dataclass
class Network:
    """A validated model, ready for the algorithms."""

    model: onnx.ModelProto  # the working graph: BN folded, every node named
    # as uploaded (used verbatim when nothing is compressed): the parsed upload, or for an ONNX file
    # the file itself, read again when asked (``original``, ``upload_bytes``), so that the process does
    # not hold the weights twice while it works (docs/method.md §6 "Memory")
    upload: onnx.ModelProto | UploadFile
    layers: list[Layer]
    support: SupportLevel
    input_name: str
    input_shape: tuple[int, ...]  # per-sample shape (the batch dimension excluded)
    input_dtype: np.dtype[Any]
    logits: str  # tensor name of Φ
    tail: list[str] = field(default_factory=list)  # op types after the logits (kept untouched)
    is_classifier: bool = False
    source_format: SourceFormat = "onnx"
    raw_weights: dict[str, np.ndarray] = field(default_factory=dict)  # as uploaded, before BN folding
    architecture: dict[str, Any] | None = None  # for state-dict inputs: the (validated) architecture JSON
    # for state-dict inputs: each tensor's type and bytes as uploaded, by name (= its initializer's in
    # ``upload``, which holds it in float32); "bytes before" counts these (export.storage.upload_summary)
    uploaded_tensors: dict[str, tuple[str, int]] = field(default_factory=dict)
    not_covered: list[str] = field(default_factory=list)  # graph-level reasons (residual Add, ...)
    dag: bool = False  # full support with branches/joins (Add, Concat): bounds propagate per tensor
    channel_groups: Any = None  # graph.depgroups.ChannelGroups for a full-support DAG, else None

    @property
    def original(self) -> onnx.ModelProto:
        """The upload as a ``ModelProto``; parsed afresh from the file on each call when the file is
        what ``upload`` keeps, so hold the result only as long as it is needed."""
        if isinstance(self.upload, UploadFile):
            return onnx.load_model_from_string(self.upload.read())
        return self.upload

    def upload_bytes(self) -> bytes:
        """The upload's bytes: the file verbatim, or the parsed upload serialized deterministically."""
        if isinstance(self.upload, UploadFile):
            return self.upload.read()
        return bytes(self.upload.SerializeToString(deterministic=True))

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def n_params(self) -> int:
        return sum(
            int(layer.weight.size) + (0 if layer.bias is None else int(layer.bias.size))
            for layer in self.layers
        )

    def weights(self) -> Mapping[str, np.ndarray]:
        return {layer.name: layer.weight for layer in self.layers}
