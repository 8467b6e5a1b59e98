"""The default of ``compensate``: on wherever error compensation applies (docs/compensation.md "Default").

``bench/budget.py`` measured that compensation lowers the held-out error of every benchmark model at
equal bytes (docs/results.md §3), so ``compensate: null`` (the default) resolves to true, except:

- a stage names a deterministic method (``magnitude``, ``obd``, ``rtn``): the user asked for that
  classical method, and the refit would replace it (GPTQ's rounding instead of RTN);
- channel pruning of a residual/concat graph (one draw per dependency group, ``group_draw.py``),
  which the refit does not cover (an explicit ``compensate: true`` is refused there);
- nothing is compressed.

``compensate: false`` keeps the unbiased randomized draws whose tiers E, T and P are proved.
"""

from __future__ import annotations

import dataclasses

from netshrink.compression.graph.network import Network
from netshrink.compression.spec import CompressSpec

__all__ = ["resolve_compensate"]

DETERMINISTIC = ("magnitude", "obd", "rtn")


def resolve_compensate(net: Network, spec: CompressSpec) -> CompressSpec:
    """``spec`` with ``compensate`` a bool: an explicit choice is kept, null follows the module rule."""
    if spec.compensate is not None:
        return spec
    return dataclasses.replace(spec, compensate=compensate_applies(net, spec))


def compensate_applies(net: Network, spec: CompressSpec) -> bool:
    """Whether ``compensate: null`` turns compensation on for ``spec`` on ``net`` (module docstring)."""
    p, q = spec.prune, spec.quantize
    if p is None and q is None and spec.target is None:
        return False
    if (p is not None and p.method in DETERMINISTIC) or (q is not None and q.method in DETERMINISTIC):
        return False
    structured = (p is not None and p.granularity != "weight") or (p is None and spec.target is not None)
    return not (structured and net.dag and net.channel_groups is not None)
