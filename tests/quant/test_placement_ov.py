"""OpenVINO QDQ placement: checked on what OpenVINO actually executes (`hwopt.quant.executed`).

Synthetic graphs reproduce the real-model traits whose placement cost speed: MaxPool and reshape
before a conv/classifier (ResNet), SE and SiLU gates (PP-OCR MobileNetV3, YOLOv8), Split/Concat
blocks (YOLOv8 C2f) and Shape-derived anchor tensors (YOLOv8 head), with Paddle-style names.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.data import Dataset
from hwopt.quant.executed import onnxruntime_node_mix, openvino_precision_mix
from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
from hwopt.quant.qdq import read_quant_params
from hwopt.quant.schemes import scheme_for

pytest.importorskip("openvino")
RNG = np.random.default_rng(0)
SHAPE = {"x": (1, 8, 16, 16)}


def conv(name: str, x: str, cin: int, cout: int, out: str, k: int = 3) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    w = numpy_helper.from_array((RNG.standard_normal((cout, cin, k, k)) * 0.2).astype(np.float32), f"{name}.w_0")
    b = numpy_helper.from_array((RNG.standard_normal(cout) * 0.1).astype(np.float32), f"{name}.b_0")
    return helper.make_node("Conv", [x, w.name, b.name], [out], name=name, pads=[k // 2] * 4), [w, b]


def graph_model(nodes: list, inits: list, out: str, cout: int, hw: int = 16) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, hw, hw])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def quantize_ov(model: onnx.ModelProto, runtime: str = "openvino") -> onnx.ModelProto:
    calib = Dataset({"x": RNG.uniform(0, 1, (8, 8, 16, 16)).astype(np.float32)}, None, "calib")
    plan = plan_quantization(model, scheme_for(runtime), shapes=SHAPE)
    return emit(plan, calibrate_plan(plan, calib))


def test_tiny_model_runs_every_conv_and_matmul_in_int8_on_openvino(tiny_model, digits):
    plan = plan_quantization(tiny_model, scheme_for("openvino"))
    q = emit(plan, calibrate_plan(plan, digits["calib"]))
    shapes = {"x": (1, 3, 16, 16)}
    mix = openvino_precision_mix(q, shapes)
    assert mix.int8_mac_share == 1.0 and mix.float_mac_layers == [], mix.summary()
    # the input's quantize and the classifier's after the mean (NNCF places the same two); no others
    assert mix.fake_quantize <= 2, mix.summary()
    float_mix = openvino_precision_mix(tiny_model, shapes)
    assert float_mix.int8_mac_share == 0.0 and len(float_mix.float_mac_layers) == sum(mix.mac_layers.values())
    assert float_mix.int8_macs == 0 and float_mix.float_macs == mix.int8_macs > 0


def test_maxpool_and_flatten_take_no_quantizer_of_their_own():
    c0, i0 = conv("p2o.Conv.0", "x", 8, 16, "conv2d_0.tmp_0")
    c1, i1 = conv("p2o.Conv.1", "pool2d_0.tmp_0", 16, 16, "conv2d_1.tmp_0")
    fc = numpy_helper.from_array(RNG.standard_normal((16, 4)).astype(np.float32), "fc_0.w_0")
    nodes = [c0, helper.make_node("Relu", ["conv2d_0.tmp_0"], ["relu_0.tmp_0"], name="p2o.Relu.0"),
             helper.make_node("MaxPool", ["relu_0.tmp_0"], ["pool2d_0.tmp_0"], name="p2o.MaxPool.0", kernel_shape=[2, 2], strides=[2, 2]),
             c1, helper.make_node("GlobalAveragePool", ["conv2d_1.tmp_0"], ["pool2d_1.tmp_0"], name="p2o.GAP.0"),
             helper.make_node("Flatten", ["pool2d_1.tmp_0"], ["flatten_0.tmp_0"], name="p2o.Flatten.0"),
             helper.make_node("MatMul", ["flatten_0.tmp_0", "fc_0.w_0"], ["logits"], name="p2o.MatMul.0")]
    model = graph_model(nodes, i0 + i1 + [fc], "logits", 4)
    q = quantize_ov(model)
    acts = {t for t, r in read_quant_params(q).items() if r.kind == "activation"}
    assert "pool2d_0.tmp_0" not in acts and "flatten_0.tmp_0" not in acts
    assert {"relu_0.tmp_0", "pool2d_1.tmp_0"} <= acts  # moved above MaxPool and Flatten
    mix = openvino_precision_mix(q, SHAPE)
    assert mix.int8_mac_share == 1.0 and not [f for f in mix.float_other if f.startswith("Pooling")], mix.float_other
    assert mix.fake_quantize == 1, mix.summary()


def se_silu_model() -> onnx.ModelProto:
    """conv -> SiLU (x * sigmoid x) -> SE (GAP, 1x1 conv, HardSigmoid, Mul) -> conv."""
    c0, i0 = conv("p2o.Conv.0", "x", 8, 16, "conv2d_0.tmp_0")
    c1, i1 = conv("p2o.Conv.1", "pool2d_0.tmp_0", 16, 16, "conv2d_1.tmp_0", k=1)
    c2, i2 = conv("p2o.Conv.2", "tmp_1", 16, 8, "out")
    nodes = [c0, helper.make_node("Sigmoid", ["conv2d_0.tmp_0"], ["sigmoid_0.tmp_0"], name="p2o.Sigmoid.0"),
             helper.make_node("Mul", ["conv2d_0.tmp_0", "sigmoid_0.tmp_0"], ["silu_0.tmp_0"], name="p2o.Mul.0"),
             helper.make_node("GlobalAveragePool", ["silu_0.tmp_0"], ["pool2d_0.tmp_0"], name="p2o.GAP.0"), c1,
             helper.make_node("HardSigmoid", ["conv2d_1.tmp_0"], ["hardsigmoid_0.tmp_0"], name="p2o.HardSigmoid.0",
                              alpha=0.2, beta=0.5),
             helper.make_node("Mul", ["silu_0.tmp_0", "hardsigmoid_0.tmp_0"], ["tmp_1"], name="p2o.Mul.1"), c2]
    return graph_model(nodes, i0 + i1 + i2, "out", 8)


def test_gate_multiplies_are_not_quantized_for_openvino_but_are_for_onnxruntime():
    model = se_silu_model()
    ov_acts = set(read_quant_params(quantize_ov(model)))
    assert "sigmoid_0.tmp_0" not in ov_acts and "hardsigmoid_0.tmp_0" not in ov_acts
    assert "tmp_1" in ov_acts  # the SE output, once, for the next conv
    ort_acts = set(read_quant_params(quantize_ov(model, "onnxruntime")))
    assert "hardsigmoid_0.tmp_0" in ort_acts  # unchanged: onnxruntime has QLinearMul
    mix = openvino_precision_mix(quantize_ov(model), SHAPE)
    assert mix.int8_mac_share == 1.0 and mix.fake_quantize == 1, mix.summary()


def test_concat_inputs_share_one_scale_and_concat_runs_in_int8():
    c0, i0 = conv("p2o.Conv.0", "x", 8, 16, "conv2d_0.tmp_0")
    c1, i1 = conv("p2o.Conv.1", "split_0.tmp_1", 8, 8, "conv2d_1.tmp_0")
    c2, i2 = conv("p2o.Conv.2", "concat_0.tmp_0", 24, 8, "out", k=1)
    split = numpy_helper.from_array(np.array([8, 8], np.int64), "split_sizes")
    nodes = [c0, helper.make_node("Split", ["conv2d_0.tmp_0", "split_sizes"], ["split_0.tmp_0", "split_0.tmp_1"], name="p2o.Split.0", axis=1),
             c1, helper.make_node("Mul", ["conv2d_1.tmp_0", "scale_3"], ["scaled_0"], name="p2o.Mul.0"),
             helper.make_node("Concat", ["split_0.tmp_0", "split_0.tmp_1", "scaled_0"], ["concat_0.tmp_0"], name="p2o.Concat.0", axis=1),
             c2]
    scale = numpy_helper.from_array(np.array(3.0, np.float32), "scale_3")  # a range 3x the split's
    q = quantize_ov(graph_model(nodes, i0 + i1 + i2 + [split, scale], "out", 8))
    recs = {t: r for t, r in read_quant_params(q).items() if r.kind == "activation"}
    assert "concat_0.tmp_0" not in recs and "split_0.tmp_0" not in recs
    assert float(recs["conv2d_0.tmp_0"].scale) == float(recs["scaled_0"].scale)
    mix = openvino_precision_mix(q, SHAPE)
    assert mix.int8_mac_share == 1.0 and not [f for f in mix.float_other if "Concat" in f], mix.float_other
    assert mix.fake_quantize == 1, mix.summary()


def test_shape_derived_tensors_get_no_activation_qdq():
    """YOLOv8's anchor grid: Shape -> Cast -> Concat with a feature map; only the feature is data."""
    c0, i0 = conv("/model.0/conv/Conv", "x", 8, 4, "feat")
    nodes = [c0, helper.make_node("Shape", ["feat"], ["shp"], name="/model.22/Shape"),
             helper.make_node("Cast", ["shp"], ["shp_f"], name="/model.22/Cast", to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["shp_f", "flat"], ["shp_b"], name="/model.22/Reshape"),
             helper.make_node("Add", ["feat", "shp_b"], ["anch"], name="/model.22/Add")]
    model = graph_model(nodes, i0 + [numpy_helper.from_array(np.array([1, 4, 1, 1], np.int64), "flat")], "anch", 4)
    for runtime in ("openvino", "onnxruntime"):
        acts = set(read_quant_params(quantize_ov(model, runtime)))
        assert not acts & {"shp_f", "shp_b", "shp_f_b"}, (runtime, acts)


