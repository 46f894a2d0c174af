"""What a model is made of: ops, parameters, multiply-accumulates and bytes, per node and in total.

MACs count the multiply-accumulates of the matrix-like ops (Conv, ConvTranspose, Gemm, MatMul and
their quantized forms), the same convention as torch.utils.flop_counter (which reports 2 FLOPs per
MAC), plus the gate matrix products of recurrent layers (LSTM, GRU, RNN). Elementwise ops,
pooling and normalization are not counted as MACs, but their activation bytes are.

Counts are exact or absent, never guessed: where static shape inference leaves a matrix op's
shapes unknown, one onnxruntime inference tells them (`probe_shapes`); a node whose shapes are
still unknown after that counts 0 MACs and is listed in `Census.unresolved`. Weights held in
Constant nodes (PaddlePaddle exports) count as parameters like initializers do, and so do weights
inside control-flow subgraphs (silero-vad's whole network sits in the two branches of one If):
a control-flow node carries its subgraphs' parameters, but their MACs depend on the branch taken
or the trip count, so a control-flow node holding matrix ops is listed in `unresolved` instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import prod

import numpy as np
import onnx
from onnx import helper

from hwopt.graph.normalize import opset_of
from hwopt.graph.shapes import Shapes, infer_shapes, probe_shapes, resolve_input_shapes, value_dtypes, value_shapes

#: recurrent ops: (X, W, R) inputs, every step multiplies the input by W and the state by R
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"})
#: ops counted as matrix-like by `node_macs`
MATRIX_OPS = frozenset({"Conv", "QLinearConv", "ConvInteger", "ConvTranspose", "Gemm", "MatMul", "QLinearMatMul",
                        "MatMulInteger"}) | RECURRENT_OPS


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
    unresolved: list[str] = field(default_factory=list)  # matrix nodes whose shapes stayed unknown (0 MACs)

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


def node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """Multiply-accumulates of one node given concrete tensor shapes.

    0 for ops that are not matrix-like; None when the node is one but a shape it needs is unknown.
    """
    op = node.op_type
    get = lambda i: shapes.get(node.input[i]) if len(node.input) > i and node.input[i] else None  # noqa: E731
    out = shapes.get(node.output[0]) if node.output else None
    if op in ("Conv", "QLinearConv", "ConvInteger"):
        w = get(3 if op == "QLinearConv" else 1)
        if w is None or out is None:
            return None
        # out elements x (Cin/group x kernel) MACs each; w is (Cout, Cin/group, *k)
        return prod(out) * prod(w[1:])
    if op == "ConvTranspose":
        x, w = get(0), get(1)
        if x is None or w is None:
            return None
        # every input element is multiplied into (Cout/group x kernel) outputs; w is (Cin, Cout/group, *k)
        return prod(x) * prod(w[1:])
    if op == "Gemm":
        a, b = get(0), get(1)
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            return None
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * k * n
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a, b = (get(0), get(3)) if op == "QLinearMatMul" else (get(0), get(1))
        if a is None or b is None or out is None:
            return None
        k = a[-1] if len(a) >= 1 else 1
        return prod(out) * k
    if op in RECURRENT_OPS:
        x, w, r = get(0), get(1), get(2)
        if x is None or w is None or r is None or len(x) != 3:
            return None
        # per time step and batch row: every gate's input (W) and recurrent (R) product, all directions;
        # W/R layouts differ (ONNX [D, G*H, I]; com.microsoft's [D, I, G*H]) but their sizes do not
        return x[0] * x[1] * (prod(w) + prod(r))
    return 0


def _mac_tensors(node: onnx.NodeProto) -> list[str]:
    """The tensors `node_macs` reads for a matrix-like node."""
    return [t for t in list(node.input[:4]) + list(node.output[:1]) if t]


def census(model: onnx.ModelProto, shapes: Shapes | None = None) -> Census:
    """Census of a model; `shapes` fixes dynamic input dims (dynamic batch defaults to 1)."""
    concrete = resolve_input_shapes(model, shapes)
    inferred = infer_shapes(model, concrete)
    vshapes = value_shapes(inferred)
    vtypes = value_dtypes(inferred)
    weights = _weight_tensors(model)
    macs = {i: node_macs(n, vshapes) for i, n in enumerate(inferred.graph.node)}
    unknown = [inferred.graph.node[i] for i, m in macs.items() if m is None]
    wanted = [t for n in unknown for t in _mac_tensors(n)] + [o.name for o in model.graph.output]
    wanted = [t for t in wanted if t not in vshapes]
    if wanted:  # static inference stopped short of some matrix ops or outputs: one real inference tells their shapes
        vshapes.update(probe_shapes(model, concrete, wanted))
        macs.update({i: node_macs(n, vshapes) for i, n in enumerate(inferred.graph.node) if macs[i] is None})

    def nbytes(name: str) -> int:
        shp = vshapes.get(name)
        if shp is None or name not in vtypes:
            return 0
        return prod(shp) * np.dtype(helper.tensor_dtype_to_np_dtype(vtypes[name])).itemsize

    ops: dict[str, int] = {}
    nodes: list[NodeCensus] = []
    for i, node in enumerate(inferred.graph.node):
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        nested = nested_nodes(node)
        inner = {t for n in nested for t in list(n.input) + list(n.output)}
        if any(n.op_type in MATRIX_OPS for n in nested):
            macs[i] = None  # control flow: the branch taken / trip count decides, so not counted
        nodes.append(
            NodeCensus(
                name=node.name,
                op=node.op_type,
                macs=macs[i] or 0,
                params=sum(prod(weights[t][0]) for t in dict.fromkeys([*node.input, *inner]) if t in weights),
                inputs=[vshapes.get(t) for t in node.input],
                outputs=[vshapes.get(o) for o in node.output],
                activation_bytes=sum(nbytes(o) for o in node.output),
            )
        )
    return Census(
        opset=opset_of(model),
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inputs={k: list(v) for k, v in concrete.items()},
        outputs={o.name: (list(vshapes[o.name]) if o.name in vshapes else None) for o in inferred.graph.output},
        ops=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        params=sum(prod(dims) for dims, _ in weights.values()),
        macs=sum(n.macs for n in nodes),
        weight_bytes=sum(prod(dims) * np.dtype(helper.tensor_dtype_to_np_dtype(dt)).itemsize for dims, dt in weights.values()),
        activation_bytes=sum(n.activation_bytes for n in nodes if n.op != "Constant"),
        nodes=nodes,
        unresolved=[inferred.graph.node[i].name or f"#{i} {inferred.graph.node[i].op_type}" for i, m in macs.items() if m is None],
    )


def _weight_tensors(model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...], int]]:
    """{name: (dims, ONNX dtype)} of the learnable-looking tensors, in initializers or Constant nodes,
    of the main graph and of every control-flow subgraph.

    Scales and zero points of Q/DQ nodes are quantization metadata, not network parameters."""
    return _graph_weights(model.graph, _quant_params(model))


def _graph_weights(graph: onnx.GraphProto, qparams: set[str]) -> dict[str, tuple[tuple[int, ...], int]]:
    tensors = list(graph.initializer)
    for n in graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            tensors += [_named(a.t, n.output[0]) for a in n.attribute if a.name == "value"]
    out = {t.name: (tuple(int(d) for d in t.dims), t.data_type) for t in tensors if _is_weight(t) and t.name not in qparams}
    for n in graph.node:
        for sub in subgraphs(n):
            out.update(_graph_weights(sub, qparams))
    return out


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of a control-flow node (If branches, Loop/Scan bodies); [] for any other node."""
    out: list[onnx.GraphProto] = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def nested_nodes(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Every node inside `node`'s subgraphs, at any depth."""
    return [inner for sub in subgraphs(node) for n in sub.node for inner in (n, *nested_nodes(n))]


def _named(t: onnx.TensorProto, name: str) -> onnx.TensorProto:
    """A header-only stand-in (dims, dtype, name) for a Constant node's tensor: the payload is not needed."""
    return onnx.TensorProto(name=name, dims=list(t.dims), data_type=t.data_type)


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
        for top in model.graph.node
        for n in (top, *nested_nodes(top))
        if n.op_type in ("QuantizeLinear", "DequantizeLinear")
        for name in n.input[1:]
    }
