"""OBSPA: Optimal Brain Surgeon on SPA groups.

Pruning a group's channel removes input columns of every consumer layer (Conv, Gemm, MatMul with
a constant weight) that reads it. For each consumer, with the layer Hessian H = 2 X Xᵀ of its
(unfolded) input X over calibration samples, damped by 0.01·mean(diag H), removing a block Q of
columns costs ½·tr(W_Q [(H⁻¹)_QQ]⁻¹ W_Qᵀ), and the remaining columns absorb the loss through
δW = −W_Q [(H⁻¹)_QQ]⁻¹ (H⁻¹)_{Q,:}. A channel's cost is the sum over its group's consumers.

Activations come from onnxruntime with the consumer inputs added as graph outputs, streamed batch
by batch: only the running sums of X Xᵀ are kept. Without data, H comes from the BatchNorm
statistics of the producer (E[x²] ≈ γ² + β² per channel) or is the identity, where the cost
reduces to the consumer's column norms and no compensation happens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from hwopt.data import Dataset
from hwopt.pruning.groups import ChannelGroup
from hwopt.pruning.importance import member_values
from hwopt.pruning.rules import attr

#: above this many unfolded columns a conv's Hessian is built per channel and spread over the kernel
MAX_COLUMNS = 4096
DAMP = 0.01


@dataclass
class Consumer:
    """A layer whose input columns a group's channels feed, in a 2-D (outputs x columns) view."""

    group: int
    node: onnx.NodeProto
    slot: int
    axis: int
    index: np.ndarray  # group channel per input channel position
    kernel: int  # columns per input channel (kh*kw for a conv, 1 for a linear layer)
    unfold: bool  # True when H is built on the unfolded conv input

    @property
    def columns(self) -> np.ndarray:
        """Group channel of each column of the 2-D weight view."""
        return np.repeat(self.index, self.kernel)

    def to_2d(self, w: np.ndarray) -> np.ndarray:
        if self.node.op_type in ("Conv", "ConvTranspose") and self.axis == 1:
            return w.reshape(w.shape[0], -1)
        if self.node.op_type == "ConvTranspose":  # (Cin, Cout, k...) -> (Cout*k, Cin)
            return np.moveaxis(w, 0, -1).reshape(-1, w.shape[0])
        return w if self.axis == 1 else w.T

    def from_2d(self, w2: np.ndarray, like: np.ndarray) -> np.ndarray:
        if self.node.op_type in ("Conv", "ConvTranspose") and self.axis == 1:
            return w2.reshape(like.shape)
        if self.node.op_type == "ConvTranspose":
            return np.moveaxis(w2.reshape(*like.shape[1:], like.shape[0]), -1, 0)
        return w2 if self.axis == 1 else w2.T


def consumers(model: onnx.ModelProto, groups: Sequence[ChannelGroup]) -> list[Consumer]:
    """The 'in' members of prunable groups, with their weight layout."""
    nodes = {n.name: n for n in model.graph.node}
    read = member_values(model)
    out = []
    for g in groups:
        if not g.prunable:
            continue
        for mb in g.members:
            if mb.role != "in":
                continue
            node = nodes[mb.node]
            w = read(mb.node, mb.slot)
            kernel = int(np.prod(w.shape[2:])) if node.op_type == "Conv" else 1
            unfold = node.op_type == "Conv" and w.ndim == 4 and w.shape[1] * kernel <= MAX_COLUMNS
            if node.op_type == "ConvTranspose":
                kernel, unfold = 1, False
            out.append(Consumer(g.id, node, mb.slot, mb.axis, mb.index, kernel, unfold))
    return out


