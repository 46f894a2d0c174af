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
from hwopt.errors import HwoptError
from hwopt.pruning.groups import ChannelGroup
from hwopt.pruning.importance import member_values
from hwopt.pruning.rules import attr

#: above this many unfolded columns a conv's Hessian is built per channel and spread over the kernel
MAX_COLUMNS = 4096
DAMP = 0.01
#: output positions per sample whose conv patches enter the Hessian (a fixed random subset beyond it)
MAX_POSITIONS = 1024
#: consumer activations one calibration batch may produce
ACTIVATION_BYTES = 256 << 20


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
    kernel_shape: tuple[int, ...] = ()  # (kh, kw) of a conv, from its weight

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
            out.append(Consumer(g.id, node, mb.slot, mb.axis, mb.index, kernel, unfold, tuple(w.shape[2:])))
    return out


def _gram(c: Consumer, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Σ xxᵀ over the input columns seen by one consumer, and how many columns were summed.

    An unfolded conv input is C·k² x positions: at detector resolutions hundreds of MB and most
    of OBSPA's time. Beyond `MAX_POSITIONS` output positions per sample, a fixed random subset of
    positions is unfolded (their patches gathered directly), which bounds memory and time; the
    Hessian is a mean over columns, so a subset estimates it without bias.
    """
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not (c.node.op_type == "Conv" and c.unfold):
        if c.node.op_type in ("Conv", "ConvTranspose"):
            t = t.movedim(1, -1)
        cols = t.reshape(-1, t.shape[-1])
        return (cols.T @ cols).double().numpy(), cols.shape[0]
    (kh, kw), size = c.kernel_shape, tuple(t.shape[2:])
    dil = tuple(attr(c.node, "dilations", [1, 1]))
    stride = tuple(attr(c.node, "strides", [1, 1]))
    (top, bottom), (left, right) = _conv_pads(c.node, size, (kh, kw), dil, stride)
    out_h = (size[0] + top + bottom - dil[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (size[1] + left + right - dil[1] * (kw - 1) - 1) // stride[1] + 1
    pos = np.arange(out_h * out_w)
    if pos.size > MAX_POSITIONS:
        pos = np.sort(np.random.default_rng(0).choice(pos, MAX_POSITIONS, replace=False))
    rows = torch.from_numpy((pos // out_w)[:, None] * stride[0] - top + np.arange(kh)[None, :] * dil[0])
    cols_ = torch.from_numpy((pos % out_w)[:, None] * stride[1] - left + np.arange(kw)[None, :] * dil[1])
    inside = ((rows >= 0) & (rows < size[0]))[:, :, None] & ((cols_ >= 0) & (cols_ < size[1]))[:, None, :]
    patches = t[:, :, rows.clamp(0, size[0] - 1)[:, :, None], cols_.clamp(0, size[1] - 1)[:, None, :]]
    patches = patches * inside  # (N, C, P, kh, kw), zero where the kernel reads padding
    cols = patches.permute(0, 2, 1, 3, 4).reshape(-1, t.shape[1] * kh * kw)
    return (cols.T @ cols).double().numpy(), cols.shape[0]


def _conv_pads(node: onnx.NodeProto, size, kernel, dil, stride) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) padding of a 2-D conv, explicit or from auto_pad SAME_*."""
    auto = attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for n, k, d, st in zip(size, kernel, dil, stride):
            need = max(0, (-(-n // st) - 1) * st + d * (k - 1) + 1 - n)
            lo = need // 2 if auto == "SAME_UPPER" else need - need // 2
            pads.append((lo, need - lo))
        return pads[0], pads[1]
    top, left, bottom, right = list(attr(node, "pads", [0, 0, 0, 0]))
    return (top, bottom), (left, right)


def _batch_size(model: onnx.ModelProto, probe_bytes: int) -> int:
    """Samples per onnxruntime run: the model's static batch if it has one, else as many as keep
    the probed activations (bytes per sample) under `ACTIVATION_BYTES`, at most 8."""
    from hwopt.graph.shapes import input_specs

    static = [s.dims[0] for s in input_specs(model) if s.dims and isinstance(s.dims[0], int) and s.dims[0] > 0]
    if static:
        return min(static)
    return int(max(1, min(8, ACTIVATION_BYTES // max(probe_bytes, 1))))


def collect_hessians(model: onnx.ModelProto, cons: Sequence[Consumer], calib: Dataset, *, limit: int = 256) -> dict[str, np.ndarray]:
    """H per consumer node from calibration data, streamed through onnxruntime (bounded memory).

    The first sample runs alone to measure the consumer inputs' size; the batch size for the rest
    follows from it (`_batch_size`). Only the running sums of XXᵀ are kept.
    """
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
    n = min(limit, len(calib))
    done, batch = 0, 1
    while done < n:
        feeds = {k: v[done : done + batch] for k, v in calib.inputs.items()}
        try:
            got = dict(zip(sess.output_names, sess.run(feeds)))
        except Exception as exc:  # onnxruntime's own exception types
            raise HwoptError(f"OBSPA cannot run the model on the calibration data: {str(exc).splitlines()[0]}") from exc
        for c in cons:
            xx, cnt = _gram(c, got[c.node.input[0]])
            sums[c.node.name] = sums.get(c.node.name, 0) + xx
            counts[c.node.name] = counts.get(c.node.name, 0) + cnt
        done += batch
        batch = min(n - done, _batch_size(model, sum(got[w].nbytes for w in wanted) // batch))
        del got
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
