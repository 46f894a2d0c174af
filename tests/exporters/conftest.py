"""Models the exporter tests share: a small zoo ResNet, and a PaddlePaddle-style classifier."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from hwopt.models.export import export_onnx
from hwopt.models.zoo import resnet_basic


@pytest.fixture(scope="session")
def small_cnn(tmp_path_factory):
    """(model path, calib .npz path): a 2-stage basic-block ResNet on 1x3x32x32 inputs."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("exporters")
    path = root / "small.onnx"
    export_onnx(resnet_basic(width=0.25, depths=(1, 1)), path, (1, 3, 32, 32))
    x = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
    np.savez(root / "calib.npz", input=x)
    return path, root / "calib.npz"


def paddle_like_classifier(seed: int = 0, classes: int = 4) -> onnx.ModelProto:
    """A tiny MobileNetV3-style classifier written the way paddle2onnx writes one.

    The traits real PaddlePaddle exports have and our torch exports lack: opset 11, every weight
    in a Constant node, node names like `Conv@3` and tensors like `conv2d_0.tmp_0`, dynamic H/W,
    hard-swish as Add/Clip(Constant min/max)/Mul/Div, a squeeze-excite block on a 1x1 map whose
    Conv biases are Reshape(bias, [1,C,1,1]) + Add, HardSigmoid, and a head that computes its
    Reshape target at run time (Shape -> Cast -> Slice -> Concat) before MatMul. onnx2tf
    translated that SE block wrongly until the model was simplified before conversion.
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []

    def const(name: str, arr) -> str:
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(arr), name)))
        return name

    def node(op: str, ins: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=f"{op}@{len(nodes)}", **attrs))
        return out

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    def se_bias(conv_out: str, name: str, channels: int) -> str:
        shape = const(f"{name}_shape", np.array([1, channels, 1, 1], np.int64))
        bias = node("Reshape", [const(f"{name}_offset", w(channels)), shape], f"{name}_offset.r")
        return node("Add", [conv_out, bias], f"{conv_out[:-1]}1")

    x = node("Conv", ["x", const("conv2d_0.w_0", w(8, 3, 3, 3))], "conv2d_0.tmp_0", strides=[2, 2], pads=[1, 1, 1, 1])
    x = node("BatchNormalization", [x, const("bn_0.s", 1 + 0.1 * w(8)), const("bn_0.b", w(8)), const("bn_0.m", w(8)),
                                    const("bn_0.v", 1 + np.abs(w(8)))], "batch_norm_0.tmp_2")
    a = node("Add", [x, const("Constant@3", np.float32(3))], "Add@0.out")
    a = node("Clip", [a, const("Constant@0", np.float32(0)), const("Constant@6", np.float32(6))], "Clip@0.out")
    x = node("Div", [node("Mul", [x, a], "Mul@0.out"), const("Constant@6b", np.float32(6))], "hardswish_0.tmp_0")
    s = node("GlobalAveragePool", [x], "pool2d_0.tmp_0")
    s = se_bias(node("Conv", [s, const("conv2_se_1_weights", w(2, 8, 1, 1))], "conv2d_1.tmp_0"), "conv2_se_1", 2)
    s = node("Relu", [s], "relu_0.tmp_0")
    s = se_bias(node("Conv", [s, const("conv2_se_2_weights", w(8, 2, 1, 1))], "conv2d_2.tmp_0"), "conv2_se_2", 8)
    s = node("HardSigmoid", [s], "hardsigmoid_0.tmp_0", alpha=0.2, beta=0.5)
    x = node("Mul", [x, s], "tmp_0")
    x = node("Relu", [node("Conv", [x, const("conv2d_3.w_0", w(16, 8, 1, 1))], "conv2d_3.tmp_0")], "relu_1.tmp_0")
    g = node("GlobalAveragePool", [x], "pool2d_1.tmp_0")
    shp = node("Cast", [node("Shape", [g], "Shape@0.out")], "shape_0.tmp_0", to=TensorProto.INT32)
    n = node("Slice", [shp, const("Constant@s0", np.array([0], np.int64)), const("Constant@s1", np.array([1], np.int64)),
                       const("Constant@s2", np.array([0], np.int64))], "shape_0.tmp_0_slice_0")
    cat = node("Concat", [node("Cast", [n], "Cast@1.out", to=TensorProto.INT64),
                          const("fill_constant_1.tmp_0", np.array([16], np.int64))], "Concat@0.out", axis=0)
    y = node("MatMul", [node("Reshape", [g, cat], "reshape2_0.tmp_0"), const("fc_0.w_0", w(16, classes))], "linear_1.tmp_0")
    y = node("Add", [y, const("fc_0.b_0", w(classes))], "linear_1.tmp_1")
    node("Softmax", [y], "softmax_0.tmp_0", axis=1)
    graph = helper.make_graph(nodes, "paddle_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("softmax_0.tmp_0", TensorProto.FLOAT, [-1, classes])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], producer_name="PaddlePaddle")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="session")
def paddle_like(tmp_path_factory):
    """(model path, calib .npz path) of `paddle_like_classifier`, calibration at 1x3x48x192."""
    root = tmp_path_factory.mktemp("paddle_like")
    path = root / "paddle_like.onnx"
    onnx.save(paddle_like_classifier(), str(path))
    x = np.random.default_rng(1).random((16, 3, 48, 192), dtype=np.float32)
    np.savez(root / "calib.npz", x=x)
    return path, root / "calib.npz"
