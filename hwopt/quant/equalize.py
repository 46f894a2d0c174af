"""Cross-layer equalization (Nagel et al., "Data-Free Quantization") for depthwise models.

Depthwise convolutions have channels whose weight ranges differ by orders of magnitude, so one
per-tensor (or even per-channel activation) grid wastes most levels. For consecutive convs A -> B
with only a ReLU between them (ReLU is positively homogeneous: relu(x/s) = relu(x)/s), scaling
A's output channel i by 1/s_i and B's matching input channel by s_i leaves the function
unchanged; s_i = sqrt(r1_i / r2_i) makes both ranges sqrt(r1_i * r2_i). Bias correction (the
other half of that paper) is `bias_correction` in `hwopt.quant.ptq`, with measured input means.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _group(node: onnx.NodeProto) -> int:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)


def has_depthwise(model: onnx.ModelProto) -> bool:
    inits = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Conv" and _group(n) > 1 and n.input[1] in inits and inits[n.input[1]].dims[1] == 1:
            return True
    return False


def equalizable_pairs(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(A, B) conv pairs joined directly or through one ReLU, where A's output has no other use.

    A may be grouped or depthwise (its output channel i is still W1[i]); B must be a plain or a
    depthwise conv, so that A's output channel i meets exactly B's input channel i."""
    inits = {t.name for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pairs = []
    for a in model.graph.node:
        if a.op_type != "Conv" or a.input[1] not in inits:
            continue
        t = a.output[0]
        users = consumers.get(t, [])
        if len(users) == 1 and users[0].op_type == "Relu" and t not in outputs:
            t = users[0].output[0]
            users = consumers.get(t, [])
        if t in outputs or len(users) != 1:
            continue
        b = users[0]
        if b.op_type == "Conv" and b.input[0] == t and b.input[1] in inits:
            pairs.append((a.name, b.name))
    return pairs


def equalize(model: onnx.ModelProto, *, sweeps: int = 3) -> tuple[onnx.ModelProto, int]:
    """Copy of `model` with every equalizable conv pair balanced; returns (model, pairs)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    pairs = equalizable_pairs(out)
    nodes = {n.name: n for n in out.graph.node}
    inits = {t.name: t for t in out.graph.initializer}
    arrays = {name: numpy_helper.to_array(t).astype(np.float64) for name, t in inits.items()}
    for _ in range(sweeps):
        for a_name, b_name in pairs:
            a, b = nodes[a_name], nodes[b_name]
            w1, w2 = arrays[a.input[1]], arrays[b.input[1]]
            depthwise = _group(b) == w2.shape[0] and w2.shape[1] == 1
            if (depthwise and w2.shape[0] != w1.shape[0]) or (not depthwise and (_group(b) != 1 or w2.shape[1] != w1.shape[0])):
                continue
            r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(axis=1)
            r2 = np.abs(w2.reshape(w2.shape[0], -1)).max(axis=1) if depthwise else np.abs(np.moveaxis(w2, 1, 0).reshape(w2.shape[1], -1)).max(axis=1)
            s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1)), 1.0)
            arrays[a.input[1]] = w1 / s.reshape(-1, *([1] * (w1.ndim - 1)))
            if len(a.input) > 2 and a.input[2]:
                arrays[a.input[2]] = arrays[a.input[2]] / s
            arrays[b.input[1]] = w2 * (s.reshape(-1, *([1] * (w2.ndim - 1))) if depthwise else s.reshape(1, -1, *([1] * (w2.ndim - 2))))
    for name, t in inits.items():
        t.CopyFrom(numpy_helper.from_array(arrays[name].astype(numpy_helper.to_array(t).dtype), name))
    return out, len(pairs)
