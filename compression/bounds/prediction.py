"""The linearized output-error prediction (derived, beyond P1; docs/method.md §3 "A prediction that is
not a bound").

Linearize Φ around the dense model. For independent entries

    pred = Σ_w Var(t_w) · E_x Σ_k (∂Φ_k/∂w)²,

and for groups that share one draw (neurons, channels) pred = Σ_g τ² E_x Σ_k (∂Φ_k/∂W_g · W_g)².
One batched backward pass per output k gives δ_k = ∂Φ_k/∂(pre-activation) for every layer at once;
the per-sample weight gradient is δ_k ẑᵀ (dense) or Σ_pos δ_k(pos) patch(pos)ᵀ (conv, via im2col).
``weight_sq`` = E_x Σ_k (∂Φ_k/∂W_ij)² is also the output-aware greedy score's data term (OBD's
Gauss-Newton saliency). Always labelled a prediction, never a bound.
The group terms of a dense layer whose input feeds only that layer read Σ_i δ_ki W_ij = ∂Φ_k/∂ẑ_j
from the same backward pass (a zero probe on ẑ), in the executor's precision: on the 17M-parameter
MLP of bench/scale.py (256 samples, float32 executor) they differ from the float64 product by at
most 3.4e-7 relative, and the sensitivities take 8.2-10.5 s instead of 15.6 s (loaded machine).
A conv (one group) reads its group terms the same way: Σ_{h,w} ẑ_c ∂Φ_k/∂ẑ_c, im2col's adjoint. Its
weight gradients are made for all K outputs in one batched product, in the executor's precision
(float32 in the pipeline, sums added into float64): within 1e-5 relative, entry by entry, of the
former float64 products of the same deltas (tests/compression/bounds/test_prediction_precision.py;
about 1.2e-7 there). These numbers only rank candidates and predict; no bound reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from netshrink.compression.bounds.sensitivity_terms import dense_terms
from netshrink.compression.graph.network import Layer, Network


@dataclass
class Sensitivity:
    layer: str
    # (n_out, n_in) E_x Σ_k (∂Φ_k/∂W_ij)² (conv: im2col columns (c,u,v)), accumulated in float64 and
    # kept as float32 (memory, issue 10: the budget search holds it for the whole search)
    weight_sq: np.ndarray
    group_sq: np.ndarray  # (n_groups,) float64: E_x Σ_k (Σ_{j∈g} Σ_i ∂Φ_k/∂W_ij · W_ij)²
    group_size: int  # consecutive input columns per group
    # ``sensitivities(..., weight_sq=False)``, dense layers: the (S, o) and (S, j) float64 factors of
    # weight_sq, which is then empty; ``predict_independent`` forms it a row block at a time
    factors: tuple[torch.Tensor, torch.Tensor] | None = None


def zero_probe(holders: dict[str, torch.Tensor], name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ``inject`` hook that adds a zero tensor requiring grad to a pre-activation and keeps it in
    ``holders[name]``, so that autograd gives the output's gradient with respect to that tensor."""

    def add_zero(t: torch.Tensor) -> torch.Tensor:
        d = torch.zeros_like(t, requires_grad=True)  # same shape as the pre-activation
        holders[name] = d
        return t + d

    return add_zero


def group_size(layer: Layer) -> int:
    """Input columns owned by one upstream unit: kh·kw per conv channel, ``input_group`` for dense."""
    if layer.kind == "conv":
        assert layer.conv is not None
        kh, kw = layer.conv.kernel_shape
        return kh * kw
    return layer.input_group


def im2col(layer: Layer, z: torch.Tensor) -> torch.Tensor:
    """Input patches of a conv, (S, c_in·kh·kw, P), in the weight's (c, u, v) column order."""
    assert layer.conv is not None
    g = layer.conv
    top, left, bottom, right = g.pads
    z = F.pad(z, (left, right, top, bottom))  # (S, C, H+pads, W+pads)
    return F.unfold(z, kernel_size=g.kernel_shape, dilation=g.dilations, stride=g.strides)


