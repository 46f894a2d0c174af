"""Kernel detection: which ONNX node patterns each runtime runs as one kernel (nn-Meter style).

Per-node latencies do not add up on a real runtime: the runtime folds BatchNorm into the conv,
runs the activation (and often a residual Add) in the conv's epilogue, and turns QDQ pairs into
int8 kernels. So a model is first cut into the kernels its runtime will actually run, and each
kernel is then looked up or predicted. The rules below are one table, readable per runtime;
they follow each runtime's documented graph optimizations (onnxruntime's Conv/Gemm activation
and NCHWc Conv+Add fusions, OpenVINO/oneDNN post-ops, TFLite/XNNPACK's fused activations,
TensorRT's conv/pointwise fusions).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field, fields

import onnx
from onnx import helper, numpy_helper

from hwopt.errors import HwoptError
from hwopt.graph.normalize import constants_to_initializers
from hwopt.graph.shapes import CONTROL_FLOW_OPS, Shapes, infer_shapes, resolve_input_shapes
from hwopt.latency.kernels import RNN_OPS, Kernel, numel
from hwopt.latency.ort_qdq import QdqPlacement
from hwopt.latency.quick_shapes import propagate

_BASIC_ACTS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid"})
_ALL_ACTS = _BASIC_ACTS | {"HardSwish", "Swish", "Gelu", "Elu", "PRelu", "Mish", "Softplus"}
_ELTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min"}) | _ALL_ACTS


@dataclass(frozen=True)
class FusionRule:
    """What one runtime fuses. Anchors start a kernel; what follows them may be absorbed."""

    anchors: frozenset[str]  # matrix ops that take post-ops
    fold_bn: bool  # BatchNorm after an anchor is folded into its weights
    residual_add: frozenset[str]  # dtypes ("fp32", "int8") for which Conv + residual Add is one kernel
    acts: frozenset[str]  # activations fused into an anchor
    residual_acts: frozenset[str]  # activations fused after a fused residual Add
    eltwise_acts: frozenset[str]  # activations fused into a standalone Add/Mul kernel
    eltwise_chains: bool  # consecutive elementwise ops run as one kernel


FUSION_RULES: dict[str, FusionRule] = {
    # ORT CPU: Conv/Gemm + activation (FusedConv/FusedGemm; 1.32's optimized graphs show HardSwish too),
    # NCHWc Conv + Add + Relu for float only (a Clip or HardSwish after the Add stays its own node);
    # QDQ int8 runs QLinearConv (+Relu folded into the quantized range), QLinearAdd separately.
    "onnxruntime": FusionRule(
        anchors=frozenset({"Conv", "Gemm", "MatMul"}), fold_bn=True, residual_add=frozenset({"fp32"}),
        acts=_BASIC_ACTS | {"HardSwish"}, residual_acts=frozenset({"Relu"}), eltwise_acts=frozenset(),
        eltwise_chains=False,
    ),
    # OpenVINO CPU (oneDNN post-ops): BN, residual Add (also with FakeQuantize) and any activation.
    "openvino": FusionRule(
        anchors=frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"}), fold_bn=True,
        residual_add=frozenset({"fp32", "int8"}), acts=_ALL_ACTS, residual_acts=_ALL_ACTS, eltwise_acts=_ALL_ACTS,
        eltwise_chains=True,
    ),
    # TFLite/XNNPACK: BN folded at conversion, only Relu/Relu6 fused; Add is its own op with a fused Relu.
    "litert": FusionRule(
        anchors=frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"}), fold_bn=True, residual_add=frozenset(),
        acts=frozenset({"Relu", "Clip"}), residual_acts=frozenset({"Relu", "Clip"}),
        eltwise_acts=frozenset({"Relu", "Clip"}), eltwise_chains=False,
    ),
    # TensorRT: conv + BN + residual add + any pointwise activation; pointwise chains fused.
    "tensorrt": FusionRule(
        anchors=frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"}), fold_bn=True,
        residual_add=frozenset({"fp32", "int8"}), acts=_ALL_ACTS, residual_acts=_ALL_ACTS, eltwise_acts=_ALL_ACTS,
        eltwise_chains=True,
    ),
}

#: ops that cost nothing at run time (views, shape arithmetic) or vanish into int8 kernels
_FREE = {"Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Constant", "Shape",
         "QuantizeLinear", "DequantizeLinear", "Size", "ConstantOfShape", "Range"}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
#: integer-arithmetic ops that run as int8 kernels: (anchor op they price as, activation index, weight index).
#: ConvInteger/MatMulInteger come from onnxruntime's dynamic quantization (with DynamicQuantizeLinear
#: before them, which stays a kernel of its own: it scans the activation for its range at run time).
_QLINEAR = {"QLinearConv": ("Conv", 0, 3), "QLinearMatMul": ("MatMul", 0, 3),
            "ConvInteger": ("Conv", 0, 1), "MatMulInteger": ("MatMul", 0, 1)}


def fusion_rule(runtime: str) -> FusionRule:
    if runtime not in FUSION_RULES:
        raise HwoptError(f"no fusion rules for runtime {runtime!r}; known: {', '.join(FUSION_RULES)}")
    return FUSION_RULES[runtime]


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose large initializers keep only their dims: shape inference needs no weights,
    and skipping them keeps prediction fast enough to call thousands of times in a search."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    g = light.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        if n > 64 and t.data_type != onnx.TensorProto.INT64:
            stub = g.initializer.add()
            stub.name, stub.data_type = t.name, t.data_type
            stub.dims.extend(t.dims)
            stub.raw_data = b""  # shape inference reads dims only; no payload to copy
        else:
            g.initializer.append(t)
    return light


def _constant_tensors(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializers and the Constant nodes `constants_to_initializers` would turn into them, by name
    (the protos themselves, not copies: only dims, types and small int64 payloads are read)."""
    out = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
            attr = node.attribute[0]
            if attr.name == "value":
                out[node.output[0]] = attr.t
            elif attr.name in _SCALAR_CONSTANTS:
                dtype, many = _SCALAR_CONSTANTS[attr.name]
                values = list(getattr(attr, many)) if many else [attr.f if dtype == onnx.TensorProto.FLOAT else attr.i]
                out[node.output[0]] = helper.make_tensor(node.output[0], dtype, [len(values)] if many else [], values)
    return out


