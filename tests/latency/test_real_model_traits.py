"""Traits of real exported models that broke kernel detection or prediction (issue #5, real models).

Each test builds a small synthetic graph with one trait of the PaddlePaddle / PyTorch exports in
benchmarks/real_models.py (weights in Constant nodes, `-1` dims in declared outputs, a Reshape whose
target comes from Shape arithmetic, Paddle-style names, dynamic quantization ops, LSTMs), plus the
committed PP-OCR classifier itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.errors import HwoptError
from hwopt.graph.load import load_model
from hwopt.latency import Kernel, extract_kernels, predict_latency
from hwopt.latency.predictor import TreeEnsemble
from hwopt.latency.validate import _shapes_per_model

PPOCR_CLS = Path(__file__).resolve().parents[1] / "data" / "ppocr_cls.onnx"


def _const(name: str, array: np.ndarray) -> helper.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name + "_v"))


def paddle_like_head(opset: int = 11):
    """conv2d -> HardSigmoid SE gate -> Clip(Constant min/max) -> pool -> Reshape(Shape-built target)
    -> MatMul + bias -> Softmax, weights in Constant nodes, declared output dims (-1, 2)."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    nodes = [
        _const("conv2d_0.w_0", rng.standard_normal((16, 3, 3, 3)).astype(f32)),
        helper.make_node("Conv", ["x", "conv2d_0.w_0"], ["conv2d_12.tmp_0"], name="p2o.Conv.5",
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["conv2d_12.tmp_0"], ["pool2d_0.tmp_0"], name="p2o.GlobalAveragePool.0"),
        helper.make_node("HardSigmoid", ["pool2d_0.tmp_0"], ["hardsigmoid_0.tmp_0"], name="p2o.HardSigmoid.0",
                         alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["conv2d_12.tmp_0", "hardsigmoid_0.tmp_0"], ["tmp_1"], name="p2o.Mul.1"),
        _const("clip_min", np.array(0.0, f32)), _const("clip_max", np.array(6.0, f32)),
        helper.make_node("Clip", ["tmp_1", "clip_min", "clip_max"], ["tmp_2"], name="p2o.Clip.0"),
        helper.make_node("GlobalAveragePool", ["tmp_2"], ["pool2d_10.tmp_0"], name="p2o.GlobalAveragePool.1"),
        helper.make_node("Shape", ["pool2d_10.tmp_0"], ["shape_0.tmp_0"]),
        _const("starts", np.array([0], np.int64)), _const("ends", np.array([1], np.int64)),
        _const("axes", np.array([0], np.int64)),
        helper.make_node("Slice", ["shape_0.tmp_0", "starts", "ends", "axes"], ["shape_0.tmp_0_slice_0"]),
        _const("fill_constant_1.tmp_0", np.array([16], np.int32)),
        helper.make_node("Cast", ["fill_constant_1.tmp_0"], ["Cast@2"], to=TensorProto.INT64),
        helper.make_node("Concat", ["shape_0.tmp_0_slice_0", "Cast@2"], ["Concat@0"], axis=0),
        helper.make_node("Reshape", ["pool2d_10.tmp_0", "Concat@0"], ["reshape2_0.tmp_0"]),
        _const("fc_0.w_0", rng.standard_normal((16, 2)).astype(f32)),
        helper.make_node("MatMul", ["reshape2_0.tmp_0", "fc_0.w_0"], ["linear_1.tmp_0"], name="p2o.MatMul.0"),
        _const("fc_0.b_0", np.zeros(2, f32)),
        helper.make_node("Add", ["linear_1.tmp_0", "fc_0.b_0"], ["linear_1.tmp_1"], name="p2o.Add.3"),
        helper.make_node("Softmax", ["linear_1.tmp_1"], ["softmax_0.tmp_0"], name="p2o.Softmax.0", axis=1),
        helper.make_node("Identity", ["softmax_0.tmp_0"], ["save_infer_model/scale_0.tmp_1"]),
    ]
    graph = helper.make_graph(
        nodes, "paddle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, -1, -1])],
        [helper.make_tensor_value_info("save_infer_model/scale_0.tmp_1", TensorProto.FLOAT, [-1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def test_kernel_features_never_fail_on_unresolved_dims():
    k = Kernel("Softmax", ((-1, 2),), (-1, 2))
    assert k.bytes_moved == 0 and k.flops == 0 and k.macs == 0
    assert all(np.isfinite(k.features()))
    conv = Kernel("Conv", ((1, 16, -1, -1),), (1, 32, -1, -1), (32, 16, 3, 3), (3, 3), 1, 1)
    assert conv.bytes_moved >= 0 and all(np.isfinite(conv.features()))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino", "litert"])
def test_paddle_head_gets_concrete_kernels(runtime):
    ks = extract_kernels(paddle_like_head(), runtime, {"x": (1, 3, 32, 64)})
    by_op = {k.op: k for k in ks}
    mm = by_op["MatMul"]
    # the Reshape target was Shape arithmetic: the MatMul still reads (rows, K) and writes (rows, N)
    assert mm.inputs == ((1, 16),) and mm.output == (1, 2) and mm.weight == (16, 2)
    assert by_op["Softmax"].inputs == ((1, 2),) and by_op["Softmax"].output == (1, 2)
    assert by_op["Conv"].output == (1, 16, 16, 32)
    for k in ks:  # no unknown or negative shape left in any kernel
        assert all(d >= 0 for s in (*k.inputs, k.output) for d in s), k.key
        assert k.output, k.key


def test_paddle_head_predicts_on_every_target():
    for target in ("x86-avx512", "rpi4"):
        p = predict_latency(paddle_like_head(), target, shapes={"x": (1, 3, 32, 64)})
        assert p.latency_ms > 0 and all(layer.latency_ms >= 0 for layer in p.layers)


def test_missing_dynamic_dims_are_a_clear_error():
    with pytest.raises(HwoptError, match="dynamic input dims need concrete sizes"):
        predict_latency(paddle_like_head(), "x86-avx512", "onnxruntime")


def test_committed_ppocr_cls_predicts_with_concrete_kernels():
    model = load_model(PPOCR_CLS)
    ks = extract_kernels(model, "onnxruntime", {"x": (1, 3, 48, 192)})
    assert all(k.output and min(k.output) >= 0 for k in ks if k.op not in ("Mul", "Add") or k.output)
    head = [k for k in ks if k.op == "MatMul"]
    assert head and head[0].inputs[0][-1] == head[0].weight[0]  # (rows, K) x (K, N), not the 4-D pool output
    p = predict_latency(model, "x86-avx512", "onnxruntime", {"x": (1, 3, 48, 192)})
    assert 0.05 < p.latency_ms < 50


def _dynamic_int8_model():
    """onnxruntime dynamic quantization: DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul (scales)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.integers(-127, 127, (8, 4, 3, 3)).astype(np.int8), "w_q")
    wz = numpy_helper.from_array(np.array(0, np.int8), "w_zp")
    ws = numpy_helper.from_array(np.array(0.02, np.float32), "w_scale")
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["x_q", "x_scale", "x_zp"]),
        helper.make_node("ConvInteger", ["x_q", "w_q", "x_zp", "w_zp"], ["acc"], name="conv_int", pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["acc"], ["acc_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x_scale", "w_scale"], ["scale"]),
        helper.make_node("Mul", ["acc_f", "scale"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "dyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [w, wz, ws])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_dynamic_quantized_conv_is_an_int8_kernel():
    ks = extract_kernels(_dynamic_int8_model(), "onnxruntime")
    convs = [k for k in ks if k.op == "Conv"]
    assert len(convs) == 1 and convs[0].dtype == "int8" and convs[0].weight == (8, 4, 3, 3)
    assert convs[0].output == (1, 8, 16, 16)
    assert any(k.op == "DynamicQuantizeLinear" for k in ks)  # the run-time range scan is real work


def _lstm_model(seq: int = 10, hidden: int = 32, inp: int = 24):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W", (2, 4 * hidden, inp)), ("R", (2, 4 * hidden, hidden)), ("B", (2, 8 * hidden)))]
    node = helper.make_node("LSTM", ["seq", "W", "R", "B"], ["y"], name="lstm", hidden_size=hidden,
                            direction="bidirectional")
    graph = helper.make_graph([node], "rnn", [helper.make_tensor_value_info("seq", TensorProto.FLOAT, [seq, 1, inp])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [seq, 2, 1, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def test_lstm_is_priced_by_its_recurrent_work():
    (k,) = extract_kernels(_lstm_model(), "onnxruntime")
    assert k.weight == (2, 4 * 32, 24 + 32)
    assert k.macs == 10 * 1 * 2 * 4 * 32 * (24 + 32)  # steps x batch x directions x gates x hidden x (in + hidden)
    assert k.family == "gemm"
    small = predict_latency(_lstm_model(seq=10), "x86-avx512", "onnxruntime").latency_ms
    big = predict_latency(_lstm_model(seq=80), "x86-avx512", "onnxruntime").latency_ms
    assert big > 2 * small


def _after_conv_transpose(tail: str) -> onnx.ModelProto:
    """PP-OCR's DB head: a ConvTranspose upsample, then a standalone BatchNormalization (onnxruntime
    does not fold it into the transposed conv) or, for comparison, a per-channel Mul."""
    rng = np.random.default_rng(0)
    c = 24
    inits = [numpy_helper.from_array(rng.standard_normal((c, c, 2, 2)).astype(np.float32), "w")]
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["up"], name="up", strides=[2, 2], kernel_shape=[2, 2])]
    if tail == "bn":
        for n, v in (("g", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0)):
            inits.append(numpy_helper.from_array(np.full(c, v, np.float32), n))
        nodes.append(helper.make_node("BatchNormalization", ["up", "g", "b", "m", "v"], ["y"], name="bn"))
    else:
        inits.append(numpy_helper.from_array(np.ones((1, c, 1, 1), np.float32), "s"))
        nodes.append(helper.make_node("Mul", ["up", "s"], ["y"], name="mul"))
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 80, 80])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 160, 160])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_standalone_batchnorm_is_priced_like_a_per_channel_scale():
    """The trees learned the "norm" family from softmaxes and layer norms and priced PP-OCR's
    24x160x160 BatchNormalization at 3.5 ms; the node profiler measured 0.09 ms. At inference it is
    a per-channel scale and shift, so it is an elementwise kernel and costs about what a Mul does."""
    bn = predict_latency(_after_conv_transpose("bn"), "x86-avx512", "onnxruntime")
    mul = predict_latency(_after_conv_transpose("mul"), "x86-avx512", "onnxruntime")
    (bn_layer,) = [layer for layer in bn.layers if layer.op == "BatchNormalization"]
    (mul_layer,) = [layer for layer in mul.layers if layer.op == "Mul"]
    assert Kernel("BatchNormalization", ((1, 24, 160, 160),), (1, 24, 160, 160)).family == "eltwise"
    assert bn_layer.latency_ms < 3 * mul_layer.latency_ms
    assert bn_layer.latency_ms < 0.5


def test_tree_ensemble_matches_scikit_learn():
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6))
    y = np.sin(x[:, 0]) + x[:, 1] ** 2 + 0.1 * rng.standard_normal(300)
    model = GradientBoostingRegressor(n_estimators=40, max_depth=3, loss="huber", random_state=0).fit(x, y)
    ens = TreeEnsemble.from_sklearn(model, x)
    test = rng.standard_normal((50, 6))
    np.testing.assert_allclose(ens.predict(test), model.predict(test), rtol=1e-6, atol=1e-9)


def test_validate_gives_each_model_its_own_shapes():
    a, b = paddle_like_head(), _lstm_model()
    per = _shapes_per_model([a, b], {"x": (1, 3, 32, 64), "seq": (5, 1, 24)})
    assert per == [{"x": (1, 3, 32, 64)}, {"seq": (5, 1, 24)}]
    with pytest.raises(HwoptError, match="none of the models has"):
        _shapes_per_model([a, b], {"images": (1, 3, 32, 32)})


def test_lstm_parts_are_the_projection_and_one_product_per_step():
    (k,) = extract_kernels(_lstm_model(seq=10, hidden=32, inp=24), "onnxruntime")
    (proj, n_proj), (step, n_step) = k.rnn_parts()
    assert (proj.inputs, proj.weight, n_proj) == (((10, 24),), (24, 128), 2)
    assert (step.inputs, step.weight, n_step) == (((1, 32),), (32, 128), 20)
    assert n_proj * proj.macs + n_step * step.macs == k.macs  # the parts do exactly the layer's work


def test_cpu_clock_counts_work_not_waiting():
    """burst_ms(cpu=True) is the process's CPU time: a run that sleeps (as a throttled process waits)
    costs wall time but almost no CPU time."""
    import time

    from hwopt.latency.profiler import burst_ms

    class Sleeper:
        def run(self, feeds):
            time.sleep(0.01)

    assert burst_ms(Sleeper(), {}, 3, cpu=False) >= 9.0
    assert burst_ms(Sleeper(), {}, 3, cpu=True) < 3.0


def _dq_conv_without_output_q():
    """DequantizeLinear(x), DequantizeLinear(w) -> Conv -> float output: a QDQ group onnxruntime cannot
    turn into QLinearConv (no QuantizeLinear after the conv), though the static rule calls it int8."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.integers(-100, 100, (8, 4, 3, 3)).astype(np.int8), "w_q"),
             numpy_helper.from_array(np.full(8, 0.01, np.float32), "w_s"),
             numpy_helper.from_array(np.zeros(8, np.int8), "w_z"),
             numpy_helper.from_array(np.array(0.05, np.float32), "x_s"),
             numpy_helper.from_array(np.array(0, np.int8), "x_z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"], name="q_in"),
             helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"], name="dq_in"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"], name="dq_w", axis=0),
             helper.make_node("Conv", ["x_dq", "w_dq"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "dqconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_onnxruntime_placement_turns_unfused_qdq_groups_into_float_kernels():
    from hwopt.latency.ort_qdq import observed_placement

    model = _dq_conv_without_output_q()
    assert extract_kernels(model, "onnxruntime")[0].dtype == "int8"  # the static rule alone
    placement = observed_placement(model)
    assert placement is not None and "conv" in placement.float_nodes
    ks = extract_kernels(model, "onnxruntime", placement=placement)
    assert [k.dtype for k in ks if k.op == "Conv"] == ["fp32"]
    assert {k.op for k in ks} >= {"QuantizeLinear", "DequantizeLinear"}  # they run on every inference
    assert predict_latency(model, "x86-avx512", "onnxruntime").sources  # predict_latency asks onnxruntime itself


def test_onnxruntime_placement_follows_what_onnxruntime_fused(net_int8):
    from hwopt.latency.ort_qdq import observed_placement

    placement = observed_placement(net_int8)
    convs = [k for k in extract_kernels(net_int8, "onnxruntime", placement=placement) if k.op == "Conv"]
    for k in convs:  # a conv onnxruntime left as a float Conv is fp32; one it turned into QLinearConv, int8
        assert k.dtype == ("fp32" if k.nodes[0] in placement.float_nodes else "int8"), k.key
    assert "int8" in {k.dtype for k in convs}  # the depthwise conv becomes a QLinearConv here
    assert observed_placement(net_int8) is placement  # cached by content
