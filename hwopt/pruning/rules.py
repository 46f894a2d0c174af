"""The rule table: how channel elements flow through each ONNX op.

A rule reads the channel maps of a node's inputs (`Tracer.get`), sets its outputs' maps, unifies
elements that must go together and records members (weights and shape constants to rewrite).
Anything a rule does not understand is a barrier: the elements involved are fixed and the outputs
carry no map, so later ops see ordinary fixed-width tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from hwopt.pruning.groups import Tracer

Rule = Callable[[Tracer, onnx.NodeProto], None]
#: largest tensor (elements) a reshape rule paints with channel ids to see where channels go
MAX_PAINT = 1 << 25


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def barrier(t: Tracer, node: onnx.NodeProto, reason: str | None = None) -> None:
    """Fix all channels entering the node; its outputs carry none."""
    t.block(node.input, reason or f"{node.op_type} {node.name} is a barrier")


def _axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


# ---------------------------------------------------------------- pass-through and shape-only ops


def passthrough(t: Tracer, node: onnx.NodeProto) -> None:
    """Elementwise on the first input (activations, Cast, Dropout, Clip with scalar bounds...)."""
    cmap = t.get(node.input[0])
    if any(t.get(i) for i in node.input[1:]):
        return barrier(t, node, f"{node.op_type} {node.name}: per-channel extra input")
    if cmap is not None:
        t.set(node.output[0], cmap.axis, cmap.ids)


def ignore(t: Tracer, node: onnx.NodeProto) -> None:
    """Shape/Size read only dims; a pruned tensor just reports its new dims."""


def spatial_pool(t: Tracer, node: onnx.NodeProto) -> None:
    """Pooling and Resize work per channel on NCHW tensors (axis 1)."""
    cmap = t.get(node.input[0])
    if cmap is None:
        return
    if cmap.axis != 1:
        return barrier(t, node, f"{node.op_type} {node.name}: channels not on axis 1")
    if node.op_type == "Resize":
        scales = t.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        sizes = node.input[3] if len(node.input) > 3 else ""
        if sizes or scales is None or (scales.size and scales[1] != 1):
            return barrier(t, node, f"Resize {node.name} sets the channel count or scale")
    t.set(node.output[0], 1, cmap.ids)


def softmax(t: Tracer, node: onnx.NodeProto) -> None:
    cmap = t.get(node.input[0])
    shape = t.shape(node.input[0])
    if cmap is None:
        return
    if shape is None or _axis(attr(node, "axis", -1), len(shape)) == cmap.axis:
        return barrier(t, node, f"{node.op_type} {node.name} normalizes over channels")
    t.set(node.output[0], cmap.axis, cmap.ids)


def reduce(t: Tracer, node: onnx.NodeProto) -> None:
    """Reductions over non-channel axes (global pooling written as ReduceMean) keep channels."""
    cmap = t.get(node.input[0])
    shape = t.shape(node.input[0])
    if cmap is None:
        return
    axes = attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        c = t.const(node.input[1])
        axes = None if c is None else c.tolist()
    if shape is None or not axes:
        return barrier(t, node, f"{node.op_type} {node.name} reduces over all or unknown axes")
    axes = [_axis(a, len(shape)) for a in axes]
    if cmap.axis in axes:
        return barrier(t, node, f"{node.op_type} {node.name} reduces over channels")
    keep = attr(node, "keepdims", 1)
    out_axis = cmap.axis if keep else cmap.axis - sum(a < cmap.axis for a in axes)
    t.set(node.output[0], out_axis, cmap.ids)


def transpose(t: Tracer, node: onnx.NodeProto) -> None:
    cmap = t.get(node.input[0])
    shape = t.shape(node.input[0])
    if cmap is None:
        return
    perm = attr(node, "perm")
    if perm is None:
        if shape is None:
            return barrier(t, node, f"Transpose {node.name}: unknown rank")
        perm = list(reversed(range(len(shape))))
    t.set(node.output[0], list(perm).index(cmap.axis), cmap.ids)


def gather(t: Tracer, node: onnx.NodeProto) -> None:
    """Gather along a non-channel axis (e.g. a class token) keeps channels, shifting the axis."""
    cmap = t.get(node.input[0])
    if t.get(node.input[1]):
        return barrier(t, node, f"Gather {node.name}: channel-indexed indices")
    if cmap is None:
        return
    shape, ind = t.shape(node.input[0]), t.shape(node.input[1])
    if shape is None or ind is None:
        return barrier(t, node, f"Gather {node.name}: unknown shapes")
    axis = _axis(attr(node, "axis", 0), len(shape))
    if axis == cmap.axis:
        return barrier(t, node, f"Gather {node.name} indexes channels")
    t.set(node.output[0], cmap.axis if cmap.axis < axis else cmap.axis - 1 + len(ind), cmap.ids)


def pad(t: Tracer, node: onnx.NodeProto) -> None:
    cmap = t.get(node.input[0])
    shape = t.shape(node.input[0])
    if cmap is None:
        return
    pads = t.const(node.input[1]) if len(node.input) > 1 else None
    axes = t.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if pads is None or shape is None:
        return barrier(t, node, f"Pad {node.name}: pads not constant")
    rank = len(shape)
    axes = list(range(rank)) if axes is None else [_axis(int(a), rank) for a in axes]
    n = len(axes)
    if cmap.axis in axes:
        k = axes.index(cmap.axis)
        if pads[k] != 0 or pads[k + n] != 0:
            return barrier(t, node, f"Pad {node.name} pads channels")
    t.set(node.output[0], cmap.axis, cmap.ids)


# ---------------------------------------------------------------- broadcasting and coupling


def elementwise(t: Tracer, node: onnx.NodeProto) -> None:
    """Broadcasting ops (Add, Mul, Where, PRelu...): inputs that span the channel axis are coupled.

    Residual adds unify both branches; a squeeze-excite Mul unifies the gate with the features;
    constant per-channel tensors (a folded scale, a PRelu slope) become members to slice.
    """
    out = node.output[0]
    out_shape = t.shape(out)
    mapped = [(i, t.get(x)) for i, x in enumerate(node.input) if t.get(x)]
    if not mapped:
        return
    if out_shape is None or any(t.shape(x) is None for x in node.input if x):
        return barrier(t, node, f"{node.op_type} {node.name}: unknown shapes")
    rank = len(out_shape)
    axes = {cm.axis + rank - len(t.shape(node.input[i])) for i, cm in mapped}
    if len(axes) != 1:
        return barrier(t, node, f"{node.op_type} {node.name}: inputs carry channels on different axes")
    axis = axes.pop()
    ids = None
    consts = []
    for i, x in enumerate(node.input):
        if not x:
            continue
        shp = t.shape(x)
        ax = axis - (rank - len(shp))
        if ax < 0 or shp[ax] == 1:
            continue
        cm = t.get(x)
        if cm is not None:
            if ids is None:
                ids = cm.ids
            else:
                t.unify(ids, cm.ids)
        elif t.const(x) is not None:
            consts.append((i, ax))
        else:
            return barrier(t, node, f"{node.op_type} {node.name}: combined with a fixed-width tensor")
    if ids is None:
        return barrier(t, node, f"{node.op_type} {node.name}: channels broadcast from width 1")
    for i, ax in consts:
        t.member(node, "const", i, ax, ids)
    t.set(out, axis, ids)


def concat(t: Tracer, node: onnx.NodeProto) -> None:
    """Concat along channels lays inputs end to end; along another axis it couples them."""
    out_shape = t.shape(node.output[0])
    if out_shape is None or any(t.shape(x) is None for x in node.input):
        return barrier(t, node, f"Concat {node.name}: unknown shapes")
    axis = _axis(attr(node, "axis"), len(out_shape))
    maps = [t.get(x) for x in node.input]
    chan_axes = {m.axis for m in maps if m}
    if len(chan_axes) != 1:
        return barrier(t, node, f"Concat {node.name}: inputs carry channels on different axes")
    chan = chan_axes.pop()
    if chan == axis:
        parts = [
            m.ids if m else t.fixed(t.shape(x)[axis], f"Concat {node.name}: input {x} has fixed channels")
            for x, m in zip(node.input, maps)
        ]
        t.set(node.output[0], axis, np.concatenate(parts))
        return
    if any(m is None for m in maps):
        return barrier(t, node, f"Concat {node.name}: joined with fixed-width tensors")
    for m in maps[1:]:
        t.unify(maps[0].ids, m.ids)
    t.set(node.output[0], chan, maps[0].ids)


def split(t: Tracer, node: onnx.NodeProto) -> None:
    """Split along channels: each output takes its slice; the split sizes are rewritten."""
    cmap = t.get(node.input[0])
    shape = t.shape(node.input[0])
    if cmap is None:
        return
    if shape is None:
        return barrier(t, node, f"Split {node.name}: unknown shape")
    axis = _axis(attr(node, "axis", 0), len(shape))
    if axis != cmap.axis:
        for o in node.output:
            t.set(o, cmap.axis, cmap.ids)
        return
    sizes = [t.shape(o)[axis] if t.shape(o) else None for o in node.output]
    if None in sizes or sum(sizes) != shape[axis]:
        return barrier(t, node, f"Split {node.name}: unknown split sizes")
    t.member(node, "split", -1, axis, cmap.ids, sizes=sizes)
    start = 0
    for o, s in zip(node.output, sizes):
        t.set(o, axis, cmap.ids[start : start + s])
        start += s


def slice_(t: Tracer, node: onnx.NodeProto) -> None:
    """Slice of the channel axis (constant bounds, step 1): offsets are rewritten."""
    cmap = t.get(node.input[0])
    shape = t.shape(node.input[0])
    if cmap is None:
        return
    vals = [t.const(node.input[i]) if len(node.input) > i and node.input[i] else None for i in range(1, 5)]
    starts, ends, axes, steps = vals
    if shape is None or starts is None or ends is None or (len(node.input) > 3 and node.input[3] and axes is None):
        return barrier(t, node, f"Slice {node.name}: bounds not constant")
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else [_axis(int(a), rank) for a in axes]
    if cmap.axis not in axes:
        t.set(node.output[0], cmap.axis, cmap.ids)
        return
    k = axes.index(cmap.axis)
    if (len(node.input) > 4 and node.input[4] and steps is None) or (steps is not None and steps[k] != 1):
        return barrier(t, node, f"Slice {node.name}: strided channel slice")
    start, end, _ = slice(int(starts[k]), int(ends[k])).indices(shape[cmap.axis])
    t.member(node, "slice", -1, cmap.axis, cmap.ids, start=start, end=end, k=k)
    t.set(node.output[0], cmap.axis, cmap.ids[start:end])


def reshape_like(t: Tracer, node: onnx.NodeProto) -> None:
    """Reshape/Flatten/Squeeze/Unsqueeze, from the static shapes alone.

    Each channel's element is painted over its block of the input tensor and the paint is
    reshaped; the output axis along which it varies becomes the channel axis (a flatten repeats
    each channel over its spatial block). When a channel axis splits in two (attention heads
    x head dim, a channel shuffle), the larger axis stays the channel axis and positions along the
    smaller one are unified (head dim pruned uniformly across heads when heads are fewer;
    shuffle partners pruned together), so every reshape stays rectangular.
    """
    cmap = t.get(node.input[0])
    if cmap is None:
        return
    in_shape, out_shape = t.shape(node.input[0]), t.shape(node.output[0])
    if in_shape is None or out_shape is None:
        return barrier(t, node, f"{node.op_type} {node.name}: unknown shapes")
    if np.prod(in_shape, dtype=np.int64) > MAX_PAINT:
        return barrier(t, node, f"{node.op_type} {node.name}: tensor too large to trace its channels")
    view = [1] * len(in_shape)
    view[cmap.axis] = len(cmap.ids)
    paint = np.broadcast_to(cmap.ids.reshape(view), in_shape).reshape(out_shape)
    varying = [a for a in range(len(out_shape)) if out_shape[a] > 1 and not (paint == paint.take([0], axis=a)).all()]
    if not varying:
        return barrier(t, node, f"{node.op_type} {node.name}: channel axis vanishes")
    axis = max(varying, key=lambda a: (out_shape[a], a))
    rows = np.moveaxis(paint, axis, 0).reshape(out_shape[axis], -1)
    for row in rows:
        uniq = np.unique(row)
        if len(uniq) > 1:
            t.unify(np.full(len(uniq) - 1, uniq[0]), uniq[1:])
    if node.op_type == "Reshape":
        how = _shape_source(t, node, axis, len(out_shape), rows[:, 0])
        if how is None:
            return barrier(t, node, f"Reshape {node.name}: target shape is not rewritable")
        if how["source"] != "follows":
            t.member(node, "reshape", -1, axis, rows[:, 0], **how)
    t.set(node.output[0], axis, rows[:, 0])


def _shape_source(t: Tracer, node: onnx.NodeProto, axis: int, rank: int, ids: np.ndarray) -> dict | None:
    """How a Reshape's target dim `axis` gets the pruned channel count.

    `follows`: the target already reads it from a pruned tensor (a 0 copy-dim, or `Shape(x)[d]`
    where x carries the same channels on axis d: PaddlePaddle's flatten before attention);
    `const`: a constant to rewrite; `concat`: one constant piece of a Concat to replace.
    None when none of these holds (a barrier).
    """
    value = t.const(node.input[1])
    if value is not None:
        if value.size != rank:
            return None
        if int(value[axis]) == 0:
            return {"source": "follows"} if _same_channels(t, node.input[0], axis, ids) else None
        return {"source": "const"}
    dim = _shape_dim(t, node.input[1], axis)
    if dim is not None and _same_channels(t, *dim, ids):
        return {"source": "follows"}
    prod = t.producer.get(node.input[1])
    if prod is None or prod.op_type != "Concat" or len(prod.input) != rank:
        return None
    if any(t.shape(p) != (1,) for p in prod.input):
        return None
    piece = t.const(prod.input[axis])
    if piece is not None and int(piece[0]) == 0:
        return None
    return {"source": "concat", "concat": prod.name}


def _same_channels(t: Tracer, name: str, axis: int, ids: np.ndarray) -> bool:
    """True when tensor `name` carries exactly the channels `ids` on `axis` (so its dim there is
    always the pruned count)."""
    cmap = t.get(name)
    return (
        cmap is not None
        and cmap.axis == axis
        and len(cmap.ids) == len(ids)
        and bool((t.uf.roots(cmap.ids) == t.uf.roots(ids)).all())
    )


def _shape_dim(t: Tracer, name: str, pos: int, depth: int = 0) -> tuple[str, int] | None:
    """(x, d) when element `pos` of the 1-D integer tensor `name` is `Shape(x)[d]`, following the
    Cast / Slice / Gather / Concat / Unsqueeze chains exporters build shape vectors with."""
    node = t.producer.get(name)
    if node is None or depth > 8:
        return None
    op, src = node.op_type, node.input[0]
    if op == "Shape":
        shape = t.shape(src)
        return None if shape is None else (src, _axis(int(attr(node, "start", 0)), len(shape)) + pos)
    if op in ("Cast", "Identity") or (op in ("Unsqueeze", "Squeeze") and pos == 0):
        return _shape_dim(t, src, pos, depth + 1)
    if op == "Concat":
        offset = 0
        for x in node.input:
            size = t.shape(x)
            if size is None or len(size) > 1:
                return None
            n = size[0] if size else 1
            if pos < offset + n:
                return _shape_dim(t, x, pos - offset, depth + 1)
            offset += n
        return None
    length = t.shape(src)
    if length is None or len(length) != 1:
        return None
    if op == "Gather":
        idx = t.const(node.input[1])
        if idx is None or pos >= idx.size:
            return None
        return _shape_dim(t, src, _axis(int(idx.reshape(-1)[pos]), length[0]), depth + 1)
    if op == "Slice":
        starts, ends = t.const(node.input[1]), t.const(node.input[2])
        steps = t.const(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones(1)
        if starts is None or ends is None or steps is None or int(steps[0]) != 1:
            return None
        start = slice(int(starts[0]), int(ends[0])).indices(length[0])[0]
        return _shape_dim(t, src, start + pos, depth + 1)
    return None


# ---------------------------------------------------------------- layers with weights


def conv(t: Tracer, node: onnx.NodeProto) -> None:
    """Conv: a sink of input channels (group 1) and a source of output channels.

    Grouped and depthwise convs tie input group i to output group i; they are pruned by whole
    groups (the `group` attribute is rewritten).
    """
    w = t.const(node.input[1])
    b = t.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    cmap = t.get(node.input[0])
    if w is None or (len(node.input) > 2 and node.input[2] and b is None):
        return barrier(t, node, f"Conv {node.name}: weights are not constant")
    if cmap is not None and cmap.axis != 1:
        t.block([node.input[0]], f"Conv {node.name}: channels not on axis 1")
        cmap = None
    group = int(attr(node, "group", 1))
    cout = w.shape[0]
    out = t.fresh(cout)
    if group == 1:
        if cmap is not None:
            t.member(node, "in", 1, 1, cmap.ids)
        t.member(node, "out", 1, 0, out)
    else:
        rows_out = out.reshape(group, -1)
        if cmap is None:
            t.uf.fix(out, f"Conv {node.name}: grouped conv on fixed channels")
        else:
            rows_in = cmap.ids.reshape(group, -1)
            for ri, ro in zip(rows_in, rows_out):
                t.unify(np.full(len(ri) + len(ro) - 1, ro[0]), np.concatenate([ri, ro[1:]]))
        for ro in rows_out:
            t.unify(np.full(len(ro) - 1, ro[0]), ro[1:])
        t.member(node, "dw", 1, 0, out)
        t.member(node, "conv_groups", -1, 0, out, group=group)
    if b is not None:
        t.member(node, "bias", 2, 0, out)
    t.set(node.output[0], 1, out)


def conv_transpose(t: Tracer, node: onnx.NodeProto) -> None:
    """ConvTranspose (weight Cin x Cout/group x k...): a sink of input channels and a source of
    output channels; grouped (e.g. depthwise bilinear upsampling) ties input group i to output
    group i and is pruned by whole groups, like a grouped Conv."""
    w = t.const(node.input[1])
    cmap = t.get(node.input[0])
    has_b = len(node.input) > 2 and bool(node.input[2])
    if w is None or (has_b and t.const(node.input[2]) is None):
        return barrier(t, node, f"ConvTranspose {node.name}: non-constant weights")
    if cmap is not None and cmap.axis != 1:
        t.block([node.input[0]], f"ConvTranspose {node.name}: channels not on axis 1")
        cmap = None
    group = int(attr(node, "group", 1))
    out = t.fresh(w.shape[1] * group)
    if group == 1:
        if cmap is not None:
            t.member(node, "in", 1, 0, cmap.ids)
        t.member(node, "out", 1, 1, out)
    elif cmap is None:
        return barrier(t, node, f"ConvTranspose {node.name}: grouped on fixed channels")
    else:
        for ri, ro in zip(cmap.ids.reshape(group, -1), out.reshape(group, -1)):
            t.unify(np.full(len(ri) + len(ro) - 1, ro[0]), np.concatenate([ri, ro[1:]]))
        t.member(node, "dw", 1, 0, cmap.ids)
        t.member(node, "conv_groups", -1, 0, cmap.ids, group=group)
    if has_b:
        t.member(node, "bias", 2, 0, out)
    t.set(node.output[0], 1, out)


def gemm(t: Tracer, node: onnx.NodeProto) -> None:
    w = t.const(node.input[1])
    cmap = t.get(node.input[0])
    trans_a, trans_b = int(attr(node, "transA", 0)), int(attr(node, "transB", 0))
    c = t.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if w is None or w.ndim != 2 or trans_a or (len(node.input) > 2 and node.input[2] and c is None):
        return barrier(t, node, f"Gemm {node.name}: transposed input or non-constant weights")
    if cmap is not None and cmap.axis != 1:
        t.block([node.input[0]], f"Gemm {node.name}: channels on the batch axis")
        cmap = None
    n = w.shape[0] if trans_b else w.shape[1]
    out = t.fresh(n)
    if cmap is not None:
        t.member(node, "in", 1, 1 if trans_b else 0, cmap.ids)
    t.member(node, "out", 1, 0 if trans_b else 1, out)
    if c is not None and c.ndim >= 1 and c.shape[-1] == n and n > 1:
        if c.ndim == 2 and c.shape[0] != 1:
            t.uf.fix(out, f"Gemm {node.name}: full bias matrix")
        t.member(node, "bias", 2, c.ndim - 1, out)
    t.set(node.output[0], 1, out)


def matmul(t: Tracer, node: onnx.NodeProto) -> None:
    """MatMul with a constant 2-D weight is a linear layer; between activations it couples axes."""
    w = t.const(node.input[1])
    a_map, b_map = t.get(node.input[0]), t.get(node.input[1])
    a_shape, b_shape, o_shape = t.shape(node.input[0]), t.shape(node.input[1]), t.shape(node.output[0])
    if t.const(node.input[0]) is not None or a_shape is None or b_shape is None or o_shape is None:
        return barrier(t, node, f"MatMul {node.name}: constant left operand or unknown shapes")
    ra, rb, ro = len(a_shape), len(b_shape), len(o_shape)
    if w is not None:
        if w.ndim != 2 or ra < 2:
            return barrier(t, node, f"MatMul {node.name}: batched constant weight")
        out = t.fresh(w.shape[1])
        if a_map is not None and a_map.axis == ra - 1:
            t.member(node, "in", 1, 0, a_map.ids)
        elif a_map is not None:
            t.block([node.input[0]], f"MatMul {node.name}: channels on a row axis")
        t.member(node, "out", 1, 1, out)
        t.set(node.output[0], ro - 1, out)
        return
    # activation x activation (attention scores, attention x values)
    if rb < 2 or ra < 2:
        return barrier(t, node, f"MatMul {node.name}: vector operand")
    proposals: list[tuple[int, np.ndarray]] = []
    if a_map is not None:
        if a_map.axis == ra - 1:
            if b_map is None or b_map.axis != rb - 2:
                return barrier(t, node, f"MatMul {node.name}: contracted channels meet fixed ones")
            t.unify(a_map.ids, b_map.ids)
        else:
            proposals.append((a_map.axis + ro - ra, a_map.ids))
    if b_map is not None and b_map.axis != rb - 2:
        if b_map.axis == rb - 1:
            proposals.append((ro - 1, b_map.ids))
        else:
            proposals.append((b_map.axis + ro - rb, b_map.ids))
    elif b_map is not None and (a_map is None or a_map.axis != ra - 1):
        return barrier(t, node, f"MatMul {node.name}: contracted channels meet fixed ones")
    if not proposals:
        return
    axes = {p[0] for p in proposals}
    if len(axes) != 1 or ((ro - 1) in axes and len(proposals) > 1):
        return barrier(t, node, f"MatMul {node.name}: channels on different output axes")
    axis = axes.pop()
    if len(proposals) == 2:
        t.unify(proposals[0][1], proposals[1][1])
    elif axis < ro - 2:
        # a batch axis: the operand without channels must broadcast there
        other = node.input[1] if a_map is not None and a_map.axis != ra - 1 else node.input[0]
        oshape = t.shape(other)
        k = axis - (ro - len(oshape))
        if k >= 0 and oshape[k] != 1:
            return barrier(t, node, f"MatMul {node.name}: batched with a fixed-width operand")
    t.set(node.output[0], axis, proposals[0][1])


def batchnorm(t: Tracer, node: onnx.NodeProto) -> None:
    cmap = t.get(node.input[0])
    if cmap is None:
        return
    params = [t.const(x) for x in node.input[1:5]]
    if cmap.axis != 1 or any(p is None for p in params):
        return barrier(t, node, f"BatchNormalization {node.name}: non-constant statistics")
    for slot, role in zip(range(1, 5), ("norm_scale", "norm_bias", "norm_mean", "norm_var")):
        t.member(node, role, slot, 0, cmap.ids)
    t.set(node.output[0], 1, cmap.ids)


def instancenorm(t: Tracer, node: onnx.NodeProto) -> None:
    cmap = t.get(node.input[0])
    if cmap is None:
        return
    if cmap.axis != 1 or t.const(node.input[1]) is None or t.const(node.input[2]) is None:
        return barrier(t, node, f"InstanceNormalization {node.name}: non-constant parameters")
    t.member(node, "norm_scale", 1, 0, cmap.ids)
    t.member(node, "norm_bias", 2, 0, cmap.ids)
    t.set(node.output[0], 1, cmap.ids)


def layernorm(t: Tracer, node: onnx.NodeProto) -> None:
    """LayerNorm statistics span its normalized axes: channels there are fixed (removing one
    would change the mean and variance of the others); channels on other axes pass."""
    cmap = t.get(node.input[0])
    shape = t.shape(node.input[0])
    if cmap is None:
        return
    if shape is None or cmap.axis >= _axis(attr(node, "axis", -1), len(shape)):
        return barrier(t, node, f"LayerNormalization {node.name} normalizes over channels")
    t.set(node.output[0], cmap.axis, cmap.ids)


def groupnorm(t: Tracer, node: onnx.NodeProto) -> None:
    """GroupNorm normalizes within channel groups, so whole groups are pruned."""
    cmap = t.get(node.input[0])
    if cmap is None:
        return
    groups = int(attr(node, "num_groups", 1))
    scale, bias = t.const(node.input[1]), t.const(node.input[2])
    c = len(cmap.ids)
    if cmap.axis != 1 or scale is None or bias is None or c % groups:
        return barrier(t, node, f"GroupNormalization {node.name}: non-constant parameters")
    rows = cmap.ids.reshape(groups, -1)
    for r in rows:
        t.unify(np.full(len(r) - 1, r[0]), r[1:])
    per = cmap.ids if scale.size == c else rows[:, 0]
    t.member(node, "norm_scale", 1, 0, per)
    t.member(node, "norm_bias", 2, 0, per)
    t.member(node, "gn_groups", -1, 0, rows[:, 0], groups=groups)
    t.set(node.output[0], 1, cmap.ids)


UNARY = (
    "Relu LeakyRelu Elu Selu Celu Gelu Sigmoid HardSigmoid HardSwish Swish Mish Tanh Softplus Softsign Erf "
    "Exp Log Sqrt Neg Abs Reciprocal Floor Ceil Round Sign Sin Cos Not IsNaN IsInf ThresholdedRelu Shrink "
    "Clip Cast CastLike Identity Dropout"
).split()
BINARY = "Add Sub Mul Div Pow Max Min Sum Mean Where PRelu Equal Greater Less GreaterOrEqual LessOrEqual And Or Xor Mod".split()

RULES: dict[str, Rule] = {
    **{op: passthrough for op in UNARY},
    **{op: elementwise for op in BINARY},
    **{op: spatial_pool for op in "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool Resize Upsample".split()},
    **{op: reduce for op in "ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSumExp ReduceSumSquare".split()},
    **{op: softmax for op in ("Softmax", "LogSoftmax", "Hardmax")},
    **{op: reshape_like for op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze")},
    **{op: ignore for op in ("Shape", "Size")},
    "Transpose": transpose,
    "Gather": gather,
    "Pad": pad,
    "Concat": concat,
    "Split": split,
    "Slice": slice_,
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "Gemm": gemm,
    "MatMul": matmul,
    "BatchNormalization": batchnorm,
    "InstanceNormalization": instancenorm,
    "LayerNormalization": layernorm,
    "GroupNormalization": groupnorm,
}