def _weight_grads(
    layer: Layer, delta: torch.Tensor, z: torch.Tensor, patches: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample weight gradients (S, n_out, n_in) for one output k (``patches``: ``im2col(layer, z)``
    when the caller already has it). ``sensitivities`` batches the K outputs (``_weight_grads_k``);
    this per-output form is the tests' reference."""
    if layer.kind == "dense":
        return delta.reshape(delta.shape[0], -1)[:, :, None] * z.reshape(z.shape[0], -1)[:, None, :]
    assert layer.conv is not None
    if patches is None:  # pragma: no mutate (made again, the patches are the same entries)
        patches = im2col(layer, z)  # (S, C·kh·kw, P)
    d = delta.reshape(delta.shape[0], delta.shape[1], -1)  # (S, c_out, P)
    G = layer.conv.group
    if G == 1:
        return d @ patches.transpose(1, 2)  # (S, c_out, P) @ (S, P, n_in) -> (S, c_out, n_in)
    # Grouped conv: row block γ reads only the patches of its own input channels.
    pg = patches.reshape(patches.shape[0], G, layer.n_in, -1)  # (S, G, n_in, P)
    dg = d.reshape(d.shape[0], G, layer.n_out // G, -1)  # (S, G, c_out/G, P)
    return (dg @ pg.transpose(2, 3)).reshape(d.shape[0], layer.n_out, layer.n_in)  # (S, G, c_out/G, n_in)


GRAD_BUDGET = 2**22  # entries of per-sample conv weight gradients held at once (16 MiB in float32)


def _patches(layer: Layer, z: torch.Tensor) -> torch.Tensor | None:
    """A conv's im2col patches of the chunk ``z``, once for all K outputs, when they fit in
    ``GRAD_BUDGET`` entries (else None: ``_conv_terms`` makes them per block of samples).
    The same numbers either way (im2col only moves entries), so the sums do not change."""
    if layer.kind == "dense":
        return None
    g = layer.conv
    assert g is not None
    top, left, bottom, right = g.pads
    (kh, kw), (sh, sw), (dh, dw) = g.kernel_shape, g.strides, g.dilations
    # equivalent mutants (make mutate): made here or per output k, the patches are the same entries
    # (memory only; test_conv_patches_made_once_give_the_same_sensitivities checks bit for bit)
    oh = (int(z.shape[-2]) + top + bottom - dh * (kh - 1) - 1) // sh + 1  # pragma: no mutate
    ow = (int(z.shape[-1]) + left + right - dw * (kw - 1) - 1) // sw + 1  # pragma: no mutate
    fits = int(z.shape[0]) * layer.n_in * oh * ow <= GRAD_BUDGET  # pragma: no mutate
    return im2col(layer, z) if fits else None  # pragma: no mutate


def _weight_grads_k(layer: Layer, D: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Per-sample conv weight gradients of k' outputs at once, (s, k', n_out, n_in), from the deltas
    ``D`` (s, k', n_out, P) and ``patches`` = ``im2col(layer, z)`` (s, n_in, P): ``_weight_grads`` for
    each output, in one batched product."""
    assert layer.conv is not None
    s, kk, o, P = D.shape
    G = layer.conv.group
    if G == 1:  # (s, k'·o, P) @ (s, P, n_in) -> (s, k'·o, n_in)
        return (D.reshape(s, kk * o, P) @ patches.transpose(1, 2)).reshape(s, kk, o, layer.n_in)
    # Grouped conv: row block γ reads only the patches of its own input channels.
    pg = patches.reshape(s, 1, G, layer.n_in, P)  # (s, 1, G, n_in, P)
    dg = D.reshape(s, kk, G, o // G, P)  # (s, k', G, o/G, P)
    return (dg @ pg.transpose(3, 4)).reshape(s, kk, o, layer.n_in)  # (s, k', G, o/G, n_in)


def _conv_terms(
    layer: Layer,
    deltas: list[torch.Tensor],
    z: torch.Tensor,
    acc: torch.Tensor,
    acc_g: torch.Tensor | None,
    patches: dict[str, torch.Tensor | None],
) -> None:
    """Add Σ_s Σ_k G_sk² to ``acc`` (float64) for the outputs k whose deltas (s, n_out, oh, ow) are
    ``deltas``, and with ``acc_g`` the group terms Σ_s Σ_k (Σ_{j∈g} Σ_o G_sk W)², a few samples at a
    time (bounded memory). The products run in the deltas' precision (the executor's: float32 in the
    pipeline; each block's sums are added to the float64 accumulators). ``patches``: each conv's
    ``_patches`` of the chunk, by layer name: ``im2col(layer, z)`` (s, n_in, P) when the caller made it
    once for the chunk, None when it is made here per block."""
    D = torch.stack(deltas, dim=1)  # (s, k', o, oh, ow)
    D = D.reshape(D.shape[0], D.shape[1], layer.n_out, -1)  # (s, k', o, P)
    # equivalent mutant (make mutate): None makes the patches per block, the same entries (memory only)
    made = patches[layer.name]  # pragma: no mutate
    gs = group_size(layer)
    # equivalent mutants (make mutate): the step bounds memory only, any step ≥ 1 sums alike
    step = max(1, GRAD_BUDGET // (D.shape[1] * layer.n_out * layer.n_in))  # pragma: no mutate
    for i in range(0, D.shape[0], step):
        # (s', n_in, P): made here or once per chunk, the same entries (memory only)
        p = im2col(layer, z[i : i + step]) if made is None else made[i : i + step]  # pragma: no mutate
        G = _weight_grads_k(layer, D[i : i + step], p)  # (s', k', o, n_in)
        if acc_g is not None:
            # W (o, n_in) is float32 (Layer): float64 deltas promote it exactly, float32 ones match it
            contrib = (G * torch.as_tensor(layer.matrix)).sum(dim=2)  # (s', k', n_in): Σ_o G W
            grouped = contrib.reshape(G.shape[0], G.shape[1], -1, gs).sum(dim=3).double()  # (s', k', n_g)
            acc_g += (grouped**2).sum(dim=(0, 1))
        acc += G.square_().sum(dim=(0, 1)).double()  # in place: G is not read again


def sensitivities(
    run: Callable[..., dict[str, torch.Tensor]],
    net: Network,
    X: torch.Tensor,
    layers: Sequence[Layer],
    *,
    chunk: int = 256,  # pragma: no mutate (samples per pass: memory only)
    groups: bool = True,
    weight_sq: bool = True,
    group_layers: Collection[str] | None = None,
) -> dict[str, Sensitivity]:
    """E_x Σ_k (∂Φ_k/∂W)² and (with ``groups``) the group terms for ``layers``, at the dense model.

    ``run`` is ``Executor.run``; it must support ``inject`` and autograd (full support level).
    Dense layers: Σ_k (∂Φ_k/∂W_ij)² = (Σ_k δ_ki²) ẑ_j² per sample, so the K outputs are summed
    before the one (n_out × S)(S × n_in) product per chunk: cost O(S·K·n_out + S·n_out·n_in).
    The group terms need one more product per output (Σ_i δ_ki W_ij); ``groups=False`` skips them
    (``group_sq`` is then zeros) when nothing is drawn by groups. ``weight_sq=False``: a dense layer's
    (n_out, n_in) float32 ``weight_sq`` is not formed; its factors are kept (``Sensitivity.factors``)
    for ``predict_independent``, which only sums it against Var(t) (peak RSS, issue 10: 0.25 GiB on
    the 64→8192→8192→10 MLP, next to the draw).
    ``group_layers``: with ``groups``, the layers whose group terms are made (None: every layer); the
    others' ``group_sq`` is zeros. The pipeline names the layers whose input units can be removed
    (``removable_units``): no reader asks for the others' (issue 11: the first layer of the
    64-256-256-10 MLP took a (s, 256)(256, 64) float64 product per output for nothing, about a
    quarter of its sensitivities).
    """
    # A dense layer whose input feeds nothing else: Σ_i δ_ki W_ij is ∂Φ_k/∂ẑ_j, which the same backward
    # pass gives through a zero probe on ẑ (no (s × n_out)(n_out × n_in) product per output k).
    # The same for a conv (groups of 1) through ⟨ẑ_c, ∂Φ_k/∂ẑ_c⟩ = Σ_{j∈c} Σ_o G_oj W_oj (im2col's adjoint).
    with_g = {x.name for x in layers if groups and (group_layers is None or x.name in group_layers)}
    via_input = _probed_inputs(net, layers) & with_g
    W: dict[str, torch.Tensor] = {}  # float64 copies, made where first read: dense group terms

    def weight64(layer: Layer) -> torch.Tensor:
        if layer.name not in W:
            W[layer.name] = torch.as_tensor(layer.matrix, dtype=torch.float64)  # (out, in)
        return W[layer.name]

    # conv layers accumulate Σ_s G_s² here; dense layers keep the per-sample factors instead (below)
    acc_w = {
        layer.name: torch.zeros(layer.n_out, layer.n_in, dtype=torch.float64)
        for layer in layers
        if layer.kind != "dense"
    }
    # dense layers: Σ_k δ_ki² (S, o) and ẑ_j² (S, j), each chunk's rows written in place (no list of
    # chunks and no concatenated copy next to it), multiplied once at the end a block of rows at a
    # time: no (n_out, n_in) float64 accumulator or product (memory, issue 10)
    d2_all: dict[str, torch.Tensor] = {}
    z2_all: dict[str, torch.Tensor] = {}
    acc_g = {
        layer.name: torch.zeros(layer.n_in // group_size(layer), dtype=torch.float64) for layer in layers
    }
    S = X.shape[0]
    for start in range(0, S, chunk):
        xb = X[start : start + chunk]
        holders: dict[str, torch.Tensor] = {}
        inject = {layer.preact: zero_probe(holders, layer.name) for layer in layers}
        inputs = [layer for layer in layers if layer.name in via_input]
        inject.update({layer.input: zero_probe(holders, _INPUT + layer.name) for layer in inputs})
        out = run(xb, capture=[layer.input for layer in layers], inject=inject)
        phi = out[net.logits].flatten(1)  # (s, K)
        z_run = {layer.name: out[layer.input].detach().cpu() for layer in layers}  # executor precision
        zs = {name: z.double() for name, z in z_run.items()}
        tensors = [holders[layer.name] for layer in layers] + [holders[_INPUT + x.name] for x in inputs]
        d2sum: dict[str, torch.Tensor] = {}  # dense layers: Σ_k δ_k² per sample, (s, o)
        # each conv's patches of this chunk, once for all K outputs (when small)
        patches = {layer.name: _patches(layer, z_run[layer.name]) for layer in layers}
        pending: dict[str, list[torch.Tensor]] = {}  # conv: the deltas of outputs not yet folded in
        K = phi.shape[1]
        bufs: dict[tuple[int, ...], torch.Tensor] = {}  # dense layers: float64 buffers, by shape
        for k in range(K):
            # the graph is kept after the last output too: freed with ``out`` below (one backward pass
            # per output; sensitivity_terms.py says why not one per block of outputs)
            grads = torch.autograd.grad(phi[:, k].sum(), tensors, retain_graph=True)
            dz = {x.name: grads[len(layers) + i] for i, x in enumerate(inputs)}  # ∂Φ_k/∂ẑ
            for i, layer in enumerate(layers):
                z = zs[layer.name]
                if layer.kind == "dense":
                    a_g = acc_g[layer.name] if layer.name in with_g else None
                    dense_terms(
                        layer, grads[i], dz.get(layer.name), z, bufs, d2sum, a_g, group_size(layer), weight64
                    )
                    continue
                deltas = pending.setdefault(layer.name, [])
                deltas.append(grads[i].detach().cpu())  # (s, o, oh, ow), executor precision
                # all K outputs in one batched product, or as many as GRAD_BUDGET entries hold
                # equivalent mutants (make mutate): when to fold bounds memory only, the sums are alike
                full = len(deltas) * deltas[0].numel() >= GRAD_BUDGET  # pragma: no mutate
                if k == K - 1 or full:  # folds the last output's deltas: not equivalent, mutated
                    a_g = acc_g[layer.name] if layer.name in with_g and layer.name not in dz else None
                    _conv_terms(layer, deltas, z_run[layer.name], acc_w[layer.name], a_g, patches)
                    deltas.clear()
                if layer.name in dz:  # group c: Σ_{h,w} ẑ_c ∂Φ_k/∂ẑ_c = Σ_{j∈c} Σ_o G_oj W_oj
                    dzc = dz[layer.name].detach().double().cpu()  # (s, C, H, W)
                    grouped = (dzc * z).flatten(2).sum(dim=2)  # (s, C)
                    acc_g[layer.name] += (grouped**2).sum(dim=0)
        del out, phi, tensors, holders, patches, bufs
        for name, dsq in d2sum.items():
            rows = slice(start, start + dsq.shape[0])
            _factor(d2_all, name, S, dsq.shape[1])[rows] = dsq  # (s, o)
            z = zs[name].cpu().reshape(dsq.shape[0], -1)  # (s, j)
            torch.pow(z, 2, out=_factor(z2_all, name, S, z.shape[1])[rows])  # (s, j) ẑ_j²
        del zs, d2sum
    result: dict[str, Sensitivity] = {}
    for layer in layers:
        factors = None
        if layer.name in acc_w:
            wsq = acc_w.pop(layer.name).div_(S).to(torch.float32).numpy()  # (o, j)
        elif weight_sq:
            wsq = _dense_weight_sq(d2_all.pop(layer.name), z2_all.pop(layer.name)).numpy()
        else:
            factors = (d2_all.pop(layer.name), z2_all.pop(layer.name))  # (S, o), (S, j)
            wsq = NOT_FORMED  # formed by blocks in predict_independent
        result[layer.name] = Sensitivity(
            layer.name, wsq, (acc_g[layer.name] / S).numpy(), group_size(layer), factors
        )
    return result


def removable_units(net: Network) -> set[str]:
    """The layers whose input units a draw can remove, the only ones whose ``group_sq`` is read: the
    structured layers and, in a residual/concat graph, the readers of its channel groups."""
    names = {layer.name for layer in net.layers if layer.structured}
    cg = net.channel_groups
    return names | (set(cg.units) if cg is not None else set())


def _factor(store: dict[str, torch.Tensor], name: str, S: int, width: int) -> torch.Tensor:
    """The (S, width) float64 factor of layer ``name``, made at its first chunk."""
    if name not in store:
        store[name] = torch.empty(S, width, dtype=torch.float64)
    return store[name]


def _dense_weight_sq(D: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """(o, j) float32 E_x Σ_k δ_ki² ẑ_j² from the (S, o) and (S, j) float64 factors: one product over
    all S samples per block of ``PREDICT_BLOCK`` entries, summed in float64."""
    out = torch.empty(D.shape[1], Z.shape[1], dtype=torch.float32)  # (o, j)
    for rows in row_blocks(D.shape[1], Z.shape[1]):
        out[rows] = _weight_sq_block(D, Z, rows)
    return out


def _weight_sq_block(D: torch.Tensor, Z: torch.Tensor, rows: slice) -> torch.Tensor:
    """Rows ``rows`` of weight_sq, (b, j) float32: Σ_s Σ_k δ_ki² ẑ_j² / S from D (S, o), Z (S, j)."""
    return (D[:, rows].T @ Z).div_(D.shape[0]).to(torch.float32)  # (b, j)


_INPUT = "\0input:"  # holder key prefix of the input probes (never a layer name)


def _probed_inputs(net: Network, layers: Sequence[Layer]) -> set[str]:
    """The layers whose group terms come from a probe on their input: sole-input dense layers and
    convs of one group, where the layer's units can be removed (``structured``). A probe on layer 1's
    input (the model's, never pruned) made every backward pass run through layer 1's input gradient
    for group terms nothing reads (issue 11: about a third of the digits CNN's sensitivities); the
    product path gives them instead, and no other number changes (a probe only adds a zero)."""
    sole = _sole_input_dense(net, layers) | _sole_input_conv(net, layers)
    return {x.name for x in layers if x.name in sole and x.structured}


def _sole_input_dense(net: Network, layers: Sequence[Layer]) -> set[str]:
    """Dense layers whose input tensor is read by no other node and is no other layer's input or
    pre-activation: there ∂Φ_k/∂ẑ_j = Σ_i δ_ki W_ij exactly."""
    return _sole_input(net, layers, "dense")


def _sole_input_conv(net: Network, layers: Sequence[Layer]) -> set[str]:
    """The same for convs of one group: there ∂Φ_k/∂ẑ = col2im(Wᵀδ_k), the adjoint of im2col, so
    Σ_{h,w} ẑ_c ∂Φ_k/∂ẑ_c = Σ_{j∈c} Σ_o G_oj W_oj (padding reads zeros, which add nothing)."""
    convs = _sole_input(net, layers, "conv")
    return {x.name for x in layers if x.name in convs and x.conv is not None and x.conv.group == 1}


def _sole_input(net: Network, layers: Sequence[Layer], kind: str) -> set[str]:
    readers: dict[str, int] = {}
    for node in net.model.graph.node:
        for t in set(node.input):
            readers[t] = readers.get(t, 0) + 1
    taken = [x.preact for x in layers] + [x.input for x in layers]
    return {
        layer.name
        for layer in layers
        if layer.kind == kind and readers[layer.input] == 1 and taken.count(layer.input) == 1
    }


PREDICT_BLOCK = 1 << 20  # entries per float64 row block of ``predict_independent``
# weight_sq of a dense layer's Sensitivity with ``weight_sq=False`` (its factors are kept instead)
NOT_FORMED = np.empty((0, 0), np.float32)
NOT_FORMED.flags.writeable = False


def row_blocks(n: int, width: int) -> list[slice]:
    """Slices of rows 0..n-1 of an (n, width) array, ``PREDICT_BLOCK`` entries (at least one row) each:
    the row blocks of the float64 sums (memory, issue 10)."""
    # equivalent mutants (make mutate): the block bounds memory only, any block of ≥ 1 row sums alike
    rows = max(1, PREDICT_BLOCK // max(1, width))  # pragma: no mutate
    return [slice(r, r + rows) for r in range(0, n, rows)]


def predict_independent(var: np.ndarray, sens: Sensitivity) -> float:
    """Σ_ij Var(t_ij) · E_x Σ_k (∂Φ_k/∂W_ij)² for independently drawn entries (float64, row blocks)."""
    if sens.factors is not None:  # weight_sq formed a row block at a time: the same blocks and sums
        D, Z = sens.factors  # (S, o), (S, j)
        V = var.reshape(D.shape[1], Z.shape[1])  # (o, j)
        total = 0.0
        for rows in row_blocks(V.shape[0], V.shape[1]):
            Sb = _weight_sq_block(D, Z, rows).numpy()  # (b, j) float32
            total += float(np.multiply(V[rows], Sb, dtype=np.float64).sum())  # (b, j) products in float64
        return total
    S = sens.weight_sq
    return sum_product(var.reshape(S.shape), S)


def sum_product(V: np.ndarray, S: np.ndarray) -> float:
    """Σ_ij V_ij S_ij in float64 for V (n, m) and S (n, m) or (1, m), a block of rows at a time: no
    (n, m) float64 product (memory, issue 10)."""
    total = 0.0
    for rows in row_blocks(V.shape[0], V.shape[1]):
        Sb = S if S.shape[0] == 1 else S[rows]
        total += float(np.multiply(V[rows], Sb, dtype=np.float64).sum())  # (b, m) products in float64
    return total


def predict_groups(group_tau2: np.ndarray, sens: Sensitivity) -> float:
    """Σ_g τ²_g · E_x‖J W_g ẑ_g‖² for groups that share one Bernoulli draw."""
    return float(np.dot(group_tau2, sens.group_sq))  # group_sq is float64: so is the product
