"""docs/architecture-json.md's examples are real: each ``<!-- example: NAME -->`` block is JSON that
validates against the state dict of ``tests/dag_models.py``'s model of that name (untrained: only the
shapes matter here; tests/compression/io/test_architecture_v2.py runs the trained ones)."""

from __future__ import annotations

import re

import pytest

from netshrink.compression.io.architecture import FORMAT_V2, validate_architecture
from tests import dag_models as D

EXAMPLES = re.findall(r"<!-- example: (\w+) -->", D.DOC.read_text(encoding="utf-8"))


def test_the_resnet_and_mobilenet_examples_are_there() -> None:
    assert {"resnet", "mobilenet"} <= set(EXAMPLES) and set(EXAMPLES) <= set(D.BUILDERS)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_validates_against_its_torch_state_dict(name: str) -> None:
    arch = D.architecture(name)
    state = {k: v.detach().numpy() for k, v in D.BUILDERS[name]().state_dict().items()}
    out = validate_architecture(arch, state)
    assert out["format"] == FORMAT_V2
    assert any(s["kind"] in ("residual", "concat") for s in out["layers"])
