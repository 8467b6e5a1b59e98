"""Best of R keeps the draw with the lowest fit-split error (docs/method.md §1 "Best of R draws").

The oracle redraws every network draw r = 0..R−1 on its own (same seed, same keys) and computes its
relative output error with numpy; ``best_of`` must return the argmin, with that draw's weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netshrink.compression.errors import CancelledError
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.network import Network
from netshrink.compression.search.greedy import NetworkDraw, draw_network
from netshrink.compression.search.select import best_of, is_random
from netshrink.compression.spec import CompressSpec


def test_best_of_r_keeps_the_lowest_fit_error(mlp_net: Network) -> None:
    spec = CompressSpec.from_dict({"prune": {"keep": 0.4}, "quantize": {"bits": 3}, "draws": 6, "seed": 3})
    ex = Executor(mlp_net)
    X = torch.from_numpy(np.random.default_rng(0).standard_normal((64, *mlp_net.input_shape))).float()
    with torch.no_grad():
        phi = ex.run(X)[mlp_net.logits].double().numpy()  # (S, K)
    errors = []
    for r in range(6):
        nd = draw_network(mlp_net, ex, spec, X, draw=r)
        with torch.no_grad():
            phi_hat = ex.run(X, overrides=nd.overrides(ex.device))[mlp_net.logits].double().numpy()
        errors.append(float(np.sqrt(((phi - phi_hat) ** 2).sum() / (phi**2).sum())))
    assert max(errors) > 1.05 * min(errors)  # the draws really differ: choosing matters
    best = best_of(mlp_net, ex, spec, X)
    r_best = int(np.argmin(errors))
    assert best.draw == r_best
    assert best.fit_relative_l2 == min(best.fit_errors)
    np.testing.assert_allclose(best.fit_errors, errors, rtol=1e-5)
    again = draw_network(mlp_net, ex, spec, X, draw=r_best)
    for name, d in best.layers.items():
        np.testing.assert_array_equal(d.compressed.weight, again.layers[name].compressed.weight)


@pytest.mark.parametrize(
    ("spec", "random"),
    [
        ({"prune": {"keep": 0.5}}, True),  # randomized greedy is the default method
        ({"prune": {"keep": 0.5, "method": "randomized_greedy"}, "compensate": True}, True),  # mask drawn
        ({"prune": {"keep": 0.5, "method": "magnitude"}}, False),
        ({"prune": {"keep": 0.5, "method": "obd"}}, False),
        ({"quantize": {"bits": 4}}, True),
        ({"quantize": {"bits": 4}, "compensate": True}, False),  # GPTQ's rounding is deterministic
        ({"quantize": {"bits": 4, "method": "rtn"}}, False),
        ({"prune": {"keep": 0.5, "method": "magnitude"}, "quantize": {"bits": 4}}, True),
        ({"prune": {"keep": 0.5}, "quantize": {"bits": 4, "method": "rtn"}}, True),
        ({}, False),
    ],
)
def test_is_random_says_whether_two_draws_can_differ(spec: dict[str, object], random: bool) -> None:
    """By the method table of docs/method.md §1, not by running draws: draws="auto" takes one draw
    exactly when nothing is random."""
    assert is_random(CompressSpec.from_dict(spec)) is random


def test_progress_comes_from_the_first_draw_and_cancellation_reaches_every_draw(mlp_net: Network) -> None:
    """``on_layer`` sees the first draw's layers once (progress stays monotone); ``should_cancel`` is
    asked in every draw, so a cancel during the second draw stops ``best_of``."""
    spec = CompressSpec.from_dict({"prune": {"keep": 0.5}, "draws": 3, "seed": 0})
    ex = Executor(mlp_net)
    X = torch.from_numpy(np.random.default_rng(0).standard_normal((32, *mlp_net.input_shape))).float()
    n = len(mlp_net.layers)
    steps: list[tuple[int, int]] = []
    best_of(mlp_net, ex, spec, X, on_layer=lambda i, total: steps.append((i, total)))
    assert steps == [(layer.index, n) for layer in mlp_net.layers]
    asked = [0]

    def cancel_in_second_draw() -> bool:
        asked[0] += 1
        return asked[0] > n

    with pytest.raises(CancelledError):
        best_of(mlp_net, ex, spec, X, should_cancel=cancel_in_second_draw)
    assert asked[0] == n + 1
    # the progress steps happen during the first draw: before any layer of the second is asked
    count, at_step = [0], []

    def count_asks() -> bool:
        count[0] += 1
        return False

    best_of(
        mlp_net, ex, spec, X, on_layer=lambda i, total: at_step.append(count[0]), should_cancel=count_asks
    )
    assert len(at_step) == n and max(at_step) <= n


def test_the_output_aware_score_reaches_every_draw(mlp_net: Network) -> None:
    """With ``score="output"``, ``best_of`` hands the sensitivities to each draw: its fit errors are
    those of the draws made with them, which differ from the layer-local score's."""
    from netshrink.compression.bounds.prediction import sensitivities

    spec = CompressSpec.from_dict({"prune": {"keep": 0.4, "score": "output"}, "draws": 2, "seed": 1})
    ex = Executor(mlp_net)
    X = torch.from_numpy(np.random.default_rng(0).standard_normal((64, *mlp_net.input_shape))).float()
    sens = sensitivities(ex.run, mlp_net, X, mlp_net.layers, groups=False)
    with torch.no_grad():
        phi = ex.run(X)[mlp_net.logits].double().numpy()  # (S, K)

    def error(nd: NetworkDraw) -> float:
        with torch.no_grad():
            phi_hat = ex.run(X, overrides=nd.overrides(ex.device))[mlp_net.logits].double().numpy()
        return float(np.sqrt(((phi - phi_hat) ** 2).sum() / (phi**2).sum()))

    with_sens = [error(draw_network(mlp_net, ex, spec, X, draw=r, sensitivities=sens)) for r in range(2)]
    local = [error(draw_network(mlp_net, ex, spec, X, draw=r)) for r in range(2)]
    assert not np.allclose(with_sens, local, rtol=1e-3)  # the score changes the draws
    best = best_of(mlp_net, ex, spec, X, sensitivities=sens)
    np.testing.assert_allclose(best.fit_errors, with_sens, rtol=1e-5)


