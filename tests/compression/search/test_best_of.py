"""Best of R keeps the draw with the lowest fit-split error (docs/method.md §1 "Best of R draws").

The oracle redraws every network draw r = 0..R−1 on its own (same seed, same keys) and computes its
relative output error with numpy; ``best_of`` must return the argmin, with that draw's weights.
"""

from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from netshrink.compression.errors import CancelledError
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.graph.network import Network
from netshrink.compression.search.greedy import NetworkDraw, draw_network
from netshrink.compression.search.select import best_of, dropped_any, is_random, plain_after
from netshrink.compression.spec import HELD_BACK, CompressSpec


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


PHI = torch.tensor([[3.0, 4.0], [1.0, -2.0]])  # (S=2, K=2): a draw Φ̂ = (1 + e)Φ has relative error |e|


def _scripted(monkeypatch: pytest.MonkeyPatch, errors: list[float], checks: list[list[dict | None]]) -> list:  # type: ignore[type-arg]
    """``select.draw_network`` replaced by scripted draws: draw r has fit error errors[r] and two layers
    whose ``refit_check`` is checks[min(r, last)]; returns the (draw, spec.compensate, whether dense
    inputs were handed over) of each draw asked."""
    import netshrink.compression.search.select as select

    asked: list[tuple[int, object, bool]] = []

    def draw_network(
        net: object, ex: object, spec: CompressSpec, X: object, *, draw: int, **kw: object
    ) -> NetworkDraw:
        asked.append((draw, spec.compensate, kw["dense_inputs"] is not None))
        assert kw["keep_plain"] is False  # the plain draws are held for the twin only (``keep_plain``)
        row = checks[min(draw, len(checks) - 1)]
        layers = {
            f"l{i}": SimpleNamespace(refit_check=None if c is None else dict(c)) for i, c in enumerate(row)
        }
        return NetworkDraw(draw, layers, fit_logits=PHI * (1 + errors[draw]))  # type: ignore[arg-type]

    monkeypatch.setattr(select, "draw_network", draw_network)
    monkeypatch.setattr(select, "draw_nbytes", lambda nd: 0)
    return asked


def _best_of(spec: dict[str, object]) -> NetworkDraw:
    """``best_of`` under ``compensate: null`` on a stand-in network of two layers: its one dense pass
    captures both layers' inputs (the refit draws' targets), and nothing else."""
    net = SimpleNamespace(
        logits="out", n_params=10, layers=[SimpleNamespace(input=f"z{i}") for i in range(2)]
    )

    def run(X: torch.Tensor, capture: list[str]) -> dict[str, torch.Tensor]:
        assert capture == ["z0", "z1"]
        return {"out": PHI, **{name: X for name in capture}}

    ex = SimpleNamespace(run=run)
    full = CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0, **spec})
    return best_of(net, ex, dataclasses.replace(full, compensate=HELD_BACK), PHI)  # type: ignore[arg-type]


