"""Best-of-R: the choice between whole-network draws (P1 §3.2, derived; docs/method.md §1).

R whole-network draws (``search/greedy.py``); the one with the lowest fit-split output error is kept.
``draws="auto"`` (the default) fixes R by a stated rule: draw until ``AUTO_PATIENCE`` consecutive
draws bring no gain on the best fit-split error, at most ``auto_cap`` draws (16, fewer for a large
model: R · parameters · fit samples ≤ 2^34, never below 4), and one draw when nothing in the spec
is random (round-to-nearest, magnitude/OBD, a compensated quantizer), except that under
``compensate: null`` a first draw that shipped some layer's plain (randomized) draw instead of its
refit (``layer_held_back.py``) makes the quantizer random again: the auto rule then goes on. The
rule reads only shapes and fit-split errors of seeded draws, so it is deterministic. When the
first draw dropped the refit of every layer it judged, the later draws are made without compensation
(``plain_after``): the held-back check is not repeated on every draw only to be dropped again (the
17M MLP at 8 bits: 14 s of its 28 s compress stage went to refits that were all dropped), each later
draw's layers are the plain draws that check would have shipped, seeded alike, and their
``refit_check`` is the first draw's, marked ``judged_on_draw: 0``. Every
expectation bound holds for each draw, so it holds for the kept one too: the bound statement does
not depend on R (docs/method.md §1).

Memory (issue 10): a draw holds about 9 bytes per weight (Ŵ, codes, Var), 2.25× a float32 model, so
two draws alive at once do not fit in 3× the model + 1 GiB for a large model. When the best draw's
arrays take more than ``HOLD_BYTES``, only its index and fit error are kept while the next draw is
made, and the best is drawn again at the end if it was not the last one: its generators are keyed
by (seed, layer, draw), so the second draw is the same bytes (checked: its fit error must match).

A module of its own so that ``make mutate`` can target the selection alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch

from netshrink.compression.bounds.prediction import Sensitivity
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.evaluation.metrics import output_error
from netshrink.compression.graph.network import Network
from netshrink.compression.search.draw_share import DrawShare
from netshrink.compression.search.greedy import (
    AUTO_MAX_DRAWS,
    AUTO_PATIENCE,
    NetworkDraw,
    StepFn,
    auto_cap,
    draw_network,
)
from netshrink.compression.search.prefix_cache import layer_draw_nbytes
from netshrink.compression.spec import DRAWS_AUTO, HELD_BACK, CompressSpec

__all__ = ["AUTO_MAX_DRAWS", "AUTO_PATIENCE", "HOLD_BYTES", "auto_cap", "best_of", "is_random"]

HOLD_BYTES = 256 << 20  # a best draw above this is not held while the next is drawn (module docstring)


def is_random(spec: CompressSpec) -> bool:
    """Whether two draws of ``spec`` can differ (a randomized stage; compensation keeps the mask's draw)."""
    prune_random = spec.prune is not None and spec.prune.method == "randomized_greedy"
    quant_random = (
        spec.quantize is not None and spec.quantize.method == "randomized_greedy" and not spec.compensate
    )
    return prune_random or quant_random


def best_of(
    net: Network,
    ex: Executor,
    spec: CompressSpec,
    X: torch.Tensor,
    *,
    sensitivities: Mapping[str, Sensitivity] | None = None,
    on_layer: StepFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    keep_plain: bool = False,
) -> NetworkDraw:
    """Best of ``spec.draws`` whole-network draws by fit-split relative error (ties: first draw).

    ``draws="auto"``: the module docstring's rule (patience ``AUTO_PATIENCE``, cap ``auto_cap``).
    ``keep_plain``: each draw keeps the plain draws its refits were judged against
    (``draw_network(keep_plain=True)``), for the uncompensated twin (``twin.py``).
    """
    # One dense pass: Φ on X and, when the draws are refit, every layer's dense input z_{ℓ−1} (the
    # refit's target), so that no draw repeats that pass (each did: 0.36 s a pass on the 17M MLP).
    capture = [layer.input for layer in net.layers] if spec.compensate else []
    with torch.no_grad():
        out = ex.run(X, capture=capture)
    phi = out.pop(net.logits)  # (S, K)
    # the layer inputs (none captured unless refit), handed only to refit draws below
    dense: dict[str, torch.Tensor] | None = out
    del out
    draw_spec = spec  # becomes uncompensated after a first draw that dropped every refit
    checks: dict[str, dict[str, object]] = {}  # that first draw's refit_check per layer

    def make(r: int, step: StepFn | None) -> NetworkDraw:
        nd = draw_network(
            net,
            ex,
            draw_spec,
            X,
            draw=r,
            sensitivities=sensitivities,
            on_layer=step,
            should_cancel=should_cancel,
            dense_inputs=dense if draw_spec.compensate else None,
            logits=True,
            keep_plain=keep_plain,
            share=share if draw_spec.compensate else None,
        )
        assert nd.fit_logits is not None
        nd.fit_relative_l2 = output_error(phi, nd.fit_logits).relative_l2
        nd.fit_logits = None
        for name, check in checks.items():  # plain_after: the judgement these plain layers follow
            nd.layers[name].refit_check = {**check, "judged_on_draw": 0}
        return nd

    best: NetworkDraw | None = None
    auto = spec.draws == DRAWS_AUTO
    max_draws = auto_cap(net.n_params, int(X.shape[0]))
    cap = (max_draws if is_random(spec) else 1) if auto else int(spec.draws)
    errors: list[float] = []
    # several refit draws: what they have in common is computed once (draw_share.py); never for one
    share = DrawShare() if spec.compensate and cap > 1 else None
    # both set again by the first draw, which is always the best so far: their start values are not
    # observable (make mutate's equivalent mutants)
    since_gain = 0  # pragma: no mutate
    released = False  # pragma: no mutate (the best draw's arrays were let go: drawn again at the end)
    r = -1
    while r + 1 < cap:
        r += 1
        if auto and since_gain >= AUTO_PATIENCE:
            break
        if best is not None and not released and draw_nbytes(best) > HOLD_BYTES:
            best.layers, best.plain, released = {}, {}, True
        # progress stays monotone (first draw only); cancellation is still checked
        nd = make(r, on_layer if r == 0 else None)
        errors.append(nd.fit_relative_l2)
        if r == 0 and auto and cap == 1 and spec.compensate == HELD_BACK and dropped_any(nd):
            cap = max_draws  # a plain (randomized) draw shipped for some layer: more draws can differ
        if r == 0 and spec.compensate == HELD_BACK and plain_after(nd):
            draw_spec, dense = dataclasses.replace(spec, compensate=False), None
            checks = {n: dict(d.refit_check) for n, d in nd.layers.items() if d.refit_check is not None}
        if best is None or nd.fit_relative_l2 < best.fit_relative_l2:
            best, since_gain, released = nd, 0, False
        else:
            since_gain += 1
        del nd  # at most two draws alive (one above HOLD_BYTES): the best and the one being drawn
    assert best is not None
    if released:
        again = make(best.draw, None)
        if again.fit_relative_l2 != best.fit_relative_l2:  # same seed, same draw: must be the same bytes
            raise RuntimeError(
                f"draw {best.draw} drawn again gave fit error {again.fit_relative_l2!r}, "
                f"not {best.fit_relative_l2!r}: the draw is not deterministic"
            )
        best = again
    best.fit_errors = errors
    best.max_draws = cap if auto else None
    return best


def plain_after(nd: NetworkDraw) -> bool:
    """Whether ``compensate: null``'s rule judged some layer of this draw and dropped every refit it
    judged (the later draws are then made uncompensated: the module docstring)."""
    judged = [d.refit_check for d in nd.layers.values() if d.refit_check is not None]
    return bool(judged) and not any(c["kept"] for c in judged)


def dropped_any(nd: NetworkDraw) -> bool:
    """Whether ``compensate: null``'s rule shipped some layer's plain draw instead of its refit."""
    return any(d.refit_check is not None and not d.refit_check["kept"] for d in nd.layers.values())


def draw_nbytes(nd: NetworkDraw) -> int:
    """Bytes of the arrays a whole-network draw holds (``layer_draw_nbytes`` summed, kept plain draws
    included)."""
    return sum(layer_draw_nbytes(d) for d in [*nd.layers.values(), *nd.plain.values()])
