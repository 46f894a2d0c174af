"""Bring models from any exporter into one canonical form the other stages can rely on.

PyTorch and PaddlePaddle exports differ: weights sit in Constant nodes instead of initializers,
node names are empty or repeated, opsets range from 11 to 17. Stages work on the normalized form:
every constant tensor is an initializer, every node has a unique name, the opset is at least 13
(per-channel QuantizeLinear and axis-aware Split/Squeeze need it). The input is never modified.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from hwopt.errors import HwoptError

MIN_OPSET = 13


def opset_of(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn top-level Constant nodes into initializers (in place on the given copy)."""
    graph = model.graph
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
            attr = node.attribute[0]
            tensor = None
            if attr.name == "value":
                tensor = onnx.TensorProto()
                tensor.CopyFrom(attr.t)
            elif attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
                tensor = numpy_helper.from_array(
                    numpy_helper.to_array(helper.make_tensor("c", _ATTR_DTYPE[attr.name], *_attr_payload(attr)))
                )
            if tensor is not None:
                tensor.name = node.output[0]
                graph.initializer.append(tensor)
                continue
        keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)
    return model


_ATTR_DTYPE = {
    "value_float": onnx.TensorProto.FLOAT,
    "value_floats": onnx.TensorProto.FLOAT,
    "value_int": onnx.TensorProto.INT64,
    "value_ints": onnx.TensorProto.INT64,
}


def _attr_payload(attr: onnx.AttributeProto) -> tuple[list[int], list]:
    if attr.name == "value_float":
        return [], [attr.f]
    if attr.name == "value_int":
        return [], [attr.i]
    if attr.name == "value_floats":
        return [len(attr.floats)], list(attr.floats)
    return [len(attr.ints)], list(attr.ints)


def unique_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique, non-empty name (kept where already unique)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)
    return model


def drop_initializers_from_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Old exporters list weights as graph inputs too; runtimes then treat them as overridable."""
    inits = {t.name for t in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    if len(keep) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return model


def upgrade_opset(model: onnx.ModelProto, minimum: int = MIN_OPSET) -> onnx.ModelProto:
    """Convert to at least `minimum` with onnx's version converter; clear error when it cannot."""
    current = opset_of(model)
    if current >= minimum:
        return model
    try:
        return version_converter.convert_version(model, minimum)
    except Exception as exc:  # the converter raises bare RuntimeError/ValueError subclasses
        raise HwoptError(f"cannot upgrade opset {current} to {minimum}: {str(exc).splitlines()[0]}") from exc


def normalize_model(model: onnx.ModelProto, *, min_opset: int = MIN_OPSET) -> onnx.ModelProto:
    """Return a normalized copy: initializers for constants, unique names, opset >= min_opset."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    drop_initializers_from_inputs(out)
    out = upgrade_opset(out, min_opset)
    constants_to_initializers(out)
    unique_node_names(out)
    return out


def _single_consumer(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """{tensor: its only consumer} for tensors read by exactly one node and not a graph output."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in dict.fromkeys(n.input):
            users.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}
    return {t: ns[0] for t, ns in users.items() if len(ns) == 1 and t not in outputs}


def fold_conv_affine(model: onnx.ModelProto) -> int:
    """Fold BatchNormalization and constant per-channel Adds that follow a Conv into its weights
    and bias (in place on the given copy); returns how many nodes were folded.

    PaddlePaddle exports keep BatchNormalization separate and add conv biases with a separate
    Add. Float runtimes fold these themselves, but once a quantizer puts Q/DQ on the Conv's
    output they no longer can: the affine op then runs on its own in float between the integer
    kernels (35 such BatchNormalizations in PP-OCR's classifier made its int8 model slower than
    fp32). Folding first is exact up to float rounding. Shared weights are copied, not edited."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    weight_uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            weight_uses[i] = weight_uses.get(i, 0) + 1
    folded = 0
    changed = True
    while changed:
        changed = False
        only = _single_consumer(model)
        for conv in g.node:
            if conv.op_type != "Conv" or len(conv.input) < 2 or conv.input[1] not in inits:
                continue
            nxt = only.get(conv.output[0])
            wdims = tuple(inits[conv.input[1]].dims)
            scale_shift = _affine_of(nxt, conv.output[0], inits, wdims[0], len(wdims))
            if scale_shift is None:
                continue
            scale, shift = scale_shift
            w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
            has_bias = len(conv.input) > 2 and conv.input[2] in inits
            b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_bias else np.zeros(w.shape[0])
            w_name = _own_tensor(model, inits, weight_uses, conv, 1, f"{conv.name}_folded_w")
            inits[w_name].CopyFrom(numpy_helper.from_array((w * scale.reshape(-1, *[1] * (w.ndim - 1))).astype(np.float32), w_name))
            bias = (b * scale + shift).astype(np.float32)
            if has_bias:
                b_name = _own_tensor(model, inits, weight_uses, conv, 2, f"{conv.name}_folded_b")
                inits[b_name].CopyFrom(numpy_helper.from_array(bias, b_name))
            else:
                b_name = f"{conv.name}_folded_b"
                g.initializer.append(numpy_helper.from_array(bias, b_name))
                inits[b_name] = g.initializer[-1]
                while len(conv.input) < 3:
                    conv.input.append("")
                conv.input[2] = b_name
            conv.output[0] = nxt.output[0]
            g.node.remove(nxt)
            folded += 1
            changed = True
            break
    drop_unused_initializers(model)
    return folded


def _affine_of(node: onnx.NodeProto | None, x: str, inits: dict, channels: int, rank: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift) per output channel if `node` computes scale * x + shift with constants
    (inference BatchNormalization, or Add of a per-channel or scalar constant that does not
    broadcast `x`, of rank `rank`, to a higher rank), else None."""
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "BatchNormalization" and len(node.output) == 1 and all(i in inits for i in node.input[1:5]):
        if any(a.name == "training_mode" and a.i for a in node.attribute):
            return None
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in node.input[1:5])
        if gamma.shape != (channels,):
            return None
        scale = gamma / np.sqrt(var + eps)
        return scale, beta - mean * scale
    if node.op_type == "Add" and len(node.input) == 2:
        const = node.input[1] if node.input[0] == x else node.input[0]
        if const not in inits or const == x:
            return None
        c = numpy_helper.to_array(inits[const]).astype(np.float64)
        if c.ndim > rank:
            return None
        per_channel = c.ndim >= 3 and c.shape[-3] == channels and c.size == channels  # [C,1,1] or [1,C,1,1]
        if not (per_channel or c.size == 1):
            return None
        return np.ones(channels), np.broadcast_to(c.reshape(-1), (channels,)).copy()
    return None


def _own_tensor(model: onnx.ModelProto, inits: dict, uses: dict[str, int], node: onnx.NodeProto, k: int, name: str) -> str:
    """Name of an initializer for `node.input[k]` that only `node` reads (copied when shared)."""
    src = node.input[k]
    if uses.get(src, 0) <= 1:
        return src
    copy = onnx.TensorProto()
    copy.CopyFrom(inits[src])
    copy.name = name
    model.graph.initializer.append(copy)
    inits[name] = model.graph.initializer[-1]
    uses[src] -= 1
    uses[name] = 1
    node.input[k] = name
    return name


def drop_unused_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove initializers no node or graph output reads (left behind by folding)."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return model
