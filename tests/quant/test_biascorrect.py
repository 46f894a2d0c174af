"""Empirical bias correction (`hwopt.quant.biascorrect`): each quantized layer's mean output
matches the float model's on the calibration data, on real-model traits too."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.data import Dataset
from hwopt.errors import HwoptError
from hwopt.graph.shapes import with_outputs
from hwopt.quant.api import bias_correction_mode, quantize
from hwopt.quant.biascorrect import correct_biases
from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
from hwopt.quant.schemes import scheme_for
from hwopt.quant.sensitivity import evaluate

RNG = np.random.default_rng(3)


def _run(model: onnx.ModelProto, names: list[str], x: np.ndarray) -> list[np.ndarray]:
    """Plain QDQ arithmetic (no optimization: level 1 would already round the biases onto the int32 grid)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(with_outputs(model, names).SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(names, {sess.get_inputs()[0].name: x})


def _channel_mean(a: np.ndarray) -> np.ndarray:
    return a.mean(axis=tuple(i for i in range(a.ndim) if i != 1))


def _layers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm")}


def test_every_layer_mean_matches_float_after_correction(tiny_model, digits):
    """Layer by layer, with the earlier layers corrected: every quantized layer's per-channel
    output mean on the calibration inputs equals the float one (W4 makes the shifts large)."""
    plan = plan_quantization(tiny_model, scheme_for("onnxruntime"))
    qdq = emit(plan, calibrate_plan(plan, digits["calib"]), wbits=4, abits=8)
    fixed, rep = correct_biases(plan.model, qdq, digits["calib"], samples=64)
    layers = _layers(fixed)
    assert rep.layers == len(layers) == 5 and rep.skipped == [] and rep.levels == 5
    x = digits["calib"].inputs["x"][:64]
    f_layers = _layers(plan.model)
    f_out = _run(plan.model, [f_layers[n].output[0] for n in layers], x)
    before = _run(qdq, [_layers(qdq)[n].output[0] for n in layers], x)
    after = _run(fixed, [layers[n].output[0] for n in layers], x)
    for name, f, b, a in zip(layers, f_out, before, after):
        scale = np.abs(f).mean()
        gap_before = np.abs(_channel_mean(f) - _channel_mean(b)).max() / scale
        gap_after = np.abs(_channel_mean(f) - _channel_mean(a)).max() / scale
        assert gap_after < 1e-4, (name, gap_before, gap_after)
    assert rep.max_shift > 1e-3  # there was something to correct


def test_correction_generalizes_to_held_out_data(tiny_model, digits):
    plan = plan_quantization(tiny_model, scheme_for("openvino"))
    qdq = emit(plan, calibrate_plan(plan, digits["calib"]), wbits=4, abits=8)
    fixed, _ = correct_biases(plan.model, qdq, digits["calib"])
    _, ref = evaluate(tiny_model, digits["eval"])
    shift = lambda m: np.abs((evaluate(m, digits["eval"], reference=ref)[1][0] - ref[0]).mean(axis=0)).mean()  # noqa: E731
    assert shift(fixed) < 0.5 * shift(qdq)


def _paddle_style_model() -> onnx.ModelProto:
    """Paddle/PyTorch traits in one graph: Constant-node weights, a conv with no bias, a depthwise
    conv, a ConvTranspose, a Gemm with transB=1 and no bias, Paddle names, opset 11."""
    def const(name: str, arr: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], name=f"{name}.const", value=numpy_helper.from_array(arr.astype(np.float32), name))

    w = lambda *s: RNG.standard_normal(s) * 0.3  # noqa: E731
    nodes = [
        const("conv2d_0.w_0", w(8, 3, 3, 3)),
        helper.make_node("Conv", ["x", "conv2d_0.w_0"], ["conv2d_0.tmp_0"], name="p2o.Conv.0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2d_0.tmp_0"], ["relu_0.tmp_0"], name="p2o.Relu.0"),
        const("dw_0.w_0", w(8, 1, 3, 3)), const("dw_0.b_0", w(8)),
        helper.make_node("Conv", ["relu_0.tmp_0", "dw_0.w_0", "dw_0.b_0"], ["dw_0.tmp_0"], name="p2o.Conv.1", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["dw_0.tmp_0"], ["relu_1.tmp_0"], name="p2o.Relu.1"),
        const("convt_0.w_0", w(8, 4, 2, 2)),
        helper.make_node("ConvTranspose", ["relu_1.tmp_0", "convt_0.w_0"], ["convt_0.tmp_0"], name="p2o.ConvTranspose.0",
                         strides=[2, 2], kernel_shape=[2, 2]),
        helper.make_node("GlobalAveragePool", ["convt_0.tmp_0"], ["pool_0.tmp_0"], name="p2o.GlobalAveragePool.0"),
        helper.make_node("Flatten", ["pool_0.tmp_0"], ["flatten_0.tmp_0"], name="p2o.Flatten.0"),
        const("fc_0.w_0", w(5, 4)),
        helper.make_node("Gemm", ["flatten_0.tmp_0", "fc_0.w_0"], ["logits"], name="p2o.Gemm.0", transB=1),
    ]
    g = helper.make_graph(nodes, "paddle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 5])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 7
    return m


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_real_model_traits_are_all_corrected(runtime):
    model = _paddle_style_model()
    calib = Dataset({"x": RNG.uniform(0, 1, (32, 3, 8, 8)).astype(np.float32)}, None, "calib")
    test = Dataset({"x": RNG.uniform(0, 1, (64, 3, 8, 8)).astype(np.float32)}, None, "test")
    plain = quantize(model, calib, runtime=runtime, wbits=4, eval=test, measure_latency=False)
    fixed = quantize(model, calib, runtime=runtime, wbits=4, eval=test, bias_correction="empirical", measure_latency=False)
    bc = next(s for s in fixed.report["stages"] if s["stage"] == "bias_correction")
    assert bc["layers"] == 4 and bc["skipped"] == [], bc  # both convs, the ConvTranspose and the Gemm
    corrected = {n.name: n.input[2] for n in fixed.model.graph.node if len(n.input) > 2 and n.input[2].endswith("_bias_corrected")}
    assert set(corrected) == {"p2o.Conv.0", "p2o.Conv.1", "p2o.ConvTranspose.0", "p2o.Gemm.0"}
    assert fixed.report["quantized"][runtime]["sqnr_db"] > plain.report["quantized"][runtime]["sqnr_db"]
    assert [i.name for i in fixed.model.graph.input] == ["x"]  # the biases it measured with are constants again


def test_bias_correction_modes():
    assert bias_correction_mode(True) == "analytic" and bias_correction_mode(False) == "none"
    assert bias_correction_mode("empirical") == "empirical"
    with pytest.raises(HwoptError, match="unknown bias correction 'fast'"):
        bias_correction_mode("fast")
