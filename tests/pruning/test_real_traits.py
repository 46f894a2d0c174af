"""Traits of real PaddlePaddle / PyTorch exports that broke pruning, rebuilt as small ONNX graphs.

Each model here reproduces what a real model in benchmarks/real_models.py does: weights and
scalars in Constant nodes at opset 11, Paddle-style tensor names, -1 written as a static dim in
value_info, conv biases added through `Reshape(bias)`, Clip-based hardswish, squeeze-excite gates
with HardSigmoid, a flatten whose target comes from `Shape`, a ConvTranspose + Resize FPN neck,
1-channel heads, already-quantized graphs, and a keras2onnx NHWC net whose conv features are
flattened channels-last into Dense layers (MTCNN). Plus the committed PP-OCR classifier itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.errors import HwoptError
from hwopt.graph.census import census
from hwopt.pruning import apply_pruning, build_groups, prepare_model, prune_model
from hwopt.pruning import rules

PPOCR_CLS = Path(__file__).resolve().parents[1] / "data" / "ppocr_cls.onnx"


class PaddleGraph:
    """Builds a graph the way paddle2onnx writes it: every constant a Constant node, names like
    `p2o.Conv.3` for nodes and `conv2d_3.tmp_0` for tensors."""

    def __init__(self, seed: int = 0):
        self.nodes: list[onnx.NodeProto] = []
        self.rng = np.random.default_rng(seed)
        self.count: dict[str, int] = {}

    def _name(self, op: str) -> str:
        k = self.count[op] = self.count.get(op, -1) + 1
        return f"p2o.{op}.{k}"

    def const(self, value, dtype=np.float32) -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self._name("Constant")
        self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(arr, name)))
        return name

    def op(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        name = self._name(op)
        out = out or f"{op.lower()}_{self.count[op]}.tmp_0"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 1, group: int = 1, bias: bool = False, stride: int = 1) -> str:
        w = self.const(self.rng.standard_normal((cout, cin // group, k, k)) * 0.3)
        y = self.op("Conv", [x, w], kernel_shape=[k, k], pads=[k // 2] * 4, group=group, strides=[stride, stride])
        if bias:  # paddle: Add(conv, Reshape(bias, [1, C, 1, 1]))
            b = self.op("Reshape", [self.const(self.rng.standard_normal(cout)), self.const([1, cout, 1, 1], np.int64)])
            y = self.op("Add", [y, b])
        return y

    def bn(self, x: str, c: int) -> str:
        p = [self.const(v) for v in (self.rng.random(c) + 0.5, self.rng.standard_normal(c) * 0.1,
                                     self.rng.standard_normal(c) * 0.1, self.rng.random(c) + 0.5)]
        return self.op("BatchNormalization", [x, *p], epsilon=1e-5)

    def hardswish(self, x: str) -> str:
        """x * clip(x + 3, 0, 6) / 6 with Constant scalars, as Paddle's opset-11 export."""
        clipped = self.op("Clip", [self.op("Add", [x, self.const(3.0)]), self.const(0.0), self.const(6.0)])
        return self.op("Div", [self.op("Mul", [x, clipped]), self.const(6.0)])

    def se(self, x: str, c: int) -> str:
        """GlobalAveragePool -> Conv+bias -> Relu -> Conv+bias -> HardSigmoid -> Mul."""
        s = self.op("GlobalAveragePool", [x])
        s = self.op("Relu", [self.conv(s, c, c // 2, bias=True)])
        s = self.op("HardSigmoid", [self.conv(s, c // 2, c, bias=True)], alpha=0.2, beta=0.5)
        return self.op("Mul", [x, s])

    def flatten_by_shape(self, x: str, rank_kept: int) -> str:
        """Reshape(x, Concat(Cast(Slice(Cast(Shape(x)))), Cast([-1]))): the target reads N and C
        from the tensor itself."""
        shape = self.op("Cast", [self.op("Shape", [x])], to=TensorProto.INT32)
        head = self.op("Slice", [shape, self.const([0], np.int64), self.const([rank_kept], np.int64), self.const([0], np.int64)])
        target = self.op("Concat", [self.op("Cast", [head], to=TensorProto.INT64),
                                    self.op("Cast", [self.const([-1], np.int32)], to=TensorProto.INT64)], axis=0)
        return self.op("Reshape", [x, target])

    def model(self, x_shape, outputs: dict[str, list], opset: int = 11, paddle_value_info: bool = True) -> onnx.ModelProto:
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
        outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()]
        graph = helper.make_graph(self.nodes, "paddle", inputs, outs)
        if paddle_value_info:  # paddle annotates intermediates with -1 as a static dim
            for n in self.nodes:
                if n.op_type in ("Conv", "BatchNormalization"):
                    graph.value_info.append(helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, [-1, -1, -1, -1]))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 7
        onnx.checker.check_model(model)
        return model


def mobilenetv3_paddle() -> onnx.ModelProto:
    """PP-OCR cls in miniature: conv-bn-hardswish, inverted residual with SE, flatten, MatMul head."""
    g = PaddleGraph()
    y = g.hardswish(g.bn(g.conv("x", 3, 16, 3, stride=2), 16))
    r = g.op("Relu", [g.bn(g.conv(y, 16, 32), 32)])
    r = g.op("Relu", [g.bn(g.conv(r, 32, 32, 3, group=32), 32)])
    r = g.bn(g.conv(g.se(r, 32), 32, 16), 16)
    y = g.op("Add", [y, r])
    y = g.hardswish(g.bn(g.conv(y, 16, 24), 24))
    p = g.op("Squeeze", [g.op("GlobalAveragePool", [y])], axes=[2, 3])
    logits = g.op("Add", [g.op("MatMul", [p, g.const(g.rng.standard_normal((24, 4)))]), g.const(np.zeros(4))])
    g.op("Softmax", [logits], out="save_infer_model/scale_0.tmp_1", axis=1)
    return g.model(["N", 3, "H", "W"], {"save_infer_model/scale_0.tmp_1": ["N", 4]})


def fpn_neck() -> onnx.ModelProto:
    """DB detector neck: strided convs, ConvTranspose (dense and depthwise), Resize, Concat,
    a 1-channel head with a Constant bias (the crash of ppocr_det)."""
    g = PaddleGraph(1)
    c1 = g.op("Relu", [g.conv("x", 3, 16, 3)])
    c2 = g.op("Relu", [g.conv(c1, 16, 24, 3, stride=2)])
    up = g.op("Resize", [c2, g.const([], np.float32), g.const([1.0, 1.0, 2.0, 2.0])], mode="nearest")
    lat = g.op("Add", [g.conv(up, 24, 16), g.conv(c1, 16, 16)])
    w_t = g.const(g.rng.standard_normal((16, 8, 2, 2)) * 0.3)
    deconv = g.op("ConvTranspose", [lat, w_t, g.const(np.zeros(8))], kernel_shape=[2, 2], strides=[2, 2])
    w_dw = g.const(g.rng.standard_normal((8, 1, 2, 2)) * 0.3)
    deconv = g.op("ConvTranspose", [deconv, w_dw], kernel_shape=[2, 2], strides=[2, 2], group=8)
    small = g.op("AveragePool", [deconv], kernel_shape=[4, 4], strides=[4, 4])
    cat = g.op("Concat", [small, g.op("Relu", [g.conv(c1, 16, 8)])], axis=1)
    head = g.op("Add", [g.conv(cat, 16, 1, 3), g.const(np.full((1, 1, 1, 1), 0.1))])
    g.op("Sigmoid", [head], out="sigmoid_0.tmp_0")
    return g.model([1, 3, "H", "W"], {"sigmoid_0.tmp_0": [1, 1, "H", "W"]})


def attention_flatten() -> onnx.ModelProto:
    """SVTR neck: conv features flattened by a Shape-computed target, transposed, linear layer."""
    g = PaddleGraph(2)
    f = g.op("Relu", [g.bn(g.conv("x", 3, 16, 3), 16)])
    t = g.op("Transpose", [g.flatten_by_shape(f, 2)], perm=[0, 2, 1])
    h = g.op("Add", [g.op("MatMul", [t, g.const(g.rng.standard_normal((16, 12)))]), g.const(np.zeros(12))])
    g.op("MatMul", [g.op("Relu", [h]), g.const(g.rng.standard_normal((12, 5)))], out="out")
    return g.model([1, 3, 8, "W"], {"out": [1, "T", 5]})


def keras_nhwc_dense() -> onnx.ModelProto:
    """MTCNN's output net as keras2onnx writes it: NHWC input transposed to NCHW, Conv + PRelu
    (per-channel slope [C,1,1]), MaxPool, transposed back to NHWC, Flatten (channels fastest),
    Dense as MatMul + Add, PRelu, then two Dense heads (3 outputs in the real model)."""
    g = PaddleGraph(3)
    f = g.op("Transpose", ["x"], perm=[0, 3, 1, 2])
    for cin, cout in ((3, 6), (6, 8)):
        f = g.op("PRelu", [g.conv(f, cin, cout, 3, bias=True), g.const(g.rng.random((cout, 1, 1)) * 0.2)])
        f = g.op("MaxPool", [f], kernel_shape=[2, 2], strides=[2, 2])
    flat = g.op("Flatten", [g.op("Transpose", [f], perm=[0, 2, 3, 1])], axis=1)
    h = g.op("Add", [g.op("MatMul", [flat, g.const(g.rng.standard_normal((2 * 2 * 8, 16)) * 0.3)]), g.const(g.rng.standard_normal(16))])
    h = g.op("PRelu", [h, g.const(g.rng.random(16) * 0.2)])
    g.op("Add", [g.op("MatMul", [h, g.const(g.rng.standard_normal((16, 4)))]), g.const(np.zeros(4))], out="box")
    g.op("MatMul", [h, g.const(g.rng.standard_normal((16, 2)))], out="score")
    return g.model(["N", 8, 8, 3], {"box": ["N", 4], "score": ["N", 2]}, opset=12, paddle_value_info=False)


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def zeroed_copy(model: onnx.ModelProto, groups, drops) -> onnx.ModelProto:
    """Prepared copy with the dropped channels of each group zeroed where they are produced
    (producer rows, biases, norm shift, per-channel constants), so removing them is exact."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = {n.name: n for n in out.graph.node}
    inits = {t.name: t for t in out.graph.initializer}
    for g in groups:
        if g.id not in drops:
            continue
        for mb in g.members:
            if mb.role not in ("out", "dw", "bias", "norm_scale", "norm_bias", "const"):
                continue
            name = nodes[mb.node].input[mb.slot]
            arr = numpy_helper.to_array(inits[name]).copy()
            if mb.role == "norm_bias":  # BN output = scale*(x-mean)/sqrt(var)+bias: zero it all
                arr[np.isin(mb.index, drops[g.id])] = 0
            else:
                index = [slice(None)] * arr.ndim
                index[mb.axis] = np.isin(mb.index, drops[g.id])
                arr[tuple(index)] = 0
            inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    return out


def assert_prunes_exactly(model: onnx.ModelProto, shapes: list[tuple[int, ...]], *, min_groups: int) -> list:
    """Zero a third of every prunable group's channels, prune them: same outputs at every shape."""
    prepared = prepare_model(model)
    groups = build_groups(prepared, {"x": shapes[0]}, prepared=True)
    prunable = [g for g in groups if g.prunable]
    assert len(prunable) >= min_groups, [(g.node_names(), g.reasons) for g in groups]
    rng = np.random.default_rng(0)
    drops = {g.id: rng.choice(g.free, size=max(1, len(g.free) // 3), replace=False) for g in prunable}
    zeroed = zeroed_copy(prepared, groups, drops)
    keep = {gid: np.setdiff1d(np.arange(next(g for g in groups if g.id == gid).channels), d) for gid, d in drops.items()}
    pruned = apply_pruning(zeroed, keep, groups, shapes={"x": shapes[0]})
    assert census(pruned, {"x": shapes[0]}).macs < census(zeroed, {"x": shapes[0]}).macs
    for shape in shapes:  # the dynamic dims of the original still work
        x = rng.standard_normal(shape).astype(np.float32)
        for a, b in zip(run(pruned, x), run(zeroed, x)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    return groups


def test_paddle_mobilenetv3_traits_prune_exactly():
    """Constant weights, opset 11, -1 value_info, Reshape'd biases, Clip hardswish, HardSigmoid SE,
    Squeeze before the MatMul head: every conv's channels are prunable, the result exact."""
    groups = assert_prunes_exactly(mobilenetv3_paddle(), [(1, 3, 16, 32), (2, 3, 24, 48)], min_groups=4)
    fixed = [g for g in groups if not g.prunable]
    assert [g.node_names()[0] for g in fixed] == ["p2o.MatMul.0"]  # only the logits (Softmax output)
    squeeze = next(g for g in groups for m in g.members if (m.node, m.role) == ("p2o.Conv.3", "out"))  # SE squeeze
    assert squeeze.prunable and any(m.node == "p2o.Add.1" and m.role == "const" for m in squeeze.members)


def test_fpn_neck_with_conv_transpose_and_resize_prunes_exactly():
    groups = assert_prunes_exactly(fpn_neck(), [(1, 3, 16, 16), (1, 3, 32, 24)], min_groups=4)
    roles = {(m.node.split(".")[1], m.role) for g in groups if g.prunable for m in g.members}
    assert {("ConvTranspose", "in"), ("ConvTranspose", "out"), ("ConvTranspose", "dw"), ("ConvTranspose", "conv_groups")} <= roles
    head = next(g for g in groups if g.channels == 1)
    assert not head.prunable  # the 1-channel head with a Constant bias: fixed, not a crash


def test_flatten_with_shape_computed_target_follows_pruned_channels():
    """The Reshape target reads C from Shape(x): nothing to rewrite, the channels stay prunable."""
    groups = assert_prunes_exactly(attention_flatten(), [(1, 3, 8, 16), (1, 3, 8, 40)], min_groups=2)
    conv_group = next(g for g in groups if "p2o.Conv.0" in g.node_names())
    assert conv_group.prunable and "p2o.MatMul.0" in conv_group.node_names()


def test_keras_nhwc_flatten_into_dense_prunes_exactly():
    """Channels flattened channels-last feed the Dense rows interleaved (h, w, c): the rows removed
    must follow that order, and the Dense units (PRelu slopes, biases) prune too."""
    groups = assert_prunes_exactly(keras_nhwc_dense(), [(1, 8, 8, 3), (3, 8, 8, 3)], min_groups=3)
    last_conv = next(g for g in groups for m in g.members if (m.node, m.role) == ("p2o.Conv.1", "out"))
    assert last_conv.prunable and "p2o.MatMul.0" in last_conv.node_names()


def test_a_failing_rule_is_a_barrier(monkeypatch):
    def broken(t, node):
        raise ValueError("unforeseen")

    monkeypatch.setitem(rules.RULES, "BatchNormalization", broken)
    groups = build_groups(attention_flatten(), {"x": (1, 3, 8, 16)})
    first = next(g for g in groups if "p2o.Conv.0" in g.node_names())
    assert not first.prunable and "rule failed (ValueError)" in first.reason()
    assert any(g.prunable for g in groups)  # the linear layer after the barrier still is


def test_already_quantized_model_is_refused_clearly():
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [1, 4, 4, 4])
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.uint8), "w")
    graph = helper.make_graph([helper.make_node("ConvInteger", ["x", "w"], ["y"])], "q", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(HwoptError, match=r"already quantized \(ConvInteger\)"):
        prune_model(model, 0.3)


@pytest.fixture(scope="module")
def ppocr_cls() -> onnx.ModelProto:
    return onnx.load(PPOCR_CLS)


def test_ppocr_cls_conv_channels_are_prunable(ppocr_cls):
    """Measured after the fix: 99.9% of PP-OCR cls conv output channels sit in prunable groups
    (before: 3 of 50 groups prunable, MACs 1.02x at ratio 0.3)."""
    groups = build_groups(ppocr_cls, {"x": (1, 3, 48, 192)})
    total = free = 0
    for g in groups:
        for mb in g.members:
            if mb.role in ("out", "dw"):
                total += len(mb.index)
                free += int((~g.fixed[mb.index]).sum())
    assert free / total > 0.9, (free, total)
    assert sum(g.prunable for g in groups) >= 20


def test_ppocr_cls_prunes_runs_and_keeps_dynamic_dims(ppocr_cls, tmp_path):
    shapes = {"x": (1, 3, 48, 192)}
    res = prune_model(ppocr_cls, 0.3, shapes=shapes)
    s = res.summary
    assert s["macs_before"] / s["macs_after"] > 1.4  # measured 1.52x
    assert s["groups_pruned"] >= 15
    x = np.random.default_rng(0).random((2, 3, 48, 320), dtype=np.float32)  # other batch and width
    assert run(res.model, x)[0].shape == run(ppocr_cls, x)[0].shape == (2, 2)
    same = prune_model(ppocr_cls, 0.0, shapes=shapes).model
    np.testing.assert_array_equal(run(same, x)[0], run(ppocr_cls, x)[0])


def test_ppocr_cls_obspa_with_calibration(ppocr_cls, tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).random((4, 3, 48, 192), dtype=np.float32))
    res = prune_model(ppocr_cls, 0.3, criterion="obs", calib=calib, shapes={"x": (1, 3, 48, 192)})
    assert res.summary["groups_pruned"] >= 15 and res.summary["calibrated"]