_SCALAR_CONSTANTS = {"value_float": (onnx.TensorProto.FLOAT, None), "value_int": (onnx.TensorProto.INT64, None),
                     "value_floats": (onnx.TensorProto.FLOAT, "floats"), "value_ints": (onnx.TensorProto.INT64, "ints")}


def _agrees(model: onnx.ModelProto, dims: dict[str, tuple[int, ...]]) -> bool:
    """False if the exporter annotated a tensor with other concrete dims than propagation found
    (onnx inference would keep or reject those; the slow path then decides as before)."""
    for vi in (*model.graph.value_info, *model.graph.output):
        t = vi.type.tensor_type
        if vi.name in dims and t.HasField("shape"):
            ann = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            if len(ann) != len(dims[vi.name]) or any(a is not None and a > 0 and a != d
                                                     for a, d in zip(ann, dims[vi.name])):
                return False
    return True


class _Graph:
    """Nodes with Q/DQ pairs and free views resolved away, plus shapes and consumers."""

    def __init__(self, model: onnx.ModelProto, shapes: Shapes | None):
        concrete = resolve_input_shapes(model, shapes)
        constants = _constant_tensors(model)
        quick = propagate(model.graph, concrete, constants)
        self._info: dict[str, onnx.ValueInfoProto] = {}
        self._quick_types: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        if quick is not None and _agrees(model, quick[0]):
            # the CNN ops of a search's candidates: dims in plain Python, no onnx inference (see quick_shapes)
            self.shapes.update(quick[0])
            self._quick_types = quick[1]
            self._init_types = {name: (tuple(t.dims), t.data_type) for name, t in constants.items()}
            nodes = [n for n in model.graph.node if not (n.op_type == "Constant" and n.output[0] in constants)]
        else:
            model = _light_copy(model)
            if any(n.op_type == "Constant" for n in model.graph.node):
                constants_to_initializers(model)
            inferred = infer_shapes(model, concrete)
            # Shapes and types are read lazily, for the tensors kernels ask about: parsing every value_info
            # up front was a quarter of a predict call (the search makes thousands)
            graph = inferred.graph
            self._info = {vi.name: vi for vi in (*graph.input, *graph.value_info, *graph.output)}
            self._init_types = {t.name: (tuple(t.dims), t.data_type) for t in graph.initializer}
            nodes = list(model.graph.node)
        self.inits = set(self._init_types)
        self.alias: dict[str, str] = {}
        self.quantized: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.order: list[onnx.NodeProto] = []  # data nodes and Q/DQ nodes, in graph order
        for node in nodes:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                self.alias[node.output[0]] = self.resolve(node.input[0])
                self.quantized.add(self.resolve(node.input[0]))
                self.quantized.add(node.output[0])
                self.order.append(node)
            elif node.op_type in _FREE or not self._is_data(node):
                if node.input and node.output and node.op_type not in ("Shape", "Size", "Constant", "ConstantOfShape"):
                    self.alias[node.output[0]] = self.resolve(node.input[0])
            else:
                self.nodes.append(node)
                self.order.append(node)
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for i in node.input:
                if i:
                    self.consumers.setdefault(self.resolve(i), []).append(node)

    def _is_data(self, node: onnx.NodeProto) -> bool:
        """False for shape arithmetic (int64 outputs), which runtimes constant-fold or run for free."""
        if node.op_type in _QLINEAR:  # int32 accumulators, but real work
            return True
        t = self._dtype(node.output[0]) if node.output else None
        return t is None or t in _FLOAT_TYPES

    def _dtype(self, name: str) -> int | None:
        if name in self._init_types:
            return self._init_types[name][1]
        if name in self._quick_types:
            return self._quick_types[name]
        vi = self._info.get(name)
        return (vi.type.tensor_type.elem_type or None) if vi is not None else None

    def _known_shape(self, name: str) -> tuple[int, ...] | None:
        """Concrete dims of `name` or None; exporters write unresolved dims as -1 (paddle2onnx outputs,
        e.g. (-1, 2)) and those count as unknown. Kernels fill in what they work out (`shapes`)."""
        if name not in self.shapes:
            if name in self._init_types:
                self.shapes[name] = self._init_types[name][0]
            else:
                vi = self._info.get(name)
                t = vi.type.tensor_type if vi is not None else None
                # a symbolic dim (dim_param) reads as dim_value 0: unknown, like -1
                dims = tuple([d.dim_value for d in t.shape.dim]) if t is not None and t.HasField("shape") else None
                self.shapes[name] = dims if dims is not None and (not dims or min(dims) > 0) else None
        return self.shapes[name]

    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self._known_shape(name) or self._known_shape(self.resolve(name))

    def is_const(self, name: str) -> bool:
        return self.resolve(name) in self.inits

    def sole_consumer(self, tensor: str) -> list[onnx.NodeProto]:
        return self.consumers.get(self.resolve(tensor), [])