def _gram(c: Consumer, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Σ xxᵀ over the input columns seen by one consumer, and how many columns were summed."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if c.node.op_type == "Conv" and c.unfold:
        pads = list(attr(c.node, "pads", [0, 0, 0, 0]))
        if any(pads):
            t = F.pad(t, (pads[1], pads[3], pads[0], pads[2]))
        t = F.unfold(
            t,
            tuple(attr(c.node, "kernel_shape")),
            dilation=tuple(attr(c.node, "dilations", [1, 1])),
            stride=tuple(attr(c.node, "strides", [1, 1])),
        ).transpose(1, 2)
    elif c.node.op_type in ("Conv", "ConvTranspose"):
        t = t.movedim(1, -1)
    cols = t.reshape(-1, t.shape[-1])
    return (cols.T @ cols).double().numpy(), cols.shape[0]


def collect_hessians(
    model: onnx.ModelProto, cons: Sequence[Consumer], calib: Dataset, *, batch_size: int = 8, limit: int = 256
) -> dict[str, np.ndarray]:
    """H per consumer node from calibration data, streamed through onnxruntime (bounded memory)."""
    from hwopt.runtimes import get_runtime

    wanted = list(dict.fromkeys(c.node.input[0] for c in cons))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for name in wanted:
        if name not in have:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = get_runtime("onnxruntime").session(probe)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for feeds in calib.batches(batch_size, limit):
        got = dict(zip(sess.output_names, sess.run(feeds)))
        for c in cons:
            xx, n = _gram(c, got[c.node.input[0]])
            sums[c.node.name] = sums.get(c.node.name, 0) + xx
            counts[c.node.name] = counts.get(c.node.name, 0) + n
    hessians = {}
    for c in cons:
        h = 2.0 * sums[c.node.name] / max(counts[c.node.name], 1)
        if c.node.op_type == "Conv" and not c.unfold:
            h = np.kron(h, np.eye(c.kernel))
        hessians[c.node.name] = h
    return hessians


def data_free_hessians(model: onnx.ModelProto, groups: Sequence[ChannelGroup], cons: Sequence[Consumer]) -> dict[str, np.ndarray]:
    """Diagonal H from the group's BatchNorm (γ² + β² per channel) when it has one, else identity."""
    read = member_values(model)
    by_id = {g.id: g for g in groups}
    out = {}
    for c in cons:
        g = by_id[c.group]
        stat = np.ones(g.channels)
        scale = [m for m in g.members if m.role == "norm_scale"]
        shift = [m for m in g.members if m.role == "norm_bias"]
        if scale and shift and len(scale[0].index) == g.channels:
            stat = np.zeros(g.channels)
            stat[scale[0].index] = read(scale[0].node, scale[0].slot) ** 2 + read(shift[0].node, shift[0].slot) ** 2
            stat = np.maximum(stat, 1e-8)
        out[c.node.name] = np.diag(2.0 * np.repeat(stat[c.index], c.kernel))
    return out


def inverses(hessians: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(H + λI)⁻¹ per consumer with λ = 0.01·mean(diag H)."""
    out = {}
    for name, h in hessians.items():
        damp = DAMP * float(np.mean(np.diag(h))) or DAMP
        out[name] = np.linalg.inv(h + damp * np.eye(len(h)))
    return out


def obs_scores(
    model: onnx.ModelProto, groups: Sequence[ChannelGroup], cons: Sequence[Consumer], hinv: Mapping[str, np.ndarray]
) -> dict[int, np.ndarray]:
    """OBS cost of removing each channel alone, summed over the group's consumers (higher = keep)."""
    read = member_values(model)
    scores = {g.id: np.zeros(g.channels) for g in groups if g.prunable}
    for c in cons:
        w2 = c.to_2d(read(c.node.name, c.slot))
        hi = hinv[c.node.name]
        cols = c.columns
        blocks: dict[int, list[tuple[int, np.ndarray]]] = {}
        for ch in np.unique(cols).tolist():
            q = np.flatnonzero(cols == ch)
            blocks.setdefault(len(q), []).append((ch, q))
        for items in blocks.values():  # channels with equal block sizes: one batched inverse
            chans = np.array([ch for ch, _ in items])
            qs = np.stack([q for _, q in items])  # (n, k)
            inv = np.linalg.inv(hi[qs[:, :, None], qs[:, None, :]])  # (n, k, k)
            wq = w2[:, qs].transpose(1, 0, 2)  # (n, rows, k)
            cost = 0.5 * np.einsum("nrq,nqp,nrp->n", wq, inv, wq)
            np.add.at(scores[c.group], chans, cost)
    return scores


def obs_updates(
    model: onnx.ModelProto,
    cons: Sequence[Consumer],
    hinv: Mapping[str, np.ndarray],
    keep: Mapping[int, np.ndarray],
    channels: Mapping[int, int],
) -> dict[tuple[str, int], np.ndarray]:
    """Compensated consumer weights (before slicing) for the channels `keep` removes."""
    read = member_values(model)
    out = {}
    for c in cons:
        if c.group not in keep:
            continue
        kept = np.zeros(channels[c.group], dtype=bool)
        kept[keep[c.group]] = True
        q = np.flatnonzero(~kept[c.columns])
        if q.size == 0:
            continue
        w = read(c.node.name, c.slot)
        w2 = c.to_2d(w)
        hi = hinv[c.node.name]
        delta = -w2[:, q] @ np.linalg.solve(hi[np.ix_(q, q)], hi[q, :])
        out[(c.node.name, c.slot)] = c.from_2d(w2 + delta, w).astype(np.float32)
    return out
