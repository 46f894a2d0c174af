"""Build small ONNX graphs with onnx.helper: single kernels, blocks and whole reference networks.

The profiler measures models made here (fp32, or int8 QDQ in the layout onnxruntime and
OpenVINO turn into int8 kernels: activations through QuantizeLinear/DequantizeLinear pairs,
int8 per-channel weights through DequantizeLinear, int32 bias). The calibration code builds the
HW-NAS-Bench and classic architectures with the same builder, so a model's kernels always come
from the same fusion rules whatever its source.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_ACT_SCALE = 0.05  # activation scale of generated int8 models (values do not matter for timing)


class GraphBuilder:
    """Append-only ONNX graph with shape tracking; every method returns the output tensor name."""

    def __init__(self, shape: tuple[int, ...], *, int8: bool = False, seed: int = 0, name: str = "x"):
        self.int8 = int8
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {name: tuple(shape)}
        self.input = name
        self._n = 0
        self._dq: set[str] = set()
        self._w_scale: dict[str, np.ndarray] = {}  # weight DequantizeLinear output -> per-channel scale

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def _init(self, prefix: str, array: np.ndarray) -> str:
        name = self._name(prefix)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def _node(self, op: str, inputs: list[str], shape: tuple[int, ...], **attrs) -> str:
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.shapes[out] = tuple(shape)
        return out

    def _scalar_q(self) -> tuple[str, str]:
        return self._init("s", np.array(_ACT_SCALE, np.float32)), self._init("zp", np.array(0, np.int8))

    def qdq(self, x: str) -> str:
        """In int8 mode, pass an activation through QuantizeLinear -> DequantizeLinear."""
        if not self.int8 or x in self._dq:
            return x
        s, zp = self._scalar_q()
        q = self._node("QuantizeLinear", [x, s, zp], self.shapes[x])
        dq = self._node("DequantizeLinear", [q, s, zp], self.shapes[x])
        self._dq.add(dq)
        return dq

    def _weight(self, shape: tuple[int, ...]) -> str:
        fan_in = int(np.prod(shape[1:])) or 1
        w = (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        if not self.int8:
            return self._init("w", w)
        scale = np.maximum(np.abs(w).reshape(shape[0], -1).max(1), 1e-6) / 127.0
        q = np.clip(np.round(w / scale.reshape((-1,) + (1,) * (len(shape) - 1))), -127, 127).astype(np.int8)
        qn = self._init("wq", q)
        sn = self._init("ws", scale.astype(np.float32))
        self._w_scale[qn] = scale.astype(np.float32)
        zn = self._init("wz", np.zeros(shape[0], np.int8))
        dq = self._node("DequantizeLinear", [qn, sn, zn], shape, axis=0)
        self._w_scale[dq] = self._w_scale.pop(qn)
        return dq

    def _bias(self, n: int, w_name: str) -> str:
        if not self.int8:
            return self._init("b", (self.rng.standard_normal(n) * 0.01).astype(np.float32))
        # int32 bias at scale = input scale x weight scale: anything else and onnxruntime does not
        # select the QDQ group, running a float conv between Q/DQ nodes instead of QLinearConv
        q = self._init("bq", np.zeros(n, np.int32))
        s = self._init("bs", (_ACT_SCALE * self._w_scale[w_name]).astype(np.float32))
        return self._node("DequantizeLinear", [q, s], (n,), axis=0)

    def conv(self, x: str, c_out: int, k: int = 3, s: int = 1, g: int = 1, *, bias: bool = True, bn: bool = False,
             act: str | None = None, residual: str | None = None, pad: int | None = None) -> str:
        """Conv [+BN] [+residual Add] [+activation]; int8 mode quantizes input, weight and output."""
        n, c_in, h, w = self.shapes[x]
        p = (k - 1) // 2 if pad is None else pad
        shape = (n, c_out, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        wn = self._weight((c_out, c_in // g, k, k))
        ins = [self.qdq(x), wn] + ([self._bias(c_out, wn)] if bias else [])
        y = self._node("Conv", ins, shape, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, group=g)
        if bn:
            y = self.batchnorm(y)
        if self.int8:  # the layout onnxruntime's quantizer emits: each op in its own Q/DQ group
            y = self.qdq(y)
            return self.add(y, residual, act) if residual is not None else self._int8_act(y, act)
        if residual is not None:
            y = self._node("Add", [y, residual], shape)
        return self.act(y, act) if act else y

    def _int8_act(self, y: str, act: str | None) -> str:
        """Relu/Relu6 after an int8 op is folded into the output quantization range (as quantizers
        do); other activations stay separate quantized ops."""
        return y if act in (None, "Relu", "Relu6") else self.act(y, act)

    def batchnorm(self, x: str) -> str:
        c = self.shapes[x][1]
        ps = [self._init("bn", v.astype(np.float32)) for v in
              (1 + 0.1 * self.rng.standard_normal(c), 0.1 * self.rng.standard_normal(c),
               0.1 * self.rng.standard_normal(c), 1 + 0.1 * np.abs(self.rng.standard_normal(c)))]
        return self._node("BatchNormalization", [x, *ps], self.shapes[x])

    def act(self, x: str, kind: str) -> str:
        """Relu, Relu6 (Clip 0..6), Sigmoid, HardSigmoid, HardSwish, Swish (x*sigmoid(x)), Tanh."""
        shape = self.shapes[x]
        if kind == "Relu6":
            lo, hi = self._init("lo", np.array(0, np.float32)), self._init("hi", np.array(6, np.float32))
            y = self._node("Clip", [x, lo, hi], shape)
        elif kind == "Swish":
            y = self._node("Mul", [x, self._node("Sigmoid", [x], shape)], shape)
        else:
            y = self._node(kind, [x], shape)
        return self.qdq(y)

    def add(self, a: str, b: str, act: str | None = None) -> str:
        y = self._node("Add", [self.qdq(a), self.qdq(b)], self.shapes[a])
        if self.int8:
            return self._int8_act(self.qdq(y), act)
        return self.act(y, act) if act else y

    def mul(self, a: str, b: str) -> str:
        shape = tuple(max(p, q) for p, q in zip(self.shapes[a], self.shapes[b]))
        return self.qdq(self._node("Mul", [self.qdq(a), self.qdq(b)], shape))

    def pool(self, x: str, kind: str, k: int, s: int, pad: int = 0) -> str:
        n, c, h, w = self.shapes[x]
        shape = (n, c, (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1)
        attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [pad] * 4}
        if kind == "AveragePool":
            attrs["count_include_pad"] = 0
        return self.qdq(self._node(kind, [self.qdq(x)], shape, **attrs))

    def global_pool(self, x: str) -> str:
        n, c = self.shapes[x][:2]
        return self.qdq(self._node("GlobalAveragePool", [self.qdq(x)], (n, c, 1, 1)))

    def flatten(self, x: str) -> str:
        n = self.shapes[x][0]
        return self._node("Flatten", [x], (n, int(np.prod(self.shapes[x][1:]))), axis=1)

    def gemm(self, x: str, n_out: int, act: str | None = None) -> str:
        n, k = self.shapes[x]
        wn = self._weight((n_out, k))
        y = self._node("Gemm", [self.qdq(x), wn, self._bias(n_out, wn)], (n, n_out), transB=1)
        if self.int8:
            return self._int8_act(self.qdq(y), act)
        return self.act(y, act) if act else y

    def reshape(self, x: str, shape: tuple[int, ...]) -> str:
        return self._node("Reshape", [x, self._init("shape", np.array(shape, np.int64))], tuple(shape))

    def matmul(self, x: str, n_out: int, act: str | None = None) -> str:
        """(..., K) @ (K, n_out) as transformer and CRNN heads run it (float; int8 mode uses `gemm`)."""
        k = self.shapes[x][-1]
        w = self._init("w", (self.rng.standard_normal((k, n_out)) / np.sqrt(k)).astype(np.float32))
        y = self._node("MatMul", [x, w], (*self.shapes[x][:-1], n_out))
        return self.act(y, act) if act else y

    def concat(self, xs: list[str]) -> str:
        shape = list(self.shapes[xs[0]])
        shape[1] = sum(self.shapes[x][1] for x in xs)
        return self._node("Concat", [self.qdq(x) for x in xs], tuple(shape), axis=1)

    def resize(self, x: str, scale: int = 2) -> str:
        """Nearest-neighbour upsampling by an integer factor (detector necks: FPN / PAN)."""
        n, c, h, w = self.shapes[x]
        scales = self._init("scales", np.array([1, 1, scale, scale], np.float32))
        return self.qdq(self._node("Resize", [self.qdq(x), "", scales], (n, c, h * scale, w * scale), mode="nearest"))

    def softmax(self, x: str, axis: int = 1) -> str:
        return self._node("Softmax", [x], self.shapes[x], axis=axis)

    def transpose(self, x: str, perm: list[int]) -> str:
        return self._node("Transpose", [x], tuple(self.shapes[x][p] for p in perm), perm=perm)

    def channel_shuffle(self, x: str, groups: int) -> str:
        n, c, h, w = self.shapes[x]
        s1 = self._init("shape", np.array([n, groups, c // groups, h, w], np.int64))
        s2 = self._init("shape", np.array([n, c, h, w], np.int64))
        r = self._node("Reshape", [x, s1], (n, groups, c // groups, h, w))
        t = self._node("Transpose", [r], (n, c // groups, groups, h, w), perm=[0, 2, 1, 3, 4])
        return self._node("Reshape", [t, s2], (n, c, h, w))

    def build(self, outputs: list[str], *, opset: int = 17) -> onnx.ModelProto:
        inputs = [helper.make_tensor_value_info(self.input, TensorProto.FLOAT, list(self.shapes[self.input]))]
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(self.shapes[o])) for o in outputs]
        graph = helper.make_graph(self.nodes, "hwopt_latency", inputs, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hwopt.latency")
        model.ir_version = 8
        return model