def _activation_at(g: _Graph, tensor: str, allowed: frozenset[str]) -> tuple[str, list[onnx.NodeProto], str] | None:
    """The activation applied to `tensor` if it is its only use: a plain op or x*sigmoid(x) diamonds."""
    users = g.sole_consumer(tensor)
    if len(users) == 1 and users[0].op_type in allowed and users[0].op_type != "PRelu":
        return users[0].op_type, users, users[0].output[0]
    if len(users) == 2:
        gate = next((u for u in users if u.op_type in ("Sigmoid", "HardSigmoid")), None)
        mul = next((u for u in users if u.op_type == "Mul"), None)
        if gate and mul and g.resolve(gate.output[0]) in {g.resolve(i) for i in mul.input}:
            name = "Swish" if gate.op_type == "Sigmoid" else "HardSwish"
            if name in allowed:
                return name, [gate, mul], mul.output[0]
    return None


def extract_kernels(model: onnx.ModelProto, runtime: str, shapes: Shapes | None = None, *,
                    placement: QdqPlacement | None = None) -> list[Kernel]:
    """Cut a model into the kernels `runtime` runs, in execution order.

    QDQ models give int8 kernels (a matrix op whose input and weight come through
    DequantizeLinear); Q/DQ nodes themselves are absorbed. Shape arithmetic and views are free.
    `placement` (what onnxruntime's optimizer left, see `ort_qdq`) overrides that per node: nodes
    it left as float ops are fp32 kernels and its remaining Q/DQ nodes are kernels of their own.
    """
    rule = fusion_rule(runtime)
    key = _structure_key(model, rule, shapes, placement)
    if key in _CUT_CACHE:
        _CUT_CACHE.move_to_end(key)
        return list(_CUT_CACHE[key])
    kernels = _cut(model, rule, shapes, placement)
    _CUT_CACHE[key] = tuple(kernels)
    if len(_CUT_CACHE) > 512:  # a search cuts thousands of variants; keep the newest
        _CUT_CACHE.popitem(last=False)
    return kernels