def test_onnxruntime_node_mix_tells_fused_from_unfused_qdq(tiny_model, digits):
    mixes = {}
    for runtime in ("onnxruntime", "openvino"):
        plan = plan_quantization(tiny_model, scheme_for(runtime))
        mixes[runtime] = onnxruntime_node_mix(emit(plan, calibrate_plan(plan, digits["calib"])), {"x": (1, 3, 16, 16)})
    for runtime, mix in mixes.items():
        assert mix.int8_kernels >= 2 and mix.dequantize > 0, (runtime, mix.ops)
    float_mix = onnxruntime_node_mix(tiny_model, {"x": (1, 3, 16, 16)})
    assert float_mix.int8_kernels == 0 and float_mix.dequantize == 0 and float_mix.float_mac_kernels > 0


def test_paddle_db_head_conv_transposes_run_in_int8():
    """PP-OCR det's DB head: ConvTranspose with a Constant-node weight and no bias input, its bias
    a `Reshape(bias) + Add`, then BatchNormalization and Relu (or Sigmoid): both run int8 (u8)."""
    def const(name: str, arr: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], name=f"{name}.const", value=numpy_helper.from_array(arr, name))

    def up(i: int, x: str, cin: int, cout: int) -> list[onnx.NodeProto]:
        w = (RNG.standard_normal((cin, cout, 2, 2)) * 0.2).astype(np.float32)
        return [const(f"conv2d_transpose_{i}.w_0", w), const(f"conv2d_transpose_{i}.b_0", (RNG.standard_normal(cout) * 0.1).astype(np.float32)),
                const(f"shape_{i}", np.array([1, cout, 1, 1], np.int64)),
                helper.make_node("ConvTranspose", [x, f"conv2d_transpose_{i}.w_0"], [f"conv2d_transpose_{i}.tmp_0"],
                                 name=f"p2o.ConvTranspose.{2 * i}", kernel_shape=[2, 2], strides=[2, 2]),
                helper.make_node("Reshape", [f"conv2d_transpose_{i}.b_0", f"shape_{i}"], [f"bias_{i}"], name=f"p2o.Reshape.{i}"),
                helper.make_node("Add", [f"conv2d_transpose_{i}.tmp_0", f"bias_{i}"], [f"conv2d_transpose_{i}.tmp_1"],
                                 name=f"p2o.Add.{278 + 2 * i}")]

    def bn(i: int, x: str, c: int, out: str) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
        arrs = [RNG.uniform(0.5, 1.5, c), RNG.standard_normal(c) * 0.1, RNG.standard_normal(c) * 0.1, RNG.uniform(0.5, 1.5, c)]
        names = [f"batch_norm_{i}.{k}" for k in ("w_0", "b_0", "w_1", "w_2")]
        inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in zip(arrs, names)]
        return helper.make_node("BatchNormalization", [x, *names], [out], name=f"p2o.BatchNormalization.{i}"), inits

    c0, i0 = conv("p2o.Conv.0", "x", 8, 16, "conv2d_0.tmp_0")
    b0, j0 = bn(0, "conv2d_0.tmp_0", 16, "batch_norm_0.tmp_3")
    b1, j1 = bn(1, "conv2d_transpose_0.tmp_1", 8, "batch_norm_1.tmp_3")
    nodes = [c0, b0, helper.make_node("Relu", ["batch_norm_0.tmp_3"], ["batch_norm_0.tmp_4"], name="p2o.Relu.10"),
             *up(0, "batch_norm_0.tmp_4", 16, 8), b1,
             helper.make_node("Relu", ["batch_norm_1.tmp_3"], ["batch_norm_1.tmp_4"], name="p2o.Relu.11"),
             *up(1, "batch_norm_1.tmp_4", 8, 1),
             helper.make_node("Sigmoid", ["conv2d_transpose_1.tmp_1"], ["sigmoid_0.tmp_0"], name="p2o.Sigmoid.0")]
    g = helper.make_graph(nodes, "db", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, "h", "w"])],
                          [helper.make_tensor_value_info("sigmoid_0.tmp_0", TensorProto.FLOAT, None)], i0 + j0 + j1)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    from hwopt.quant.api import quantize

    calib = Dataset({"x": RNG.uniform(0, 1, (8, 8, 16, 16)).astype(np.float32)}, None, "calib")
    q = quantize(model, calib, runtime="openvino", measure_latency=False, shapes=SHAPE).model
    mix = openvino_precision_mix(q, SHAPE)
    assert mix.mac_layers == {"Convolution:u8": 1, "Deconvolution:u8": 2}, mix.summary()
    assert mix.float_mac_layers == [] and mix.int8_mac_share == 1.0


