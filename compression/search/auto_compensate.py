"""The default of ``compensate``: on wherever error compensation applies (docs/compensation.md "Default").

``bench/budget.py`` measured that compensation lowers the held-out error of every benchmark model at
equal bytes (docs/results.md §3), so ``compensate: null`` (the default) resolves to true, except:

- a stage names a deterministic method (``magnitude``, ``obd``, ``rtn``): the user asked for that
  classical method, and the refit would replace it (GPTQ's rounding instead of RTN);
- channel pruning of a residual/concat graph (one draw per dependency group, ``group_draw.py``),
  which the refit does not cover (an explicit ``compensate: true`` is refused there);
- nothing is compressed;
- the refit would be too costly or, at that size, likely to overfit: its dense linear algebra (the
  moment H, the Cholesky factor, the triangular solves, GPTQ's block updates;
  algorithm/compensate.py) costs about n²·(n + n_out) multiply-adds per layer, n = n_in + 1 (im2col
  columns for a conv); when the sum over the layers exceeds ``REFIT_WORK_CAP`` = 2^34 (every layer
  up to about 2,048 inputs), null resolves to off and ``off_reason`` says so (an explicit ``true``
  still turns it on). Since the float32 refit the cost no longer decides it at 17M parameters (the
  64→4096→4096→10 MLP's `--bits 4` took 72.3 s with the refit and 68.4 s without); overfitting does:
  a layer with more inputs than fit samples has more unknowns per row than equations, and on the
  random 784→4096→4096→10 and 64→8192→8192→10 MLPs (1,150 fit samples) the refit cut the fit-split
  error to 0.023 / 0.008 while the held-out error rose from 0.164 to 0.515 and from 0.132 to 0.318
  (docs/compensation.md "Default"). On the trained 64→4096→4096→10 MLP it helped (0.0148 → 0.0057).

``compensate: false`` keeps the unbiased randomized draws whose tiers E, T and P are proved.
"""

from __future__ import annotations

import dataclasses
import math

from netshrink.compression.graph.network import Network
from netshrink.compression.spec import CompressSpec

__all__ = ["REFIT_WORK_CAP", "off_reason", "refit_work", "resolve_compensate"]

DETERMINISTIC = ("magnitude", "obd", "rtn")
REFIT_WORK_CAP = 2**34  # multiply-adds of the refit summed over the layers (module docstring)


def resolve_compensate(net: Network, spec: CompressSpec) -> CompressSpec:
    """``spec`` with ``compensate`` a bool: an explicit choice is kept, null follows the module rule."""
    if spec.compensate is not None:
        return spec
    return dataclasses.replace(spec, compensate=compensate_applies(net, spec))


def compensate_applies(net: Network, spec: CompressSpec, *, cap: bool = True) -> bool:
    """Whether ``compensate: null`` turns compensation on for ``spec`` on ``net`` (module docstring)."""
    p, q = spec.prune, spec.quantize
    if p is None and q is None and spec.target is None:
        return False
    if (p is not None and p.method in DETERMINISTIC) or (q is not None and q.method in DETERMINISTIC):
        return False
    structured = (p is not None and p.granularity != "weight") or (p is None and spec.target is not None)
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
        f"2^{math.log2(work):.2f} multiply-adds (cap 2^{math.log2(REFIT_WORK_CAP):.0f}), and at this size "
        "it can overfit the fit split (docs/compensation.md); pass --compensate (compensate: true) to "
        "refit anyway"
    )