#: kernel cuts by model structure (see `_structure_key`): a model predicted again, or a candidate a
#: search revisits, skips shape inference and the cut (about half of a cold predict call)
_CUT_CACHE: OrderedDict[str, tuple[Kernel, ...]] = OrderedDict()


def clear_cut_cache() -> None:
    """Forget every cached cut (to time a cold call, or after changing FUSION_RULES in place)."""
    _CUT_CACHE.clear()


def _structure_key(model: onnx.ModelProto, rule: FusionRule, shapes: Shapes | None, placement: QdqPlacement | None) -> str:
    """A digest of everything the cut depends on and nothing it does not: nodes, graph inputs and
    outputs, initializer names, dims and types (not their values), opsets, input shapes, placement
    and the fusion rule.
    Hashing the weights would cost more than the cut itself on a 14 MB model."""
    h = hashlib.sha1(repr(rule).encode())
    g = model.graph
    for n in g.node:
        h.update(n.SerializeToString())
    for vi in (*g.input, *g.output):
        h.update(vi.SerializeToString())
    for t in g.initializer:
        h.update(f"{t.name}:{t.data_type}:{tuple(t.dims)}".encode())
    h.update(repr([(o.domain, o.version) for o in model.opset_import]).encode())
    h.update(repr(sorted((shapes or {}).items())).encode())
    if placement is not None:
        h.update(repr((sorted(placement.float_nodes), sorted(placement.qdq_nodes))).encode())
    return h.hexdigest()


def _cut(model: onnx.ModelProto, rule: FusionRule, shapes: Shapes | None, placement: QdqPlacement | None) -> list[Kernel]:
    g = _Graph(model, shapes)
    done: set[int] = set()
    kernels: list[Kernel] = []
    constants: dict[str, onnx.TensorProto] | None = None  # read once, only for a control-flow node
    for node in g.order:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            if placement is not None and node.name in placement.qdq_nodes:
                shape = g.shape(node.input[0]) or g.shape(node.output[0]) or ()
                kernels.append(Kernel(node.op_type, (shape,), shape, nodes=(node.name,)))
            continue
        if id(node) in done:
            continue
        if node.op_type in CONTROL_FLOW_OPS:
            constants = constants if constants is not None else _constant_tensors(model)
            kernels.extend(_body_kernels(g, model, node, rule, constants))
            continue
        if node.input and all(not i or g.is_const(i) for i in node.input):
            g.inits.update(node.output)  # constants only in: runtimes fold it at load (silero-vad's weight slices)
            continue
        covered = [node]
        op, x_idx, w_idx = _QLINEAR.get(node.op_type, (node.op_type, 0, 1))
        is_q = node.op_type in _QLINEAR or node.op_type == "DynamicQuantizeLSTM" or (
            bool(node.input) and g.resolve(node.input[0]) in g.quantized
            and not (placement is not None and node.name in placement.float_nodes)
        )
        dtype = "int8" if is_q else "fp32"
        out = node.output[0]
        fused: list[str] = []
        if (placement is not None and node.name in placement.float_nodes and op in rule.anchors
                and len(node.input) > w_idx and g.resolve(node.input[w_idx]) != node.input[w_idx]):
            # a float op left between Q/DQ nodes reads its weight from a DequantizeLinear run every
            # inference: nothing to pre-pack, so onnxruntime runs its plain (not NCHWc) kernel, 2-4x slower
            fused.append("DQweight")
        if op in rule.anchors:
            out = _absorb_anchor_followers(g, rule, node, dtype, covered, fused)
        elif op in _ELTWISE and op not in ("PRelu",):
            out = _absorb_eltwise_followers(g, rule, node, covered, fused)
        done.update(id(n) for n in covered)
        kernels.append(_make_kernel(g, node, op, x_idx, w_idx, dtype, fused, out, covered))
    return kernels