def test_a_best_draw_above_the_hold_limit_is_released_and_drawn_again_to_the_same_bytes(
    mlp_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10 (memory): above ``HOLD_BYTES`` the best draw is not held while the next is drawn; it
    is drawn again at the end. The result must be the same draw, byte for byte, as when it is held."""
    import netshrink.compression.search.select as select

    spec = CompressSpec.from_dict({"prune": {"keep": 0.4}, "quantize": {"bits": 3}, "draws": 6, "seed": 3})
    ex = Executor(mlp_net)
    X = torch.from_numpy(np.random.default_rng(0).standard_normal((64, *mlp_net.input_shape))).float()
    held = best_of(mlp_net, ex, spec, X)
    assert held.draw < 5  # the best is not the last draw: it is released while later ones are drawn
    made: list[int] = []
    real = select.draw_network

    def counting(*args: object, **kwargs: object) -> NetworkDraw:
        made.append(int(kwargs["draw"]))  # type: ignore[call-overload]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(select, "HOLD_BYTES", 0)
    monkeypatch.setattr(select, "draw_network", counting)
    again = best_of(mlp_net, ex, spec, X)
    assert made == [*range(6), held.draw]  # released, then drawn once more
    assert (again.draw, again.fit_relative_l2, again.fit_errors) == (
        held.draw,
        held.fit_relative_l2,
        held.fit_errors,
    )
    assert again.layers.keys() == held.layers.keys()
    for name, d in held.layers.items():
        e = again.layers[name]
        for a, b in [
            (d.compressed.weight, e.compressed.weight),
            (d.compressed.codes, e.compressed.codes),
            (d.var, e.var),
        ]:
            assert a is not None and b is not None and a.tobytes() == b.tobytes()
        assert d.tier_E_A == e.tier_E_A


def test_compensated_draws_share_one_dense_pass_and_keep_their_bytes(
    mlp_net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refit draw's target is the dense z_{ℓ−1} on X: ``best_of`` computes it in the pass that
    gives Φ, once for all draws (time, issue 10), and the draws equal ``draw_network``'s own."""
    spec = CompressSpec.from_dict(
        {"prune": {"keep": 0.5}, "quantize": {"bits": 4}, "compensate": True, "draws": 3, "seed": 1}
    )
    ex = Executor(mlp_net)
    X = torch.from_numpy(np.random.default_rng(2).standard_normal((48, *mlp_net.input_shape))).float()
    dense_passes = []
    real = ex.run

    def counted(X_: torch.Tensor, **kw: object) -> dict[str, torch.Tensor]:
        if not kw.get("overrides") and kw.get("logits", True):  # the dense network, down to Φ
            dense_passes.append(1)
        return real(X_, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ex, "run", counted)
    best = best_of(mlp_net, ex, spec, X)
    assert len(best.fit_errors) == 3 and dense_passes == [1]
    again = draw_network(mlp_net, Executor(mlp_net), spec, X, draw=best.draw)
    for name, d in best.layers.items():
        assert d.compensated
        np.testing.assert_array_equal(d.compressed.weight, again.layers[name].compressed.weight)
        np.testing.assert_array_equal(d.compressed.bias, again.layers[name].compressed.bias)