def test_onnxruntime_fuses_every_conv_and_the_pooled_classifier_input():
    """onnxruntime's QDQ fusion (x86, uint8 activations): the SE conv feeding a HardSigmoid gets
    its output quantizer before the gate (a Q after it left the conv float, as FusedConv between
    Transposes), and GAP -> Flatten -> Gemm gets a quantizer on both sides of the Flatten with one
    scale, so the pooling runs as QLinearGlobalAveragePool (with one only after Flatten it ran float)."""
    from hwopt.devices import load_device

    model = se_silu_model()
    fc = numpy_helper.from_array((RNG.standard_normal((4, 8)) * 0.2).astype(np.float32), "fc_0.w_0")
    model.graph.node.extend([
        helper.make_node("GlobalAveragePool", ["out"], ["pool2d_1.tmp_0"], name="p2o.GAP.1"),
        helper.make_node("Flatten", ["pool2d_1.tmp_0"], ["flatten_0.tmp_0"], name="p2o.Flatten.0"),
        helper.make_node("Gemm", ["flatten_0.tmp_0", "fc_0.w_0"], ["logits"], name="p2o.Gemm.0", transB=1)])
    model.graph.initializer.append(fc)
    model.graph.output[0].name = "logits"
    calib = Dataset({"x": RNG.uniform(0, 1, (8, 8, 16, 16)).astype(np.float32)}, None, "calib")
    plan = plan_quantization(model, scheme_for("onnxruntime", load_device("x86-avx512")), shapes=SHAPE)
    q = emit(plan, calibrate_plan(plan, calib))
    recs = read_quant_params(q)
    assert recs["pool2d_1.tmp_0"].scale == recs["flatten_0.tmp_0"].scale
    assert "conv2d_1.tmp_0" in recs and "hardsigmoid_0.tmp_0" in recs  # before the gate, and the Mul's input
    ops = onnxruntime_node_mix(q, SHAPE).ops
    assert ops.get("QLinearConv") == 3 and "FusedConv" not in ops and "Conv" not in ops, ops
    assert ops.get("QLinearGlobalAveragePool") == 2 and "GlobalAveragePool" not in ops, ops
