"""Small synthetic models with the traits of real PaddlePaddle / PyTorch exports that broke hwopt.

Each builder reproduces one trait without a download: weights in Constant nodes, opset 11,
dynamic height/width, paddle2onnx names (`p2o.Conv.5`, `conv2d_12.tmp_0`), a conv bias added
through `Reshape(bias)`, BatchNormalization left unfolded, HardSigmoid and a Clip whose min/max
come from Constant nodes, a Reshape-based squeeze-excite block, and outputs declared with -1.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _const(name: str, arr: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"p2o.Constant.{name}", value=numpy_helper.from_array(arr, name))


def paddle_like_model(opset: int = 11, channels: int = 8, seed: int = 0) -> onnx.ModelProto:
    """x [N,3,H,W] (dynamic) -> conv+Reshape(bias) -> BN -> hardswish via Clip(Constant min/max)
    -> SE (GlobalAveragePool, Reshape, MatMul, HardSigmoid, Reshape, Mul) -> conv -> GAP -> MatMul
    -> Softmax; the output is declared [-1, 4] as paddle2onnx writes it."""
    rng = np.random.default_rng(seed)
    c = channels
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [
        _const("conv2d_0.w_0", f32(c, 3, 3, 3) * 0.3),
        _const("conv2d_0.b_0", f32(c) * 0.1),
        _const("shape_b", np.array([1, c, 1, 1], np.int64)),
        _const("bn_scale", (1 + 0.1 * f32(c)).astype(np.float32)),
        _const("bn_bias", f32(c) * 0.1),
        _const("bn_mean", f32(c) * 0.1),
        _const("bn_var", (1 + 0.1 * np.abs(f32(c))).astype(np.float32)),
        _const("three", np.array(3.0, np.float32)),
        _const("six", np.array(6.0, np.float32)),
        _const("zero", np.array(0.0, np.float32)),
        _const("se_w", f32(c, c) * 0.3),
        _const("se_shape", np.array([-1, c], np.int64)),
        _const("se_shape4", np.array([-1, c, 1, 1], np.int64)),
        _const("conv2d_1.w_0", f32(c, c, 1, 1) * 0.3),
        _const("fc_w", f32(c, 4) * 0.5),
        helper.make_node("Conv", ["x", "conv2d_0.w_0"], ["conv2d_0.tmp_0"], name="p2o.Conv.0", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Reshape", ["conv2d_0.b_0", "shape_b"], ["bias_4d"], name="p2o.Reshape.0"),
        helper.make_node("Add", ["conv2d_0.tmp_0", "bias_4d"], ["conv2d_0.tmp_1"], name="p2o.Add.0"),
        helper.make_node("BatchNormalization", ["conv2d_0.tmp_1", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
                         ["batch_norm_0.tmp_2"], name="p2o.BatchNormalization.0", epsilon=1e-5),
        helper.make_node("Add", ["batch_norm_0.tmp_2", "three"], ["hs_add"], name="p2o.Add.1"),
        helper.make_node("Clip", ["hs_add", "zero", "six"], ["hs_clip"], name="p2o.Clip.0"),
        helper.make_node("Div", ["hs_clip", "six"], ["hs_div"], name="p2o.Div.0"),
        helper.make_node("Mul", ["batch_norm_0.tmp_2", "hs_div"], ["hardswish_0.tmp_0"], name="p2o.Mul.0"),
        helper.make_node("GlobalAveragePool", ["hardswish_0.tmp_0"], ["pool2d_0.tmp_0"], name="p2o.GlobalAveragePool.0"),
        helper.make_node("Reshape", ["pool2d_0.tmp_0", "se_shape"], ["se_flat"], name="p2o.Reshape.1"),
        helper.make_node("MatMul", ["se_flat", "se_w"], ["se_fc"], name="p2o.MatMul.0"),
        helper.make_node("HardSigmoid", ["se_fc"], ["se_gate"], name="p2o.HardSigmoid.0", alpha=0.2, beta=0.5),
        helper.make_node("Reshape", ["se_gate", "se_shape4"], ["se_gate4"], name="p2o.Reshape.2"),
        helper.make_node("Mul", ["hardswish_0.tmp_0", "se_gate4"], ["se_out"], name="p2o.Mul.1"),
        helper.make_node("Conv", ["se_out", "conv2d_1.w_0"], ["conv2d_1.tmp_0"], name="p2o.Conv.5"),
        helper.make_node("Relu", ["conv2d_1.tmp_0"], ["relu_0.tmp_0"], name="p2o.Relu.0"),
        helper.make_node("GlobalAveragePool", ["relu_0.tmp_0"], ["pool2d_1.tmp_0"], name="p2o.GlobalAveragePool.1"),
        helper.make_node("Reshape", ["pool2d_1.tmp_0", "se_shape"], ["flat"], name="p2o.Reshape.3"),
        helper.make_node("MatMul", ["flat", "fc_w"], ["fc_0.tmp_0"], name="p2o.MatMul.1"),
        helper.make_node("Softmax", ["fc_0.tmp_0"], ["save_infer_model/scale_0.tmp_0"], name="p2o.Softmax.0", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "paddle_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, None, None])],
        [helper.make_tensor_value_info("save_infer_model/scale_0.tmp_0", TensorProto.FLOAT, [-1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="PaddlePaddle")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


#: MACs of `paddle_like_model(channels=8)` at x=1x3xHxW, counted by hand
def paddle_like_macs(h: int, w: int, c: int = 8) -> int:
    oh, ow = (h + 1) // 2, (w + 1) // 2
    return oh * ow * c * 3 * 9 + c * c + oh * ow * c * c + c * 4


def quantized_model() -> onnx.ModelProto:
    """Like onnxruntime's quantize_dynamic output: DynamicQuantizeLinear -> ConvInteger."""
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.int8), "w_q")
    wzp = numpy_helper.from_array(np.zeros((), np.int8), "w_zp")
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xzp"]),
        helper.make_node("ConvInteger", ["xq", "w_q", "xzp", "w_zp"], ["ci"]),
        helper.make_node("Cast", ["ci"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(nodes, "dq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])], [w, wzp])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def multi_input_model() -> onnx.ModelProto:
    """Three non-float inputs: a uint8 image, int64 token ids of dynamic length and a bool mask."""
    emb = numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "emb")
    nodes = [
        helper.make_node("Cast", ["image"], ["imgf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["imgf"], ["img_mean"], keepdims=0),
        helper.make_node("Gather", ["emb", "ids"], ["tok"]),
        helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked"], ["y"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "multi",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 3, 8, 8]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "seq"]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, []), helper.make_tensor_value_info("img_mean", TensorProto.FLOAT, [])],
        [emb, numpy_helper.from_array(np.array([2], np.int64), "axis2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


#: parameters of `branchy_model`: a 512x4 and a 256x4 weight, Constant nodes inside the two branches
BRANCHY_PARAMS = 512 * 4 + 256 * 4


def branchy_model() -> onnx.ModelProto:
    """silero-vad's layout: the whole network inside one If on an int64 scalar input `sr`.

    `sr == 16000` multiplies the 512-sample chunk by a 512x4 weight; the other branch's weight is
    256x4 (an 8 kHz chunk), so with the input fixed at 1x512 that branch is ill-typed (onnxruntime
    rejects the fixed-shape model at load) and at run time it fails for any sr but 16000. Weights
    are Constant nodes inside the branches; the input dims carry no names (spox writes none).
    """
    rng = np.random.default_rng(0)

    def branch(name: str, samples: int) -> onnx.GraphProto:
        nodes = [_const(f"{name}.w", rng.standard_normal((samples, 4)).astype(np.float32)),
                 helper.make_node("MatMul", ["input", f"{name}.w"], [f"{name}.y"], name=f"{name}/MatMul")]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}.y", TensorProto.FLOAT, None)])

    nodes = [
        _const("rate16k", np.array(16000, np.int64)),
        helper.make_node("Equal", ["sr", "rate16k"], ["is16k"]),
        helper.make_node("If", ["is16k"], ["y"], name="If_0", then_branch=branch("then16k", 512),
                         else_branch=branch("else8k", 256)),
    ]
    unnamed = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, None])
    graph = helper.make_graph(nodes, "branchy", [unnamed, helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