def test_a_first_draw_that_dropped_every_refit_makes_the_later_draws_plain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``compensate: null``: draw 0 judged both layers and kept neither refit, so draws 1 and 2 are made
    with ``compensate: false`` and carry draw 0's judgement marked ``judged_on_draw: 0``; the kept draw
    is the lowest fit error (draw 1), without its logits."""
    check = {"kept": False, "held_back": 0.5}
    asked = _scripted(monkeypatch, [0.3, 0.1, 0.2], [[check, check], [None, None]])
    best = _best_of({"draws": 3})
    assert asked == [(0, HELD_BACK, True), (1, False, False), (2, False, False)]
    assert best.draw == 1 and best.fit_logits is None
    assert best.fit_errors == pytest.approx([0.3, 0.1, 0.2], rel=1e-6)
    assert [d.refit_check for d in best.layers.values()] == [{**check, "judged_on_draw": 0}] * 2


def test_a_first_draw_that_kept_some_refit_keeps_judging_every_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    """One refit kept on draw 0: every draw is made with the held-back check, its own judgements kept."""
    own = [{"kept": True}, {"kept": False}]
    asked = _scripted(monkeypatch, [0.3, 0.1], [own])
    best = _best_of({"draws": 2})
    assert asked == [(0, HELD_BACK, True), (1, HELD_BACK, True)]
    assert [d.refit_check for d in best.layers.values()] == own


@pytest.mark.parametrize(
    ("checks", "made"),
    [
        ([[{"kept": True}, {"kept": False}]], 5),  # a plain draw shipped: the auto rule goes on
        ([[{"kept": True}, {"kept": True}]], 1),  # every refit kept: nothing random, one draw
        ([[None, None]], 1),  # nothing judged
    ],
)
def test_auto_draws_go_on_when_a_first_deterministic_draw_shipped_a_plain_layer(
    monkeypatch: pytest.MonkeyPatch,
    checks: list,
    made: int,  # type: ignore[type-arg]
) -> None:
    """A compensated quantizer is deterministic (one draw under ``draws: auto``) unless the held-back
    check shipped some layer's plain randomized draw: then the rule's patience applies (best at draw 1,
    three draws without a gain: five draws)."""
    asked = _scripted(monkeypatch, [0.5, 0.4, 0.45, 0.46, 0.47, 0.48, 0.49], checks)
    best = _best_of({"draws": "auto"})
    assert [r for r, _, _ in asked] == list(range(made))
    assert best.draw == (1 if made > 1 else 0)
    assert best.max_draws == (16 if made > 1 else 1)


def test_plain_after_and_dropped_any_by_hand() -> None:
    def nd(*checks: dict | None) -> NetworkDraw:  # type: ignore[type-arg]
        return NetworkDraw(0, {str(i): SimpleNamespace(refit_check=c) for i, c in enumerate(checks)})  # type: ignore[misc]

    no, yes = {"kept": False}, {"kept": True}
    assert (plain_after(nd(no, None, no)), dropped_any(nd(no, None, no))) == (True, True)
    assert (plain_after(nd(no, yes)), dropped_any(nd(no, yes))) == (False, True)
    assert (plain_after(nd(yes, None)), dropped_any(nd(yes, None))) == (False, False)
    assert (plain_after(nd(None, None)), dropped_any(nd(None, None))) == (False, False)
    assert (plain_after(nd()), dropped_any(nd())) == (False, False)


def test_a_plain_spec_makes_one_dense_pass_that_captures_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without refits the dense pass computes Φ only, and no draw is handed dense inputs."""
    asked = _scripted(monkeypatch, [0.2, 0.1], [[None, None]])
    captures: list[list[str]] = []

    def run(X: torch.Tensor, capture: list[str]) -> dict[str, torch.Tensor]:
        captures.append(capture)
        return {"out": PHI}

    net = SimpleNamespace(logits="out", n_params=10, layers=[SimpleNamespace(input="z0")])
    spec = CompressSpec.from_dict({"quantize": {"bits": 4}, "seed": 0, "draws": 2, "compensate": False})
    best = best_of(net, SimpleNamespace(run=run), spec, PHI)  # type: ignore[arg-type]
    assert captures == [[]] and asked == [(0, False, False), (1, False, False)] and best.draw == 1


@pytest.mark.parametrize(("hold", "again"), [(100, False), (99, True)])
def test_a_best_draw_is_released_only_above_the_hold_limit(
    monkeypatch: pytest.MonkeyPatch, hold: int, again: bool
) -> None:
    """Draws of 100 bytes: held at ``HOLD_BYTES`` = 100, released above 99 and drawn again at the end."""
    import netshrink.compression.search.select as select

    asked = _scripted(monkeypatch, [0.1, 0.3, 0.2], [[None, None]])
    monkeypatch.setattr(select, "draw_nbytes", lambda nd: 100)
    monkeypatch.setattr(select, "HOLD_BYTES", hold)
    best = _best_of({"draws": 3})
    assert [r for r, _, _ in asked] == [0, 1, 2, 0][: 4 if again else 3] and best.draw == 0


def test_ties_keep_the_first_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two draws with the same fit error: the first is kept (``best_of``'s docstring)."""
    _scripted(monkeypatch, [0.25, 0.25, 0.5], [[None, None]])
    assert _best_of({"draws": 3}).draw == 0


def test_a_released_draw_that_comes_back_different_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-draw of a released best draw must reproduce its fit error; else the message says both."""
    import netshrink.compression.search.select as select

    errors = iter([0.1, 0.3, 0.15])  # draw 0, draw 1, draw 0 again
    real = _scripted(monkeypatch, [0.0] * 3, [[None, None]])
    fake = select.draw_network

    def drifting(*args: object, draw: int, **kw: object) -> NetworkDraw:
        nd = fake(*args, draw=draw, **kw)
        nd.fit_logits = PHI * (1 + next(errors))
        return nd

    monkeypatch.setattr(select, "draw_network", drifting)
    monkeypatch.setattr(select, "draw_nbytes", lambda nd: 100)
    monkeypatch.setattr(select, "HOLD_BYTES", 99)
    with pytest.raises(RuntimeError) as info:
        _best_of({"draws": 2})
    assert [r for r, _, _ in real] == [0, 1, 0]
    pattern = r"draw 0 drawn again gave fit error (\S+), not (\S+): the draw is not deterministic"
    m = re.fullmatch(pattern, str(info.value))
    assert m is not None, str(info.value)
    assert (float(m[1]), float(m[2])) == (pytest.approx(0.15, rel=1e-6), pytest.approx(0.1, rel=1e-6))
