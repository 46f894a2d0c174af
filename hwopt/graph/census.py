"""What a model is made of: ops, parameters, multiply-accumulates and bytes, per node and in total.

MACs count the multiply-accumulates of the matrix-like ops (Conv, ConvTranspose, Gemm, MatMul and
their quantized forms), the same convention as torch.utils.flop_counter (which reports 2 FLOPs per
MAC). Elementwise ops, pooling and normalization are not counted as MACs, but their activation
bytes are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import prod

import numpy as np
import onnx
from onnx import helper

from hwopt.graph.normalize import opset_of
from hwopt.graph.shapes import Shapes, infer_shapes, resolve_input_shapes, value_dtypes, value_shapes


@dataclass
class NodeCensus:
    name: str
    op: str
    macs: int
    params: int
    inputs: list[tuple[int, ...] | None]
    outputs: list[tuple[int, ...] | None]
    activation_bytes: int


@dataclass
class Census:
    opset: int
    ir_version: int
    producer: str
    inputs: dict[str, list[int]]
    outputs: dict[str, list[int] | None]
    ops: dict[str, int]
    params: int
    macs: int
    weight_bytes: int
    activation_bytes: int
    nodes: list[NodeCensus] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)

    def to_dict(self, *, with_nodes: bool = False) -> dict:
        d = asdict(self)
        if not with_nodes:
            d.pop("nodes")
        return d


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    """Multiply-accumulates of one node given concrete tensor shapes (0 when not a matrix op)."""
    op = node.op_type
    get = lambda i: shapes.get(node.input[i]) if len(node.input) > i and node.input[i] else None  # noqa: E731
    out = shapes.get(node.output[0]) if node.output else None
    if op in ("Conv", "QLinearConv", "ConvInteger"):
        w = get(3 if op == "QLinearConv" else 1)
        if w is None or out is None:
            return 0
        # out elements x (Cin/group x kernel) MACs each; w is (Cout, Cin/group, *k)
        return prod(out) * prod(w[1:])
    if op == "ConvTranspose":
        x, w = get(0), get(1)
        if x is None or w is None:
            return 0
        # every input element is multiplied into (Cout/group x kernel) outputs; w is (Cin, Cout/group, *k)
        return prod(x) * prod(w[1:])
    if op == "Gemm":
        a, b = get(0), get(1)
        if a is None or b is None:
            return 0
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * k * n
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a, b = (get(0), get(3)) if op == "QLinearMatMul" else (get(0), get(1))
        if a is None or b is None or out is None:
            return 0
        k = a[-1] if len(a) >= 1 else 1
        return prod(out) * k
    return 0


def census(model: onnx.ModelProto, shapes: Shapes | None = None) -> Census:
    """Census of a model; `shapes` fixes dynamic input dims (dynamic batch defaults to 1)."""
    concrete = resolve_input_shapes(model, shapes)
    inferred = infer_shapes(model, concrete)
    vshapes = value_shapes(inferred)
    vtypes = value_dtypes(inferred)
    inits = {t.name: t for t in model.graph.initializer}

    def nbytes(name: str) -> int:
        shp = vshapes.get(name)
        if shp is None or name not in vtypes:
            return 0
        return prod(shp) * np.dtype(helper.tensor_dtype_to_np_dtype(vtypes[name])).itemsize

    qparams = _quant_params(model)
    ops: dict[str, int] = {}
    nodes: list[NodeCensus] = []
    for node in inferred.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        params = sum(prod(inits[i].dims) for i in node.input if i in inits and _is_weight(inits[i]) and i not in qparams)
        nodes.append(
            NodeCensus(
                name=node.name,
                op=node.op_type,
                macs=node_macs(node, vshapes),
                params=params,
                inputs=[vshapes.get(i) for i in node.input],
                outputs=[vshapes.get(o) for o in node.output],
                activation_bytes=sum(nbytes(o) for o in node.output),
            )
        )
    weights = [t for t in model.graph.initializer if _is_weight(t) and t.name not in qparams]
    return Census(
        opset=opset_of(model),
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inputs={k: list(v) for k, v in concrete.items()},
        outputs={o.name: (list(vshapes[o.name]) if o.name in vshapes else None) for o in inferred.graph.output},
        ops=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        params=sum(prod(t.dims) for t in weights),
        macs=sum(n.macs for n in nodes),
        weight_bytes=sum(prod(t.dims) * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize for t in weights),
        activation_bytes=sum(n.activation_bytes for n in nodes),
        nodes=nodes,
    )


def _is_weight(t: onnx.TensorProto) -> bool:
    """Learnable-looking tensors: floating point (or quantized int8 weights), not shape/index constants."""
    return t.data_type in (
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT4,
        onnx.TensorProto.UINT4,
    ) and prod(t.dims) > 1


def _quant_params(model: onnx.ModelProto) -> set[str]:
    """Scales and zero points of Q/DQ nodes: quantization metadata, not parameters of the network."""
    return {
        name
        for n in model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear")
        for name in n.input[1:]
    }
