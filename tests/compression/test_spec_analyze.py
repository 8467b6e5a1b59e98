"""``CompressSpec`` with kind analyze takes no compression option (``compression.spec.COMPRESSION_ONLY``):
analyze reads the weights and compresses nothing, so every path (the API, the worker, ``netshrink
compress --kind analyze``, a spec file) refuses them. Until 2026-12-05 they were accepted and ignored:
``netshrink submit --kind analyze --bits 4 --target-error 0.01`` exited 0 with "budget met: no target"
(probe G, bug 5)."""

from __future__ import annotations

from typing import Any

import pytest

from netshrink.compression.errors import InvalidSpecError
from netshrink.compression.spec import COMPRESSION_ONLY, CompressSpec, EvaluationSpec

GIVEN: dict[str, Any] = {
    "prune": {"keep": 0.5},
    "quantize": {"bits": 4},
    "target": {"max": 0.01},
    "exclude": ["fc1"],
    "draws": 2,
    "compensate": True,
    "evaluation": {"inputs": "gaussian", "samples": 16},
    "compare_baselines": True,
    "target_opset": 17,
}


def test_every_compression_option_is_covered() -> None:
    assert set(GIVEN) == set(COMPRESSION_ONLY)


@pytest.mark.parametrize("name", COMPRESSION_ONLY)
def test_kind_analyze_refuses_a_compression_option(name: str) -> None:
    with pytest.raises(InvalidSpecError, match="kind analyze") as info:
        CompressSpec.from_dict({"kind": "analyze", name: GIVEN[name]})
    assert info.value.field == name
    CompressSpec.from_dict({name: GIVEN[name]})  # kind compress takes it


def test_the_first_option_is_the_field_and_all_are_named() -> None:
    with pytest.raises(InvalidSpecError) as info:
        CompressSpec.from_dict({"kind": "analyze", "quantize": {"bits": 4}, "target": {"max": 0.01}})
    assert info.value.field == "quantize" and "quantize, target" in info.value.detail


def test_a_directly_built_spec_is_refused_too() -> None:
    with pytest.raises(InvalidSpecError, match="evaluation"):
        CompressSpec(kind="analyze", evaluation=EvaluationSpec(inputs="uniform")).validate()


def test_kind_analyze_keeps_its_own_options_and_the_defaults() -> None:
    spec = CompressSpec.from_dict(
        {
            "kind": "analyze",
            "seed": 4,
            "device": "cpu",
            "full_diagnostics": True,
            "exclude": [],
            "draws": "auto",
        }
    )
    assert (spec.seed, spec.device, spec.full_diagnostics) == (4, "cpu", True)
    # the job's stored spec (to_dict: every default spelled out) reads back, as the worker does
    assert CompressSpec.from_dict(spec.to_dict()) == spec
    assert (
        CompressSpec.from_dict({"kind": "analyze", "compare_baselines": False, "prune": None}).kind
        == "analyze"
    )
