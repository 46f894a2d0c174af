"""Shape propagation in plain Python for the ops CNN graphs are made of, so a cold `predict` skips
onnx shape inference.

A search prices thousands of candidate models, each new, and onnx's shape inference serializes
the whole model to C++ and back (with the checks around it, about half of a cold 5-6 ms predict
call on a 50-layer MobileNetV2). The kernel cut only needs each tensor's dims and element type,
which for convolutions, activations, pools, Gemm/MatMul, Reshape/Flatten/Concat and the small
integer shape arithmetic exporters write in front of a Reshape follow from a few lines each.
`propagate` answers only when it knows *every* node: any op outside its list, an attribute it
does not read, a data-dependent dim or a contradiction returns None, and the caller falls back
to onnx inference, so a model gets either these dims or onnx's, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

Dims = tuple[int, ...]
_FLOAT = TensorProto.FLOAT
_INT64 = TensorProto.INT64

#: one output, same dims and type as input 0
_SAME = frozenset({
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "Elu", "Softplus", "Erf", "Exp",
    "Sqrt", "Neg", "Abs", "Reciprocal", "Identity", "Softmax", "LogSoftmax", "Floor", "Ceil", "Round",
    "InstanceNormalization", "LRN", "Mish", "Gelu",
})
_BROADCAST = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu"})
_INT_ARITH: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": lambda a, b: a // b}


class Unknown(Exception):
    """A node this module does not price exactly: the caller uses onnx shape inference instead."""


class _State:
    """Dims, element types and (for small int64 tensors) values of every tensor seen so far."""

    def __init__(self) -> None:
        self.dims: dict[str, Dims] = {}
        self.types: dict[str, int] = {}
        self.values: dict[str, np.ndarray] = {}

    def get(self, name: str) -> Dims:
        if name not in self.dims:
            raise Unknown(name)
        return self.dims[name]

    def value(self, name: str) -> np.ndarray:
        if name not in self.values:
            raise Unknown(name)
        return self.values[name]

    def set(self, name: str, dims: Dims, elem_type: int, value: np.ndarray | None = None) -> None:
        dims = tuple(map(int, dims))
        if dims and min(dims) <= 0:
            raise Unknown(name)  # a zero or unresolved dim: leave it to onnx
        self.dims[name], self.types[name] = dims, elem_type
        if value is not None:
            self.values[name] = value


def propagate(graph: onnx.GraphProto, inputs: dict[str, Dims], initializers: dict[str, TensorProto]
              ) -> tuple[dict[str, Dims], dict[str, int]] | None:
    """Dims and element types of every node output (plus inputs and initializers), or None.

    `inputs` holds the concrete graph-input dims; `initializers` every constant tensor, Constant
    nodes included (their payload is read only for small int64 tensors: Reshape targets, axes)."""
    st = _State()
    for vi in graph.input:
        if vi.name in inputs:
            st.set(vi.name, inputs[vi.name], vi.type.tensor_type.elem_type)
    for name, t in initializers.items():
        st.dims[name], st.types[name] = tuple(int(d) for d in t.dims), t.data_type
        if t.data_type == _INT64 and int(np.prod(t.dims, dtype=np.int64)) <= 64:
            st.values[name] = numpy_helper.to_array(t).astype(np.int64)
    try:
        for node in graph.node:
            if node.op_type == "Constant" and node.output[0] in initializers:
                continue
            if node.domain not in ("", "ai.onnx"):
                return None
            _RULES.get(node.op_type, _unknown)(node, st, _attributes(node))
    except (Unknown, IndexError, ValueError, ZeroDivisionError):
        return None
    return st.dims, st.types


_A = onnx.AttributeProto
_READ = {_A.INT: lambda a: a.i, _A.INTS: lambda a: list(a.ints), _A.FLOAT: lambda a: a.f,
         _A.FLOATS: lambda a: list(a.floats), _A.STRING: lambda a: a.s}


def _attributes(node: onnx.NodeProto) -> dict:
    """The node's attributes by name (the few field types shape rules read; onnx's generic
    `get_attribute_value` was the largest single cost of a cold predict call)."""
    out = {}
    for a in node.attribute:
        if a.type not in _READ:
            raise Unknown(f"attribute {a.name}")
        out[a.name] = _READ[a.type](a)
    return out


def _unknown(node, st, attrs) -> None:
    raise Unknown(node.op_type)


def _same(node, st, attrs) -> None:
    if node.op_type in ("Softmax", "LogSoftmax", "Identity") or len(node.output) == 1 or not node.output[1]:
        st.set(node.output[0], st.get(node.input[0]), st.types[node.input[0]], st.values.get(node.input[0]))
    else:
        raise Unknown(node.op_type)


def _batchnorm(node, st, attrs) -> None:
    if attrs.get("training_mode") or any(node.output[1:]):
        raise Unknown("BatchNormalization in training mode")
    st.set(node.output[0], st.get(node.input[0]), st.types[node.input[0]])


def _broadcast_dims(a: Dims, b: Dims) -> Dims:
    out = []
    for x, y in zip((1,) * (len(b) - len(a)) + a, (1,) * (len(a) - len(b)) + b):
        if x != y and 1 not in (x, y):
            raise Unknown("broadcast")
        out.append(max(x, y))
    return tuple(out)


def _broadcast(node, st, attrs) -> None:
    dims = st.get(node.input[0])
    for i in node.input[1:]:
        dims = _broadcast_dims(dims, st.get(i))
    value = None
    if node.op_type in _INT_ARITH and all(i in st.values for i in node.input):
        value = _INT_ARITH[node.op_type](st.values[node.input[0]], st.values[node.input[1]])
    st.set(node.output[0], dims, st.types[node.input[0]], value)


def _cast(node, st, attrs) -> None:
    value = st.values.get(node.input[0]) if attrs["to"] == _INT64 else None
    st.set(node.output[0], st.get(node.input[0]), int(attrs["to"]), value)


def _quantize(node, st, attrs) -> None:
    if node.op_type == "QuantizeLinear":
        elem = st.types[node.input[2]] if len(node.input) > 2 and node.input[2] else TensorProto.UINT8
    else:
        elem = st.types[node.input[1]]  # the scale's type
    st.set(node.output[0], st.get(node.input[0]), elem)


def _spatial(node, st, attrs, kernel: Dims, x: Dims, ceil: bool) -> list[int]:
    n = len(kernel)
    if len(x) != n + 2:
        raise Unknown("rank")
    strides = list(attrs.get("strides") or [1] * n)
    dil = list(attrs.get("dilations") or [1] * n)
    pads = list(attrs.get("pads") or [0] * 2 * n)
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    out = []
    for i, size in enumerate(x[2:]):
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-size // strides[i]))
            continue
        if auto not in ("NOTSET", "VALID"):
            raise Unknown(auto)
        span = size + (pads[i] + pads[i + n] if auto == "NOTSET" else 0) - dil[i] * (kernel[i] - 1) - 1
        q = -(-span // strides[i]) if ceil else span // strides[i]
        if ceil and q * strides[i] >= size + pads[i]:  # onnx: the last window must start inside the input
            q -= 1
        out.append(q + 1)
    return out


def _conv(node, st, attrs) -> None:
    x, w = st.get(node.input[0]), st.get(node.input[1])
    kernel = tuple(attrs.get("kernel_shape") or w[2:])
    if x[1] != w[1] * int(attrs.get("group", 1)):
        raise Unknown("channels")
    st.set(node.output[0], (x[0], w[0], *_spatial(node, st, attrs, kernel, x, False)), st.types[node.input[0]])


def _pool(node, st, attrs) -> None:
    if len(node.output) > 1 and node.output[1]:
        raise Unknown("MaxPool indices")
    x = st.get(node.input[0])
    dims = _spatial(node, st, attrs, tuple(attrs["kernel_shape"]), x, bool(attrs.get("ceil_mode", 0)))
    st.set(node.output[0], (*x[:2], *dims), st.types[node.input[0]])


def _global_pool(node, st, attrs) -> None:
    x = st.get(node.input[0])
    st.set(node.output[0], (*x[:2], *([1] * (len(x) - 2))), st.types[node.input[0]])


def _flatten(node, st, attrs) -> None:
    x = st.get(node.input[0])
    axis = int(attrs.get("axis", 1)) % (len(x) + 1) if x else 0
    st.set(node.output[0], (int(np.prod(x[:axis], dtype=np.int64)), int(np.prod(x[axis:], dtype=np.int64))),
           st.types[node.input[0]])


def _gemm(node, st, attrs) -> None:
    a, b = st.get(node.input[0]), st.get(node.input[1])
    if len(a) != 2 or len(b) != 2:
        raise Unknown("Gemm rank")
    m, k = (a[1], a[0]) if attrs.get("transA") else a
    k2, n = (b[1], b[0]) if attrs.get("transB") else b
    if k != k2:
        raise Unknown("Gemm K")
    st.set(node.output[0], (m, n), st.types[node.input[0]])


def _matmul(node, st, attrs) -> None:
    a, b = st.get(node.input[0]), st.get(node.input[1])
    if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
        raise Unknown("MatMul shapes")
    st.set(node.output[0], (*_broadcast_dims(a[:-2], b[:-2]), a[-2], b[-1]), st.types[node.input[0]])


def _reshape(node, st, attrs) -> None:
    x, target = st.get(node.input[0]), [int(v) for v in st.value(node.input[1]).reshape(-1)]
    if attrs.get("allowzero"):
        raise Unknown("allowzero")
    dims = [x[i] if v == 0 else v for i, v in enumerate(target)]
    if dims.count(-1) > 1:
        raise Unknown("two -1")
    total = int(np.prod(x, dtype=np.int64))
    if -1 in dims:
        rest = int(np.prod([d for d in dims if d != -1], dtype=np.int64))
        if rest <= 0 or total % rest:
            raise Unknown("-1")
        dims[dims.index(-1)] = total // rest
    if int(np.prod(dims, dtype=np.int64)) != total:
        raise Unknown("Reshape size")
    value = st.values[node.input[0]].reshape(dims) if node.input[0] in st.values else None
    st.set(node.output[0], tuple(dims), st.types[node.input[0]], value)


def _axes(node, st, attrs, index: int) -> list[int] | None:
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(node.input) > index and node.input[index]:
        return [int(a) for a in st.value(node.input[index]).reshape(-1)]
    return None


def _unsqueeze(node, st, attrs) -> None:
    x, axes = st.get(node.input[0]), _axes(node, st, attrs, 1)
    if not axes:
        raise Unknown("Unsqueeze axes")
    axes = sorted(a % (len(x) + len(axes)) for a in axes)
    dims = list(x)
    for a in axes:
        dims.insert(a, 1)
    value = st.values[node.input[0]].reshape(dims) if node.input[0] in st.values else None
    st.set(node.output[0], tuple(dims), st.types[node.input[0]], value)


def _squeeze(node, st, attrs) -> None:
    x = st.get(node.input[0])
    axes = _axes(node, st, attrs, 1)
    drop = {a % len(x) for a in axes} if axes is not None else {i for i, d in enumerate(x) if d == 1}
    if any(x[a] != 1 for a in drop):
        raise Unknown("Squeeze of a non-1 dim")
    dims = tuple(d for i, d in enumerate(x) if i not in drop)
    value = st.values[node.input[0]].reshape(dims) if node.input[0] in st.values else None
    st.set(node.output[0], dims, st.types[node.input[0]], value)


def _concat(node, st, attrs) -> None:
    parts = [st.get(i) for i in node.input]
    axis = int(attrs["axis"]) % len(parts[0])
    if any(len(p) != len(parts[0]) or p[:axis] + p[axis + 1:] != parts[0][:axis] + parts[0][axis + 1:] for p in parts):
        raise Unknown("Concat shapes")
    dims = (*parts[0][:axis], sum(p[axis] for p in parts), *parts[0][axis + 1:])
    value = None
    if all(i in st.values for i in node.input):
        value = np.concatenate([st.values[i] for i in node.input], axis=axis)
    st.set(node.output[0], dims, st.types[node.input[0]], value)


def _transpose(node, st, attrs) -> None:
    x = st.get(node.input[0])
    perm = list(attrs.get("perm") or reversed(range(len(x))))
    st.set(node.output[0], tuple(x[p] for p in perm), st.types[node.input[0]])


def _shape(node, st, attrs) -> None:
    x = st.get(node.input[0])
    if "start" in attrs or "end" in attrs:
        raise Unknown("Shape start/end")
    st.set(node.output[0], (len(x),), _INT64, np.array(x, dtype=np.int64))


def _gather(node, st, attrs) -> None:
    data, idx = st.value(node.input[0]), st.value(node.input[1])
    if data.ndim != 1 or int(attrs.get("axis", 0)) != 0:
        raise Unknown("Gather beyond 1-D shape values")
    out = np.asarray(data[idx])
    st.set(node.output[0], out.shape, _INT64, out)


def _reduce(node, st, attrs) -> None:
    x = st.get(node.input[0])
    axes = _axes(node, st, attrs, 1)
    if axes is None:
        if attrs.get("noop_with_empty_axes"):
            raise Unknown("noop reduce")
        axes = list(range(len(x)))
    axes = {a % len(x) for a in axes}
    keep = int(attrs.get("keepdims", 1))
    dims = tuple(1 if i in axes else d for i, d in enumerate(x)) if keep else tuple(
        d for i, d in enumerate(x) if i not in axes)
    st.set(node.output[0], dims, st.types[node.input[0]])


_RULES: dict[str, Callable] = {
    **{op: _same for op in _SAME}, **{op: _broadcast for op in _BROADCAST},
    "BatchNormalization": _batchnorm, "Dropout": _same, "Cast": _cast,
    "QuantizeLinear": _quantize, "DequantizeLinear": _quantize,
    "Conv": _conv, "MaxPool": _pool, "AveragePool": _pool,
    "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool,
    "Flatten": _flatten, "Gemm": _gemm, "MatMul": _matmul, "Reshape": _reshape,
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Concat": _concat, "Transpose": _transpose,
    "Shape": _shape, "Gather": _gather,
    "ReduceMean": _reduce, "ReduceMax": _reduce, "ReduceSum": _reduce,
}
