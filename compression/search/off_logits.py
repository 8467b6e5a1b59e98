"""Layers that do not feed the logits Φ: a model with several outputs (features and logits, two
heads) has layers only another output reads. Every error netshrink measures, and every bound, is
Φ's, so such a layer's compression would ship unmeasured (found by probing, 2026-12-05: an MLP that
also outputs its hidden features had that head quantized at 4 bits, its own error 0.066, reported
nowhere but in ``not_covered``).

By default such a layer is left uncompressed (added to ``exclude``, with a summary warning naming
it). A layer the spec names itself (a per-layer ``prune.keep`` or ``quantize.bits`` entry) is
compressed as asked, and the warning says that its error is not measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from netshrink.compression.graph.network import Network
from netshrink.compression.spec import CompressSpec


def _named(spec: CompressSpec) -> set[str]:
    """The layers a per-layer keep or bits mapping names."""
    out: set[str] = set()
    if spec.prune is not None and isinstance(spec.prune.keep, Mapping):
        out |= set(spec.prune.keep)
    if spec.quantize is not None and isinstance(spec.quantize.bits, Mapping):
        out |= set(spec.quantize.bits)
    return out


def exclude_off_logits(net: Network, spec: CompressSpec) -> tuple[CompressSpec, list[str]]:
    """``spec`` with the layers that do not feed Φ (and that the spec does not name) excluded, and
    the summary warnings (see the module docstring)."""
    off = [la.name for la in net.layers if not la.feeds_logits and la.name not in spec.exclude]
    if not off or (spec.prune is None and spec.quantize is None and spec.target is None):
        return spec, []
    named = _named(spec)
    asked = [n for n in off if n in named]
    left = [n for n in off if n not in named]
    notes = []
    if left:
        notes.append(
            f"layers {', '.join(repr(n) for n in left)} do not feed the logits {net.logits!r} (another "
            "graph output reads them), so their error would not be measured: left uncompressed "
            "(listed in exclude); name them in a per-layer prune.keep or quantize.bits to compress them"
        )
    if asked:
        notes.append(
            f"layers {', '.join(repr(n) for n in asked)} do not feed the logits {net.logits!r}: "
            "compressed as the spec names them, but no error or bound here covers the outputs they feed"
        )
    if not left:
        return spec, notes
    return dataclasses.replace(spec, exclude=(*spec.exclude, *left)), notes