def _absorb_anchor_followers(g, rule, node, dtype, covered, fused) -> str:
    out = node.output[0]
    users = g.sole_consumer(out)
    if rule.fold_bn and len(users) == 1 and users[0].op_type == "BatchNormalization":
        covered.append(users[0])
        out = users[0].output[0]
        users = g.sole_consumer(out)
    if len(users) == 1 and users[0].op_type == "Add":
        other = [i for i in users[0].input if g.resolve(i) != g.resolve(out)]
        if other and g.is_const(other[0]):
            covered.append(users[0])  # bias: folded
            out = users[0].output[0]
        elif dtype in rule.residual_add and other:
            covered.append(users[0])
            fused.append("Add")
            out = users[0].output[0]
    while act := _activation_at(g, out, rule.residual_acts if "Add" in fused else rule.acts):
        fused.append(act[0])
        covered.extend(act[1])
        out = act[2]
        if not rule.eltwise_chains:  # only runtimes with pointwise-chain fusion take a second one
            break
    return out


def _absorb_eltwise_followers(g, rule, node, covered, fused) -> str:
    out = node.output[0]
    while True:
        act = _activation_at(g, out, rule.eltwise_acts)
        if act:
            fused.append(act[0])
            covered.extend(act[1])
            out = act[2]
            continue
        users = g.sole_consumer(out)
        if rule.eltwise_chains and len(users) == 1 and users[0].op_type in _ELTWISE:
            fused.append(users[0].op_type)
            covered.append(users[0])
            out = users[0].output[0]
            continue
        return out


