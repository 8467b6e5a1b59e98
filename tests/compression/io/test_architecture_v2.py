"""Architecture JSON v2 (residual and concat blocks): the state dict of a residual, depthwise or concat
CNN loads into the same ``Network`` as the module's ONNX export, and a v2 document that does not fit
the tensors is refused with the JSON pointer of the bad layer or block.

Ref: docs/architecture-json.md "Version 2: residual and concat blocks".
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from netshrink.compression.errors import ArchitectureError
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from netshrink.compression.io.architecture import FORMAT, FORMAT_V2, validate_architecture
from netshrink.compression.io.architecture_onnx import build_onnx
from tests import dag_models as D

torch.set_num_threads(1)


def _state(name: str) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in D.BUILDERS[name]().state_dict().items()}


def _logits(net: Network, X: np.ndarray) -> np.ndarray:
    return Executor(net).run(torch.from_numpy(X))[net.logits].numpy()


def _groups_by_order(net: Network) -> tuple[list[list[int]], list[list[int]]]:
    """The dependency groups with layer names replaced by positions: (units, rows) per layer, ids
    renumbered by first appearance, so two nets with different node names compare."""
    cg, order = net.channel_groups, {la.name: i for i, la in enumerate(net.layers)}
    seen: dict[int, int] = {}

    def ids(a: np.ndarray) -> list[int]:
        return [seen.setdefault(int(g), len(seen)) if g >= 0 else -1 for g in a]

    units = [ids(cg.units[la.name]) if la.name in cg.units else [] for la in net.layers]
    rows = [ids(cg.rows[la.name]) if la.name in cg.rows else [] for la in net.layers]
    assert set(cg.units) | set(cg.rows) <= set(order)
    return units, rows


@pytest.mark.parametrize("arch", tuple(D.BUILDERS))
def test_state_dict_path_builds_the_onnx_paths_network(tmp_path: Path, arch: str) -> None:
    model = D.trained(arch)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.onnx").write_bytes(D.onnx_bytes(arch))
    sd = load_model(tmp_path / "m.pt", architecture=D.architecture(arch))
    ox = load_model(tmp_path / "m.onnx")
    assert sd.architecture is not None and sd.architecture["format"] == FORMAT_V2
    assert (sd.support, sd.dag, sd.not_covered) == ("full", True, []) == (ox.support, ox.dag, ox.not_covered)
    assert len(sd.layers) == len(ox.layers)
    for a, b in zip(sd.layers, ox.layers, strict=True):  # same order, BN folded the same way
        np.testing.assert_array_equal(a.weight, b.weight)
        assert (a.kind, a.conv, a.activation, a.input_group) == (b.kind, b.conv, b.activation, b.input_group)
        assert a.lipschitz == pytest.approx(b.lipschitz)
        np.testing.assert_array_equal(sd.raw_weights[a.name], ox.raw_weights[b.name])
    assert _groups_by_order(sd) == _groups_by_order(ox)
    X, _ = D.task_data(32, seed=3)
    np.testing.assert_allclose(_logits(sd, X), _logits(ox, X), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        ref = model(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(_logits(sd, X), ref, rtol=1e-4, atol=1e-5)


def test_defaults_are_written_out() -> None:
    out = validate_architecture(D.architecture("mobilenet"), _state("mobilenet"))
    body = out["layers"][3]["body"]
    assert out["layers"][3]["kind"] == "residual" and out["layers"][3]["shortcut"] == []
    assert body[3]["groups"] == 16 and body[3]["in_channels"] == 16 and body[3]["bias"] is False
    assert body[0]["stride"] == [1, 1] and body[0]["kernel_size"] == [1, 1]


Mutation = Callable[[dict[str, Any], dict[str, np.ndarray]], None]


def _drop_key(key: str) -> Mutation:
    def mutate(a: dict[str, Any], s: dict[str, np.ndarray]) -> None:
        del s[key]

    return mutate


CASES: list[tuple[str, str, Mutation, str, str]] = [
    # (id, model, mutation, pointer, words in the message)
    (
        "missing-key",
        "resnet",
        _drop_key("layer1.conv2.weight"),
        "/layers/3/body/3",
        "no 'layer1.conv2.weight'",
    ),
    (
        "wrong-shape",
        "resnet",
        lambda a, s: a["layers"][5]["body"][0].update(out_channels=12),
        "/layers/5/body/0",
        "has shape [16, 8, 3, 3]",
    ),
    (
        "bad-block-kind",
        "resnet",
        lambda a, s: a["layers"][3]["body"][1].update(kind="batchnorm3d"),
        "/layers/3/body/1",
        "kind must be one of",
    ),
    ("bad-kind", "resnet", lambda a, s: a["layers"][3].update(kind="residul"), "/layers/3", "kind must be"),
    (
        "shortcut-mismatch",
        "resnet",
        lambda a, s: a["layers"][5]["shortcut"][0].update(stride=1),
        "/layers/5/shortcut",
        "the body gives [16, 4, 4], the shortcut gives [16, 8, 8]",
    ),
    (
        "identity-shortcut-mismatch",
        "resnet",
        lambda a, s: a["layers"][5].pop("shortcut"),
        "/layers/5",
        "the identity shortcut passes [8, 8, 8]",
    ),
    (
        "unknown-block-key",
        "resnet",
        lambda a, s: a["layers"][5].update(shortcuts=[]),
        "/layers/5",
        "unknown keys ['shortcuts']",
    ),
    ("empty-body", "resnet", lambda a, s: a["layers"][3].update(body=[]), "/layers/3/body", "non-empty list"),
    (
        "softmax-in-a-block",
        "resnet",
        lambda a, s: a["layers"][3]["body"].append({"kind": "softmax"}),
        "/layers/3/body/5",
        "only allowed as the last layer",
    ),
    (
        "groups",
        "mobilenet",
        lambda a, s: a["layers"][3]["body"][3].update(groups=3),
        "/layers/3/body/3",
        "groups must be",
    ),
    (
        "concat-spatial-mismatch",
        "concat",
        lambda a, s: a["layers"][0]["branches"][1][0].update(stride=2),
        "/layers/0/branches/1",
        "concat needs equal shapes",
    ),
    (
        "one-branch",
        "concat",
        lambda a, s: a["layers"][0]["branches"].pop(),
        "/layers/0/branches",
        "at least two",
    ),
    ("blocks-need-v2", "resnet", lambda a, s: a.update(format=FORMAT), "/layers/3", "kind must be one of"),
    (
        "duplicate-name",
        "resnet",
        lambda a, s: a["layers"][5]["body"][0].update(name="layer1.conv1"),
        "/layers/5/body/0",
        "unique",
    ),
]


@pytest.mark.parametrize(
    ("model", "mutate", "pointer", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_bad_v2_document_names_the_json_pointer(
    model: str, mutate: Mutation, pointer: str, words: str
) -> None:
    arch, state = copy.deepcopy(D.architecture(model)), _state(model)
    validate_architecture(arch, state)  # the document is fine before the mutation
    mutate(arch, state)
    with pytest.raises(ArchitectureError) as err:
        validate_architecture(arch, state)
    assert err.value.field == pointer
    assert f"{pointer}" in err.value.detail and words in err.value.detail


def test_v1_documents_keep_their_meaning() -> None:
    """A v1 chain is also a valid v2 document with the same normalized layers (and v1 stays v1)."""
    from tests import factories as F

    state = F.state_dict_arrays(F.tiny_cnn(batchnorm=True))
    v1 = validate_architecture(F.cnn_architecture(), state)
    v2 = validate_architecture({**F.cnn_architecture(), "format": FORMAT_V2}, state)
    assert v1["format"] == FORMAT and v2["format"] == FORMAT_V2
    assert [{k: v for k, v in s.items() if k != "groups"} for s in v2["layers"]] == v1["layers"]
    assert all(s["groups"] == 1 for s in v2["layers"] if s["kind"] == "conv2d")
    assert build_onnx(v1, state).SerializeToString() == build_onnx(v2, state).SerializeToString()
    with pytest.raises(ArchitectureError, match="unknown keys"):  # groups is a v2 key
        bad = copy.deepcopy(F.cnn_architecture())
        bad["layers"][0]["groups"] = 1
        validate_architecture(bad, state)
