"""Keyed generators: same key, same stream; any other key, another stream (docs/method.md §1)."""

from __future__ import annotations

import torch

from netshrink.compression.algorithm.rng import derive_seed, generator, uniform

torch.set_num_threads(1)


def test_same_key_gives_identical_stream() -> None:
    a = uniform(generator(7, 3, 1), 1000)
    b = uniform(generator(7, 3, 1), 1000)
    assert a.dtype == torch.float64 and a.device.type == "cpu"
    assert torch.equal(a, b)


def test_every_component_of_the_key_matters() -> None:
    base = uniform(generator(7, 3, 1), 64)
    for key in [(8, 3, 1), (7, 4, 1), (7, 3, 2), (3, 7, 1)]:
        assert not torch.equal(base, uniform(generator(*key), 64)), key


def test_derived_seed_is_63_bit_and_stable() -> None:
    seeds = {derive_seed(s, l, d) for s in range(3) for l in range(3) for d in range(3)}
    assert len(seeds) == 27
    assert all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(0, 0, 0) == derive_seed(0, 0, 0)


def test_uniform_values_in_unit_interval() -> None:
    u = uniform(generator(0, 0, 0), 10_000)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 4 * (1 / 12) ** 0.5 / 100  # CLT: 4 standard errors