def _make_kernel(g, node, op, x_idx, w_idx, dtype, fused, out, covered) -> Kernel:
    names = tuple(n.name or n.output[0] for n in covered)
    out_shape = g.shape(out) or g.shape(node.output[0]) or ()
    if op in RNN_OPS and len(node.input) > 2 and g.is_const(node.input[1]) and g.is_const(node.input[2]):
        return _rnn_kernel(g, node, op, dtype, names, out_shape)
    if op in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(node.input) > w_idx and g.is_const(node.input[w_idx]):
        x = g.shape(node.input[x_idx]) or ()
        w = g.shape(node.input[w_idx])
        if op in ("Conv", "ConvTranspose"):
            k = tuple(_attr(node, "kernel_shape", None) or (w[2:] if w else ()))
            strides = _attr(node, "strides", None) or [1]
            groups = int(_attr(node, "group", 1))
            out_shape = out_shape or _conv_out_shape(node, op, x, w, k, strides)
            kern = Kernel(op, (x,), out_shape, w, k, max(strides), groups, dtype, tuple(fused), names)
        else:
            if op == "Gemm" and _attr(node, "transB", 0) and w is not None:
                w = (w[1], w[0])  # store (K, N) whatever the layout, so equal layers share one key
            if w is not None and len(w) == 2 and x and x[-1] != w[0] and numel(x) % max(w[0], 1) == 0:
                x = (numel(x) // max(w[0], 1), w[0])  # an unresolved Reshape/Flatten in front: rows x K
            if not out_shape and w is not None and x:
                out_shape = (*x[:-1], w[-1])
            kern = Kernel(op, (x,), out_shape, w, None, 1, 1, dtype, tuple(fused), names)
    else:
        inputs = tuple(g.shape(i) or () for i in node.input if i and not g.is_const(i))
        known = next((s for s in inputs if s), ())
        if not out_shape and op not in ("MaxPool", "AveragePool", "Concat") and op not in _GPOOL_OUT:
            out_shape = known  # elementwise-shaped ops keep their input's shape
        elif not out_shape and op in _GPOOL_OUT and len(known) > 2:
            out_shape = (*known[:2], *([1] * (len(known) - 2)))
        inputs = tuple(s or out_shape for s in inputs)
        kernel = stride = None
        if op in ("MaxPool", "AveragePool"):
            kernel = tuple(_attr(node, "kernel_shape", ()))
            stride = max(_attr(node, "strides", None) or [1])
        if kernel is not None:
            kern = Kernel(op, inputs, out_shape, None, kernel, stride, 1, dtype, tuple(fused), names)
        else:
            kern = Kernel(op, inputs, out_shape, None, None, 1, 1, dtype, tuple(fused), names)
    if kern.output:  # what this kernel worked out is what the next one reads, if inference left it blank
        for name in (out, node.output[0]):
            if g.shape(name) is None:
                g.shapes[name] = kern.output
    return kern


_GPOOL_OUT = {"GlobalAveragePool", "GlobalMaxPool"}
_GATES = {"LSTM": 4, "DynamicQuantizeLSTM": 4, "GRU": 3, "RNN": 1}


def _rnn_kernel(g, node, op, dtype, names, out_shape) -> Kernel:
    """A recurrent layer as one kernel whose weight is (directions, gates x hidden, input + hidden):
    every time step multiplies the input and the previous hidden state by W and R."""
    x = g.shape(node.input[0]) or ()
    w = g.shape(node.input[1]) or ()
    hidden = int(_attr(node, "hidden_size", 0)) or (w[-1] // _GATES[op] if op == "DynamicQuantizeLSTM" and w else
                                                    (w[1] // _GATES[op] if len(w) > 1 else 0))
    dirs = w[0] if w else 1
    width = (x[-1] if x else 0) + hidden
    if not out_shape and len(x) == 3:
        out_shape = (x[0], dirs, x[1], hidden)
    return Kernel(op, (x,), out_shape, (dirs, _GATES[op] * hidden, width), None, 1, 1, dtype, (), names)


def _conv_out_shape(node, op, x, w, k, strides) -> tuple[int, ...]:
    """A conv's output shape from its input, weight and attributes, for when shape inference gave none."""
    if len(x) < 3 or not w or len(k) != len(x) - 2:
        return ()
    pads = list(_attr(node, "pads", None) or [0] * 2 * len(k))
    dil = list(_attr(node, "dilations", None) or [1] * len(k))
    strides = list(strides) + [strides[-1]] * (len(k) - len(strides))
    auto = _attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    dims = []
    for i, size in enumerate(x[2:]):
        if op == "ConvTranspose":
            dims.append((size - 1) * strides[i] + dil[i] * (k[i] - 1) + 1 - pads[i] - pads[i + len(k)])
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            dims.append(-(-size // strides[i]))
        else:
            dims.append((size + pads[i] + pads[i + len(k)] - dil[i] * (k[i] - 1) - 1) // strides[i] + 1)
    c_out = w[0] if op == "Conv" else w[1] * int(_attr(node, "group", 1))
    return (x[0], c_out, *dims) if all(d > 0 for d in dims) else ()


@dataclass(frozen=True)
class Scope:
    """One control-flow node a kernel sits in, and how that node runs the body holding it."""

    owner: str  # the If/Loop/Scan node
    op: str
    branch: str  # the graph attribute: then_branch, else_branch or body
    taken: bool  # an If whose condition is a constant: this branch is the one that runs
    repeat: int  # a Loop/Scan body's trip count (1 when unknown)
    bounded: bool  # the trip count is unknown: the body counted once is a lower bound


@dataclass(frozen=True)
class BodyKernel(Kernel):
    """A kernel inside an If/Loop/Scan body, outermost scope first. It is priced like any other
    kernel; `predict` then keeps only the branch that runs (or the dearer one, when the condition
    is only known at run time) and repeats a loop body by its trip count."""

    scope: tuple[Scope, ...] = field(default=(), compare=False)


def _body_kernels(g: _Graph, model: onnx.ModelProto, node: onnx.NodeProto, rule: FusionRule,
                  constants: dict[str, onnx.TensorProto]) -> list[Kernel]:
    """The kernels of a control-flow node's subgraphs, each cut as a model of its own whose inputs
    are the outer tensors it reads (with the outer graph's shapes)."""
    owner = node.name or node.output[0]
    cond = constants.get(g.resolve(node.input[0])) if node.op_type == "If" and node.input else None
    taken = None if cond is None else ("then_branch" if bool(numpy_helper.to_array(cond).any()) else "else_branch")
    repeat, bounded = _trip_count(g, node, constants)
    out: list[Kernel] = []
    for attr in node.attribute:
        if attr.type != onnx.AttributeProto.GRAPH or (taken is not None and attr.name != taken):
            continue
        scope = Scope(owner, node.op_type, attr.name, taken is not None, repeat, bounded)
        for k in _cut(_body_model(g, model, node, attr.g, constants), rule, None, None):
            out.append(BodyKernel(**{f.name: getattr(k, f.name) for f in fields(Kernel)},
                                  scope=(scope, *getattr(k, "scope", ()))))
    return out


def _trip_count(g: _Graph, node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> tuple[int, bool]:
    """How often a Loop/Scan runs its body, if the graph says so: (count, False), else (1, True)."""
    if node.op_type == "Loop" and node.input and node.input[0]:
        t = constants.get(g.resolve(node.input[0]))
        if t is not None:
            return max(int(numpy_helper.to_array(t).reshape(-1)[0]), 0), False
    if node.op_type == "Scan":
        n_scan = int(_attr(node, "num_scan_inputs", 0))
        axes = list(_attr(node, "scan_input_axes", None) or [0] * n_scan)
        first = node.input[len(node.input) - n_scan] if n_scan else None
        shape = g.shape(first) if first else None
        if shape and axes and len(shape) > axes[0]:
            return shape[axes[0]], False
    return 1, node.op_type != "If"


def _free_names(graph: onnx.GraphProto) -> list[str]:
    """Tensors a subgraph reads from its enclosing scopes (nested subgraphs included), in first-use order."""
    made = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    free: dict[str, None] = {}
    for n in graph.node:
        inner = [x for a in n.attribute if a.type == onnx.AttributeProto.GRAPH for x in _free_names(a.g)]
        for name in (*n.input, *inner):
            if name and name not in made:
                free[name] = None
        made.update(n.output)
    return list(free)


def _body_model(g: _Graph, model: onnx.ModelProto, node: onnx.NodeProto, body: onnx.GraphProto,
                constants: dict[str, onnx.TensorProto]) -> onnx.ModelProto:
    """A subgraph as a standalone model: outer constants become initializers, other outer tensors
    and the body's own inputs become graph inputs with the shapes the outer graph gives them."""
    sub = onnx.ModelProto()
    sub.ir_version = model.ir_version
    sub.opset_import.extend(model.opset_import)
    sg = sub.graph
    sg.name = body.name
    sg.node.extend(body.node)
    sg.output.extend(body.output)
    sg.initializer.extend(body.initializer)
    for name in _free_names(body):
        if g.resolve(name) in constants:
            t = sg.initializer.add()
            t.CopyFrom(constants[g.resolve(name)])
            t.name = name
        else:
            sg.input.append(helper.make_tensor_value_info(name, g._dtype(name) or onnx.TensorProto.FLOAT, g.shape(name)))
    for vi, shape in zip(body.input, _body_input_shapes(g, node, body)):
        typed = onnx.ValueInfoProto()
        typed.CopyFrom(vi)
        if shape is not None and not (vi.type.tensor_type.HasField("shape") and all(
                d.dim_value > 0 for d in vi.type.tensor_type.shape.dim)):
            typed = helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type or onnx.TensorProto.FLOAT, shape)
        sg.input.append(typed)
    return sub


def _body_input_shapes(g: _Graph, node: onnx.NodeProto, body: onnx.GraphProto) -> list[tuple[int, ...] | None]:
    """Shapes of a Loop/Scan body's inputs from the node's own inputs (an If body has none):
    Loop gets (iteration, condition, carried...), Scan (state..., one slice of each scanned input)."""
    if node.op_type == "Loop":
        return [(), (), *[g.shape(x) if x else None for x in node.input[2:]]]
    if node.op_type == "Scan":
        n_scan = int(_attr(node, "num_scan_inputs", 0))
        n_state = len(node.input) - n_scan
        axes = list(_attr(node, "scan_input_axes", None) or [0] * n_scan)
        shapes: list[tuple[int, ...] | None] = [g.shape(x) for x in node.input[:n_state]]
        for x, axis in zip(node.input[n_state:], axes):
            s = g.shape(x)
            shapes.append(None if s is None else tuple(d for i, d in enumerate(s) if i != axis % len(s)))
        return shapes
    return [None] * len(body.input)
