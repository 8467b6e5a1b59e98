"""Best-of-R: the choice between whole-network draws (P1 §3.2, derived; docs/method.md §1).

R whole-network draws (``search/greedy.py``); the one with the lowest fit-split output error is kept.
``draws="auto"`` (the default) fixes R by a stated rule: draw until ``AUTO_PATIENCE`` consecutive
draws bring no gain on the best fit-split error, at most ``auto_cap`` draws (16, fewer for a large
model: R · parameters · fit samples ≤ 2^34, never below 4), and one draw when nothing in the spec
is random (round-to-nearest, magnitude/OBD). The rule reads only shapes and fit-split errors of
seeded draws, so it is deterministic. Every expectation bound holds for each draw, so it
holds for the kept one too: the bound statement does not depend on R (docs/method.md §1).
A module of its own so that ``make mutate`` can target the selection alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from netshrink.compression.bounds.prediction import Sensitivity
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.evaluation.metrics import output_error
from netshrink.compression.graph.network import Network
from netshrink.compression.search.greedy import (
    AUTO_MAX_DRAWS,
    AUTO_PATIENCE,
    NetworkDraw,
    StepFn,
    auto_cap,
    draw_network,
)
from netshrink.compression.spec import DRAWS_AUTO, CompressSpec

__all__ = ["AUTO_MAX_DRAWS", "AUTO_PATIENCE", "auto_cap", "best_of", "is_random"]


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
) -> NetworkDraw:
    """Best of ``spec.draws`` whole-network draws by fit-split relative error (ties: first draw).

    ``draws="auto"``: the module docstring's rule (patience ``AUTO_PATIENCE``, cap ``auto_cap``).
    """
    with torch.no_grad():
        phi = ex.run(X)[net.logits]
    best: NetworkDraw | None = None
    auto = spec.draws == DRAWS_AUTO
    max_draws = auto_cap(net.n_params, int(X.shape[0]))
    cap = (max_draws if is_random(spec) else 1) if auto else int(spec.draws)
    errors: list[float] = []
    since_gain = 0
    for r in range(cap):
        if auto and since_gain >= AUTO_PATIENCE:
            break
        nd = draw_network(
            net,
            ex,
            spec,
            X,
            draw=r,
            sensitivities=sensitivities,
            on_layer=on_layer if r == 0 else None,  # progress stays monotone; cancellation still checked
            should_cancel=should_cancel,
            logits=True,
        )
        assert nd.fit_logits is not None
        nd.fit_relative_l2 = output_error(phi, nd.fit_logits).relative_l2
        nd.fit_logits = None
        errors.append(nd.fit_relative_l2)
        if best is None or nd.fit_relative_l2 < best.fit_relative_l2:
            best, since_gain = nd, 0
        else:
            since_gain += 1
        del nd  # at most two draws alive: the best and the one being drawn
    assert best is not None
    best.fit_errors = errors
    best.max_draws = cap if auto else None
    return best
