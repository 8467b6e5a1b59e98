"""The default of ``compensate``: on wherever error compensation applies, each refit kept only where
it lowers the layer's objective on held-back fit samples (docs/compensation.md "Default").

``compensate: null`` (the default) resolves to ``HELD_BACK``, except where compensation does not apply:

- a stage names a deterministic method (``magnitude``, ``obd``, ``rtn``): the user asked for that
  classical method, and the refit would replace it (GPTQ's rounding instead of RTN);
- channel pruning of a residual/concat graph (one draw per dependency group, ``group_draw.py``),
  which the refit does not cover (an explicit ``compensate: true`` is refused there);
- nothing is compressed;
- the refit's dense linear algebra (the moment H, the Cholesky factor, the triangular solves, GPTQ's
  block updates; algorithm/compensate.py), about n²·(n + n_out) multiply-adds per layer with
  n = n_in + 1 (im2col columns for a conv), summed over the layers exceeds ``REFIT_WORK_CAP`` =
  2^38: a time and memory cap only. The work is cubic in a layer's width while the parameters are
  quadratic, so issue 10's rule applies (a superlinear part stays cheap or is opt-in): the
  64→4096→4096→10 MLP (2^37.6) spent 4.6 s of a 23 s ``--bits 4`` run in the refit (quiet machine,
  2026-12-03 17:09 UTC), while the 64→8192→8192→10 MLP (2^40.6) took 342 s and 2.57 GiB peak by
  default with the refit against 51 s and 1.97 GiB without (its H alone is 4·n² bytes per layer).
  Null then resolves to off and ``off_reason`` says so (an explicit ``true`` still turns it on).

``HELD_BACK`` is the per-layer rule of ``algorithm/layer_held_back.py``: every 4th fit sample is held back,
the layer is refit on the other 3/4, and the refit is kept only where the layer's refit objective on
the held-back quarter is lower than the plain (uncompensated) draw's. It replaced a 2^34 cap on the
same work sum, which had stood in for overfitting: on the random 784→4096→4096→10 and
64→8192→8192→10 MLPs (1,150 fit samples) the refit cut the fit-split error while the held-out error
rose (0.164 → 0.515, 0.132 → 0.318), on the trained 64→4096→4096→10 MLP it fell (0.0148 → 0.0057),
and nothing in the shapes told them apart; the held-back quarter does.

``compensate: true`` keeps every refit (on the whole fit split); ``false`` keeps the unbiased
randomized draws whose tiers E, T and P are proved.
"""

from __future__ import annotations

import dataclasses
import math

from netshrink.compression.graph.network import Network
from netshrink.compression.search.greedy import NetworkDraw
from netshrink.compression.spec import HELD_BACK, CompressSpec

__all__ = ["REFIT_WORK_CAP", "dropped_refits", "off_reason", "refit_work", "resolve_compensate"]

DETERMINISTIC = ("magnitude", "obd", "rtn")
REFIT_WORK_CAP = 2**38  # multiply-adds of the refit summed over the layers: time/memory (module docstring)


def resolve_compensate(net: Network, spec: CompressSpec) -> CompressSpec:
    """``spec`` with ``compensate`` resolved: an explicit choice is kept, null follows the module rule."""
    if spec.compensate is not None:
        return spec
    return dataclasses.replace(spec, compensate=HELD_BACK if compensate_applies(net, spec) else False)


def compensate_applies(net: Network, spec: CompressSpec, *, cap: bool = True) -> bool:
    """Whether ``compensate: null`` turns compensation on for ``spec`` on ``net`` (module docstring)."""
    p, q = spec.prune, spec.quantize
    if p is None and q is None and spec.target is None:
        return False
    if (p is not None and p.method in DETERMINISTIC) or (q is not None and q.method in DETERMINISTIC):
        return False
    # a target search prunes channels only when the spec leaves pruning open (no quantize either:
    # ``--bits`` alone restricts the search to bits, search/mixed._menus)
    structured = (p is not None and p.granularity != "weight") or (
        p is None and q is None and spec.target is not None
    )
    if structured and net.dag and net.channel_groups is not None:
        return False
    return not cap or refit_work(net) <= REFIT_WORK_CAP


def refit_work(net: Network) -> int:
    """Σ over the layers of n²·(n + n_out), n = n_in + 1: the refit's dense linear algebra (docstring)."""
    return sum((layer.n_in + 1) ** 2 * (layer.n_in + 1 + layer.n_out) for layer in net.layers)


def off_reason(net: Network, spec: CompressSpec) -> str | None:
    """Why ``compensate: null`` resolved to off for a model it would otherwise apply to (its cost)."""
    if spec.compensate is not None:
        return None
    work = refit_work(net)
    if work <= REFIT_WORK_CAP or not compensate_applies(net, spec, cap=False):
        return None
    return (
        "error compensation is off by default for this model: its refit would cost about "
        f"2^{math.log2(work):.2f} multiply-adds (cap 2^{math.log2(REFIT_WORK_CAP):.0f}, time and memory; "
        "docs/compensation.md); pass --compensate (compensate: true) to refit anyway"
    )


def dropped_refits(nd: NetworkDraw) -> str | None:
    """The report's warning when ``HELD_BACK`` shipped a layer's plain draw instead of its refit."""
    dropped = [n for n, d in nd.layers.items() if d.refit_check is not None and not d.refit_check["kept"]]
    if not dropped:
        return None
    return (
        f"error compensation: the refit was dropped for {len(dropped)} of {len(nd.layers)} layers "
        f"({', '.join(dropped)}): on the held-back quarter of the fit split (every 4th sample, which the "
        "refit never saw) it did not lower the layer's error against the dense output, so those layers "
        'ship the uncompensated draw (layers[].refit_check; docs/compensation.md "Default")'
    )
