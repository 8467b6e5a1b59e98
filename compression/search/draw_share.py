"""What best-of-R's whole-network draws have in common, computed once (issue 10).

Ref: P1 §3.2, Algorithm 1 (layer ℓ's draw depends only on its input and its generator); best of R
(``search/select.py``); docs/compensation.md (a refit is a deterministic function of its inputs).
Best of R draws the network R times, with generators keyed by (seed, layer, draw). Some of what a
draw computes does not depend on the draw, and each draw computed it again:

- the dense output y = W z + b of a layer on the refit rows and on the held-back rows of its dense
  input (``compensate.dense_output``, the refit's target and the held-back check's): the dense input
  is the same in every draw;
- a layer's compressed input ẑ_{ℓ−1}, when every compressed layer above it shipped a refit without
  a mask (``ships_same``: quantization alone, refit by ``compensate.compensate_layer``, whose Ŵ
  and bias are a deterministic function of ẑ and z), so that each of them is the same arrays in
  every draw, given the same input. The layer's statistics (``scores.layer_stats``) are then the
  same numbers too. (Its refit moments would be as well, but they are not held: on a wide layer H
  and B are 134 MB, and a refit with dropped units forms only its kept columns', kept_moments.py.)

The first draw that meets such a layer computes them; the later ones read them (the same functions
of the same tensors: the same bytes). With neuron pruning + 4 bits on the 17M MLP the first layer
(its inputs are the model's, never pruned) ships its refit in every draw, so the 4096-wide second
layer's input and statistics are shared by the four draws.

Memory: ``outputs`` is one (S, out) float32 pair per layer, the size of the dense activations
best of R holds anyway; ``inputs`` holds ẑ (S, n_in) and the statistics of the shared layers only,
for the duration of ``best_of``. It is made only when more than one refit draw is possible
(``best_of``), never for a single draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from netshrink.compression.algorithm.compensate import dense_output
from netshrink.compression.algorithm.layer_compress import LayerDraw
from netshrink.compression.algorithm.layer_held_back import held_back_rows
from netshrink.compression.algorithm.scores import LayerStats
from netshrink.compression.graph.network import Layer
from netshrink.compression.spec import PruneSpec

__all__ = ["DrawShare", "SharedInput", "ships_same"]


@dataclass
class SharedInput:
    """A layer's input ẑ on the fit split (S, *in) and its statistics."""

    Z: torch.Tensor
    stats: LayerStats


@dataclass
class DrawShare:
    """The module docstring's store, for the draws of one ``best_of``."""

    outputs: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = field(default_factory=dict)
    inputs: dict[str, SharedInput] = field(default_factory=dict)
    hits: int = 0  # inputs read by a later draw (tests, and the count of passes saved)

    def dense_outputs(
        self, layer: Layer, Z_dense: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``compensate.dense_output`` of the dense input ``Z_dense`` (S, *in) on its refit rows and on
        its held-back rows (``held_back_rows``), made once per layer."""
        hit = self.outputs.get(layer.name)
        if hit is None:
            r, v = held_back_rows(int(Z_dense.shape[0]), Z_dense.device)
            hit = (dense_output(layer, Z_dense[r]), dense_output(layer, Z_dense[v]))
            self.outputs[layer.name] = hit
        return hit

    def get_input(self, name: str) -> SharedInput | None:
        got = self.inputs.get(name)
        self.hits += got is not None
        return got

    def put_input(self, name: str, Z: torch.Tensor, stats: LayerStats) -> None:
        self.inputs[name] = SharedInput(Z, stats)


def ships_same(d: LayerDraw, prune: PruneSpec | None) -> bool:
    """Whether layer ``d``'s shipped arrays are the same in every draw given the same input: a refit
    (deterministic given ẑ and z) of a layer without a mask to draw."""
    return d.compensated and prune is None
