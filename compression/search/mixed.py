"""Budget search over per-layer settings: bits and structured keep per layer, smallest bytes first.

Derived (docs/budget-search.md). Each layer ℓ has a menu: bit width b ∈ {float32, 8, 4, 2} (the widths
that change the container: 5-7 bits cost what 8 does, 3 what 4 does, so they are dominated) and,
for layers whose input units can be deleted, a structured keep fraction κ (neurons/channels). For
every option the linearized prediction (docs/method.md §3) gives the added output error from the
dense fit-split activations: Σ Var(t)·E‖∂Φ/∂w‖² for the rounding and Σ_g τ²_g E‖J W_g ẑ_g‖² for the
groups, and the byte model gives its storage (a dropped unit of layer ℓ also deletes a row of its
producer). A greedy allocation, the classic one for separable knapsacks, then walks from the
uncompressed network: at each step it applies the one-notch move (one layer, one step down in bits
or keep) with the smallest predicted error added per byte saved. That yields a path of ever smaller
allocations. The path is verified by measurement: a binary search along it (``last_meeting``;
every round after the first measures its first move first) draws the candidate on the FIT
split (one whole-network draw, compensated if the spec says so) and keeps the smallest
allocation that meets the target there. The held-out split then decides ``budget_met`` (pipeline).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from netshrink.compression.algorithm.fraction import keeps_a_unit
from netshrink.compression.algorithm.prune import randomized_group_tau2
from netshrink.compression.algorithm.scores import layer_stats, n_units
from netshrink.compression.bounds.prediction import Sensitivity, predict_groups
from netshrink.compression.evaluation.executor import Executor
from netshrink.compression.evaluation.metrics import relative_l2, top1, top1_agreement
from netshrink.compression.graph.network import Network
from netshrink.compression.search.greedy import NetworkDraw, draw_network
from netshrink.compression.search.group_draw import space_keeps
from netshrink.compression.search.prefix_cache import PrefixCache
from netshrink.compression.search.quant_menu import quant_preds
from netshrink.compression.search.select import is_random
from netshrink.compression.search.units import UnitModel, unit_model
from netshrink.compression.search.verification import (
    VERIFY_RULE,
    best_judged,
    last_meeting,
    meets_threshold,
    near_miss,
    reaches,
    verification_split,
    verify_draws,
)
from netshrink.compression.spec import CompressSpec, Granularity, PruneSpec, QuantizeSpec

BITS_MENU: tuple[int | None, ...] = (None, 8, 4, 2)  # None = float32; one step per container
KEEP_MENU = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
ROUNDS = 4  # verified-greedy rounds (each bans the move a measurement refuted)
MAX_MEASURED = 16  # candidates the search may measure on the fit split
CACHE_WEIGHT_BYTES = 1  # the prefix cache holds at most this many times the float32 weights' bytes
CACHE_FLOOR = 8 << 20  # ... or this many bytes per store, whichever is more (a small net's inputs)
__all__ = ["BITS_MENU", "KEEP_MENU", "Allocation", "mixed_search"]


@dataclass
class Allocation:
    """One point of the greedy path: per-layer (keep, bits), its predicted error and modelled bytes."""

    keep: dict[str, float]
    bits: dict[str, int | None]
    predicted: float  # predicted E‖Φ − Φ̂‖² (linearized, summed over layers)
    nbytes: float  # modelled weight + scale + bias bytes
    move: str = "start"
    measured: float | None = None
    meets: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _container(bits: int | None) -> int:
    return 32 if bits is None else 2 if bits <= 2 else 4 if bits <= 4 else 8


def _nbytes(
    net: Network, keep: Mapping[str, float], bits: Mapping[str, int | None], units: UnitModel | None = None
) -> float:
    """Weights at their container width, a float32 scale per kept row when quantized, float32 bias.

    The rows and columns kept are the units the keeps really drop (``units.UnitModel``: a DAG's
    channel space keeps max(1, ⌊κG + ½⌋) of its G channels, whoever reads them; a dropped unit also
    deletes its producer's row). Until 2026-12-05 a reader's whole input was scaled by its κ, so a
    keep that drops no channel (0.9 of a 4-channel space) was credited bytes (found by probing)."""
    units = unit_model(net) if units is None else units
    total = 0.0
    for layer in net.layers:
        rows = layer.n_out * units.row_fraction(layer.name, keep)
        cols = layer.n_in * units.col_fraction(layer.name, keep)
        b = bits[layer.name]
        total += rows * cols * _container(b) / 8 + (0 if b is None else 4 * rows)
        total += 0 if layer.bias is None else 4 * rows
    return total


def _menus(
    net: Network, spec: CompressSpec, Zs: Mapping[str, torch.Tensor], sens: Mapping[str, Sensitivity]
) -> tuple[dict[str, dict[int | None, float]], dict[str, dict[float, float]], PruneSpec | None, UnitModel]:
    """Predicted error of every bits option and every keep option, per layer (dense fit activations),
    and the units each keep drops (``units.UnitModel``). A keep is on a layer's menu only when it
    drops more units than the notch above it: on a DAG only a space's first reader's keep is drawn
    (``space_keeps``), and a keep that rounds to the count of the notch above (κ = 0.9 of a 4-channel
    space keeps 4, as κ = 1 does; 0.7 keeps 3, as 0.8 does) draws the same network. Until 2026-12-05
    such a keep was on the menu, credited bytes it never saved, and shipped (found by probing)."""
    allow_q = spec.quantize is not None or spec.prune is None
    allow_p = spec.prune is not None or spec.quantize is None
    gran: Granularity = "channel" if any(layer.kind == "conv" for layer in net.layers) else "neuron"
    base_p = dataclasses.replace(spec.prune or PruneSpec(), granularity=gran) if allow_p else None
    units = unit_model(net, spec if base_p is None else dataclasses.replace(spec, prune=base_p))
    scale = (spec.quantize or QuantizeSpec()).scale
    qpred: dict[str, dict[int | None, float]] = {}
    ppred: dict[str, dict[float, float]] = {}
    for layer in net.layers:
        qpred[layer.name] = {None: 0.0}
        ppred[layer.name] = {1.0: 0.0}
        if layer.name in spec.exclude:
            continue
        if allow_q:
            widths = tuple(b for b in BITS_MENU if b is not None)
            qpred[layer.name].update(quant_preds(layer, widths, scale, sens[layer.name]))
        above = units.signature(layer.name, 1.0)  # () for a layer whose keep draws nothing
        if base_p is not None and layer.structured and above:
            stats = layer_stats(layer, Zs[layer.name], groups=True)
            assert stats.group_energy is not None
            for k in KEEP_MENU[1:]:  # prune_layer's group τ², without its draw (baselines: none)
                rand = base_p.method == "randomized_greedy"
                if rand and not keeps_a_unit(k, n_units(layer)):
                    continue  # below one unit kept on average: not on this layer's menu
                if units.signature(layer.name, k) == above:
                    continue  # drops no unit more than the notch above: the same draw
                above = units.signature(layer.name, k)
                tau2 = randomized_group_tau2(stats.group_energy, k, base_p) if rand else None
                ppred[layer.name][k] = predict_groups(tau2, sens[layer.name]) if tau2 is not None else 0.0
    return qpred, ppred, base_p, units


def greedy_path(
    net: Network,
    qpred: Mapping[str, Mapping[int | None, float]],
    ppred: Mapping[str, Mapping[float, float]],
    start: Allocation | None = None,
    banned: frozenset[tuple[str, str]] = frozenset(),
    units: UnitModel | None = None,
) -> list[Allocation]:
    """The greedy allocation path from ``start`` (default: uncompressed) to the last allowed notch.

    ``banned`` holds (layer, "bits"|"keep") moves that a measurement refuted (``mixed_search``);
    ``units`` the units each keep drops (default: P1's rule, ``unit_model(net)``).
    """
    units = unit_model(net) if units is None else units
    keep = dict(start.keep) if start else {layer.name: 1.0 for layer in net.layers}
    bits: dict[str, int | None] = dict(start.bits) if start else {layer.name: None for layer in net.layers}

    def pred() -> float:
        return sum(qpred[n][bits[n]] + ppred[n][keep[n]] for n in keep)

    path = [start or Allocation(dict(keep), dict(bits), pred(), _nbytes(net, keep, bits, units))]
    while True:
        best: tuple[float, str, str, Any] | None = None
        cur_bytes = path[-1].nbytes
        for n in keep:
            moves: list[tuple[str, Any]] = []
            bi, ki = list(qpred[n]), list(ppred[n])
            if (n, "bits") not in banned and bi.index(bits[n]) + 1 < len(bi):
                moves.append(("bits", bi[bi.index(bits[n]) + 1]))
            if (n, "keep") not in banned and ki.index(keep[n]) + 1 < len(ki):
                moves.append(("keep", ki[ki.index(keep[n]) + 1]))
            for kind, value in moves:
                trial_k = {**keep, n: value} if kind == "keep" else keep
                trial_b = {**bits, n: value} if kind == "bits" else bits
                saved = cur_bytes - _nbytes(net, trial_k, trial_b, units)
                added = max(
                    qpred[n][trial_b[n]] + ppred[n][trial_k[n]] - qpred[n][bits[n]] - ppred[n][keep[n]], 0.0
                )
                if saved > 0 and (best is None or added / saved < best[0]):
                    best = (added / saved, n, kind, value)
        if best is None:
            return path
        _, n, kind, value = best
        if kind == "bits":
            bits[n] = value
        else:
            keep[n] = value
        path.append(
            Allocation(
                dict(keep), dict(bits), pred(), _nbytes(net, keep, bits, units), f"{n}: {kind} -> {value}"
            )
        )


def allocation_spec(spec: CompressSpec, a: Allocation, base_p: PruneSpec | None) -> CompressSpec:
    """The CompressSpec of an allocation: per-layer keep and bits mappings (one draw, no target)."""
    keep = {n: k for n, k in a.keep.items() if k < 1.0}
    bits = {n: b for n, b in a.bits.items() if b is not None}
    prune = None if not keep or base_p is None else dataclasses.replace(base_p, keep=keep)
    quant = None if not bits else dataclasses.replace(spec.quantize or QuantizeSpec(), bits=bits)
    return dataclasses.replace(spec, prune=prune, quantize=quant, target=None, draws=1)


def mixed_search(
    net: Network,
    ex: Executor,
    spec: CompressSpec,
    X: torch.Tensor,
    labels: Any,
    sens: Mapping[str, Sensitivity],
    *,
    should_cancel: Callable[[], bool] | None = None,
    on_candidate: Callable[[int, int], None] | None = None,
) -> tuple[CompressSpec, dict[str, Any], NetworkDraw | None]:
    """Return the chosen spec, the report's ``budget`` section, and the chosen fit-split draw."""
    assert spec.target is not None
    t = spec.target
    with torch.no_grad():
        dense = ex.run(X, capture=[layer.input for layer in net.layers])
    phi = dense[net.logits]
    energy = float((phi.double().reshape(phi.shape[0], -1) ** 2).sum(dim=1).mean())
    qpred, ppred, base_p, units = _menus(
        net, spec, {layer.name: dense[layer.input] for layer in net.layers}, sens
    )
    if not spec.compensate:  # only a refit reads the dense activations again (memory: the input cache)
        dense = {net.logits: phi}
    measured: list[Allocation] = []
    # per-prefix layer draws, shared by all candidates; bounded by bytes (docs/budget-search.md): the
    # float32 weights' bytes, but at least CACHE_FLOOR, since a small conv net's layer inputs on the
    # fit split dwarf its weights (the digits CNN: 40 kB of weights, a 300 kB input for its 2nd conv)
    cache = PrefixCache(
        max(CACHE_WEIGHT_BYTES * 4 * net.n_params, CACHE_FLOOR),
        groups=base_p is not None and base_p.granularity != "weight",
    )
    k_draws = 1 if spec.compensate else verify_draws(spec)  # the refit absorbs most of a mask's variance
    vs = verification_split(X, dense, phi, labels, bool(spec.compensate))
    target = float((t.min if t.metric != "relative_l2" else t.max) or 0.0)
    threshold = meets_threshold(t.metric, target, X)
    threshold_ver = None if vs.X_ver is None else meets_threshold(t.metric, target, vs.X_ver)

    # what the candidates are judged against depends on no candidate: made once (issue 11, its cost)
    ref_all = phi if vs.order is None else phi[vs.order]  # (S, K) the fit split in the order judged

    def judge(ref: torch.Tensor) -> Callable[[torch.Tensor], float]:
        """The target's metric of Φ̂ against ``ref``: relative_l2, or top-1 agreement (``top1(ref)``
        once); the numbers ``output_error`` and ``classification`` give."""
        if t.metric == "relative_l2":
            return lambda hat: relative_l2(ref, hat)
        y0 = top1(ref)
        return lambda hat: top1_agreement(y0, hat)

    judge_fit = judge(ref_all)
    judge_ver = None if vs.phi_ver is None else judge(vs.phi_ver)

    def meets(value: float, held_back: float | None) -> bool:
        return reaches(t.metric, value, threshold) and (
            held_back is None or threshold_ver is None or reaches(t.metric, held_back, threshold_ver)
        )

    kept: list[Allocation] = []  # the one measured allocation whose draw is kept (see ``check``)

    def check(a: Allocation) -> bool:
        """Measure ``a`` on the fit split. Memory: only the draw that can still be shipped is kept,
        the first meeting draw of the fewest-bytes allocation met so far (the final pick below);
        every other draw is dropped as soon as its value is known."""
        if a.meets is None:
            if on_candidate is not None:
                on_candidate(len(measured), MAX_MEASURED)
            cspec = allocation_spec(spec, a, base_p)
            judged: list[tuple[float, float | None]] = []  # (fit-split value, held-back value)
            errors: list[float] = []
            shipped: NetworkDraw | None = None
            for r in range(k_draws if is_random(cspec) else 1):
                nd = draw_network(
                    net, ex, cspec, vs.X_refit, draw=r, sensitivities=sens, should_cancel=should_cancel,
                    cache=cache, dense_inputs=vs.dense_refit, logits=True,
                )  # fmt: skip
                nd.fit_rows = vs.refit_rows
                phi_hat = nd.fit_logits  # (S_r, K) on the rows drawn (and refit) on
                assert phi_hat is not None
                nd.fit_logits = None  # the shipped draw keeps no (S, K) copy
                held_back = None
                if vs.X_ver is not None and judge_ver is not None and vs.order is not None:
                    phi_v = cache.held_back_logits(ex, nd, vs.X_ver)  # (S_v, K) rows the refit never saw
                    held_back = judge_ver(phi_v)
                    phi_hat = torch.cat([phi_hat, phi_v])  # (S, K) in the order vs.order
                nd.fit_relative_l2 = relative_l2(ref_all, phi_hat)
                value = judge_fit(phi_hat)
                judged.append((value, held_back))
                errors.append(nd.fit_relative_l2)
                if meets(value, held_back):
                    shipped = nd  # the first draw that meets is the one shipped
                    break
                del nd, phi_hat  # a missing draw is never shipped
                if not near_miss(t.metric, value, threshold):
                    break  # a far miss is not redrawn
            value, held_back = judged[-1] if shipped is not None else best_judged(t.metric, judged)
            a.measured, a.meets = value, meets(value, held_back)
            a.extra["draws"] = len(judged)
            a.extra["held_back"] = held_back
            if shipped is not None and (not kept or a.nbytes < kept[0].nbytes):
                if kept:
                    kept[0].extra.pop("draw", None)
                shipped.fit_errors = errors
                a.extra["draw"] = shipped
                kept[:] = [a]
                cache.pin(shipped)  # later rounds walk on from it: its layers are reused
            del shipped
            measured.append(a)
        return bool(a.meets)

    # Verified greedy: search along the path for the last point that meets the target on the fit
    # split (``last_meeting``: bisection; later rounds measure their first move first); the move
    # right after it was refuted, so ban it (that layer, that kind) and walk on from the last good
    # point. At most ROUNDS rounds and MAX_MEASURED measurements.
    banned: set[tuple[str, str]] = set()
    good: Allocation | None = None
    trace: list[tuple[int, Allocation]] = []
    for rnd in range(ROUNDS):
        path = greedy_path(net, qpred, ppred, good, frozenset(banned), units)
        trace += [(rnd, a) for a in (path if rnd == 0 else path[1:])]
        if len(path) < 2:
            break
        lo = last_meeting(
            path, check, lambda a: a.meets, lambda: len(measured) < MAX_MEASURED, next_first=rnd > 0
        )
        good = path[lo]
        if lo == len(path) - 1 or len(measured) >= MAX_MEASURED or path[lo + 1].meets is not False:
            break
        n, kind = path[lo + 1].move.split(": ")[0], path[lo + 1].move.split(": ")[1].split(" ")[0]
        banned.add((n, kind))
    # The smallest verified candidate: the fewest modelled bytes among all that met on the fit split.
    chosen = min((a for a in measured if a.meets), key=lambda a: a.nbytes, default=None)
    pick = chosen if chosen is not None else (trace[1][1] if len(trace) > 1 else trace[0][1])
    picked = space_keeps(net, allocation_spec(spec, pick, base_p))  # what is drawn: one keep per space
    shipped = {n: 1.0 if picked.prune is None else float(picked.prune.keep_for(n)) for n in pick.keep}

    def rel(a: Allocation) -> float | None:
        return None if energy <= 0 else math.sqrt(a.predicted / energy)

    layers = [
        {
            "name": layer.name,
            "keep": shipped[layer.name],
            "bits": pick.bits[layer.name],
            "container_bits": _container(pick.bits[layer.name]),
            "predicted_mse": _predicted(qpred, ppred, layer.name, pick.bits[layer.name], shipped[layer.name]),
            "granularity": None if shipped[layer.name] >= 1.0 or base_p is None else base_p.granularity,
        }
        for layer in net.layers
    ]
    budget = {
        "target": dataclasses.asdict(t),
        "met": False if chosen is None else None,  # decided on the held-out split by the caller
        "chosen": {
            "keep": {n: k for n, k in shipped.items() if k < 1},
            "bits": {n: b for n, b in pick.bits.items() if b},
        },
        "layers": layers,
        "trace": [
            {
                "round": rnd,
                "move": a.move,
                "keep": None,
                "bits": None,
                "setting": _describe(a),
                "bytes": a.nbytes,
                "predicted": rel(a),
                "measured": a.measured,
                "measured_held_back": a.extra.get("held_back"),
                "draws": a.extra.get("draws"),
                "meets": a.meets,
            }
            for rnd, a in trace
        ],
        "banned_moves": sorted(f"{n}: {k}" for n, k in banned),
        "selection_split": "fit",
        "verification": {
            "metric": t.metric,
            "threshold": threshold,
            "threshold_held_back": threshold_ver,
            "rule": VERIFY_RULE,
            "max_draws_per_candidate": k_draws,
            "refit_samples": int(vs.X_refit.shape[0]) if vs.X_ver is not None else None,
            "verification_samples": int((vs.X_ver if vs.X_ver is not None else X).shape[0]),
        },
        "search": "per-layer greedy allocation by predicted error per byte, verified on the fit split",
        "measured_candidates": len(measured),
        "cached_layer_draws_reused": cache.hits,
        "cached_layer_inputs_reused": cache.input_hits,
        "cached_refits_reused": cache.refit_hits,
        "cached_held_back_inputs_reused": cache.ver_hits,
    }
    draw = None if chosen is None else chosen.extra.get("draw")
    return picked, budget, draw


def _predicted(
    qpred: Mapping[str, Mapping[int | None, float]],
    ppred: Mapping[str, Mapping[float, float]],
    name: str,
    bits: int | None,
    keep: float,
) -> float | None:
    """A layer's predicted mean squared error at (bits, keep); None for a keep off its menu (a reader
    whose channel space another reader's keep decides, ``space_keeps``)."""
    pruning = ppred[name].get(keep)
    return None if pruning is None else qpred[name][bits] + pruning


def _describe(a: Allocation) -> str:
    parts = []
    for n in a.keep:
        b, k = a.bits[n], a.keep[n]
        s = ("fp32" if b is None else f"{b}b") + ("" if k >= 1 else f" keep {k:g}")
        parts.append(f"{n}: {s}")
    return "; ".join(parts)
