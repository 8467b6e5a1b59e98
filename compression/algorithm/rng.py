"""Keyed random generators: every random mask and rounding is drawn from one CPU stream per
(seed, layer, draw), so the same seed gives the same bytes on any machine of a device type.

Ref: docs/method.md §1 "Randomness and determinism".
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["generator", "uniform"]

_DOMAIN = b"netshrink.rng.v1"


def derive_seed(seed: int, layer: int, draw: int) -> int:
    """A 63-bit seed from (seed, layer, draw) via SHA-256 (stable across Python/torch versions)."""
    payload = _DOMAIN + b"|" + b"|".join(str(int(v)).encode() for v in (seed, layer, draw))
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "big") >> 1


def generator(seed: int, layer: int, draw: int) -> torch.Generator:
    """A CPU ``torch.Generator`` keyed by (seed, layer, draw). Ref: docs/method.md §1."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(seed, layer, draw))
    return g


def uniform(
    gen: torch.Generator, n: int, device: str | torch.device = "cpu", *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``n`` U[0, 1) float64 numbers drawn on CPU from ``gen``, then moved to ``device``. ``out``: a
    CPU float64 buffer of ``n`` entries to draw into (the same numbers, no new allocation)."""
    if out is not None and out.device.type == "cpu":
        return torch.rand(n, generator=gen, dtype=torch.float64, out=out)  # (n,)
    u = torch.rand(n, generator=gen, dtype=torch.float64, device="cpu")  # (n,)
    return u.to(device)
