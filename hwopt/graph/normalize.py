"""Bring models from any exporter into one canonical form the other stages can rely on.

PyTorch and PaddlePaddle exports differ: weights sit in Constant nodes instead of initializers,
node names are empty or repeated, opsets range from 11 to 17. Stages work on the normalized form:
every constant tensor is an initializer, every node has a unique name, the opset is at least 13
(per-channel QuantizeLinear and axis-aware Split/Squeeze need it). The input is never modified.
"""

from __future__ import annotations

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
