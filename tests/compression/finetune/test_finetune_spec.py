"""FinetuneSpec: defaults from docs/method.md §4, sweeps, and errors that name the field."""

from __future__ import annotations

import pytest

from netshrink.compression.errors import InvalidSpecError
from netshrink.compression.finetune.spec import FinetuneSpec


def test_defaults_follow_the_method() -> None:
    s = FinetuneSpec.from_dict({})
    assert (s.alpha, s.sigma, s.eta, s.optimizer) == (1.75, 0.003, 0.01, "sgd")
    assert not s.is_sweep and s.sigmas == (0.003,)
    assert s.with_seed().seed is not None


def test_sweep_and_follow_up_compress() -> None:
    s = FinetuneSpec.from_dict({"sigma": [0.001, 0.01], "compress": {"quantize": {"bits": 8}}, "seed": 3})
    assert s.is_sweep and s.sigmas == (0.001, 0.01)
    assert s.compress is not None and s.compress.quantize is not None and s.compress.quantize.bits == 8
    assert s.to_dict()["sigma"] == [0.001, 0.01]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"alpha": 2.5}, "alpha"),
        ({"alpha": 0}, "alpha"),
        ({"sigma": -1}, "sigma"),
        ({"sigma": []}, "sigma"),
        ({"eta": 0}, "eta"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"validation_fraction": 0.95}, "validation_fraction"),
        ({"bogus": 1}, "bogus"),
        ({"compress": {"quantize": {"bits": 1}}}, "compress.quantize.bits"),
        ({"compress": 3}, "compress"),
    ],
)
def test_bad_values_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSpecError) as info:
        FinetuneSpec.from_dict(data)
    assert info.value.field == field
