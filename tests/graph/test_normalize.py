"""normalize_model: Constant-node weights become initializers, old opsets are upgraded, input untouched."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hwopt.graph.normalize import normalize_model, opset_of


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def constant_weight_model() -> onnx.ModelProto:
    """Like PyTorch/Paddle exports: weights in Constant nodes (tensor, float and ints forms), unnamed nodes."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "wt")
    nodes = [
        helper.make_node("Constant", [], ["w"], value=w),
        helper.make_node("Constant", [], ["scale"], value_float=0.5),
        helper.make_node("Constant", [], ["shape"], value_ints=[1, -1]),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "scale"], ["m"]),
        helper.make_node("Reshape", ["m", "shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "consts", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_constants_become_initializers_and_names_unique() -> None:
    model = constant_weight_model()
    before = model.SerializeToString()
    out = normalize_model(model)

    assert model.SerializeToString() == before, "the input model must not be modified"
    assert "Constant" not in {n.op_type for n in out.graph.node}
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    assert inits["w"].shape == (4, 3, 3, 3)
    assert inits["scale"] == np.float32(0.5)
    np.testing.assert_array_equal(inits["shape"], [1, -1])
    names = [n.name for n in out.graph.node]
    assert all(names) and len(set(names)) == len(names)
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-6)


def opset11_model() -> onnx.ModelProto:
    """Ops whose signature changed at opset 13: Squeeze/Unsqueeze/ReduceSum take axes as attributes here."""
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], axes=[2, 3], keepdims=1),
        helper.make_node("Squeeze", ["s"], ["q"], axes=[2, 3]),
        helper.make_node("Unsqueeze", ["q"], ["u"], axes=[1]),
        helper.make_node("Split", ["u"], ["a", "b"], axis=2, split=[1, 2]),
        helper.make_node("Sub", ["b", "a"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1, 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)


def test_opset11_is_upgraded_to_13_with_the_same_results() -> None:
    model = opset11_model()
    onnx.checker.check_model(model)
    out = normalize_model(model)

    assert opset_of(model) == 11 and opset_of(out) == 13
    squeeze = next(n for n in out.graph.node if n.op_type == "Squeeze")
    assert len(squeeze.input) == 2 and not squeeze.attribute, "opset-13 Squeeze takes axes as an input"
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(model, x), rtol=1e-5)


def test_weights_listed_as_inputs_are_dropped_from_inputs(make_conv_model) -> None:
    model = make_conv_model()
    w = model.graph.initializer[0]
    model.graph.input.append(helper.make_tensor_value_info(w.name, w.data_type, list(w.dims)))
    out = normalize_model(model)
    assert [i.name for i in out.graph.input] == ["x"]
    assert len(model.graph.input) == 2


def _paddle_like():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("paddle_like", Path(__file__).with_name("paddle_like.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fold_conv_affine_merges_bias_add_and_batchnorm_exactly() -> None:
    from hwopt.graph.normalize import fold_conv_affine
    from hwopt.graph.fold import fold_constants

    model = normalize_model(_paddle_like().paddle_like_model())
    fold_constants(model)
    before = onnx.ModelProto()
    before.CopyFrom(model)
    assert fold_conv_affine(model) == 2  # the Reshape(bias) Add and the BatchNormalization
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Add") == 1  # the hardswish +3 stays
    conv = next(n for n in model.graph.node if n.name == "p2o.Conv.0")
    assert conv.output[0] == "batch_norm_0.tmp_2" and len(conv.input) == 3
    x = np.random.default_rng(1).random((2, 3, 20, 24), dtype=np.float32)
    np.testing.assert_allclose(run(model, x), run(before, x), rtol=1e-5, atol=1e-6)
    onnx.checker.check_model(model)


def test_fold_conv_affine_copies_a_shared_weight() -> None:
    from hwopt.graph.normalize import fold_conv_affine

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)).astype(np.float32), "w")
    inits = [w] + [numpy_helper.from_array(v, n) for n, v in
                   (("g", np.array([2.0, 3.0], np.float32)), ("b", np.array([0.5, -1.0], np.float32)),
                    ("m", np.zeros(2, np.float32)), ("v", np.ones(2, np.float32)))]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn"], name="bn"),
        helper.make_node("Conv", ["bn", "w"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    before = onnx.ModelProto()
    before.CopyFrom(model)
    assert fold_conv_affine(model) == 1
    conv2 = next(n for n in model.graph.node if n.name == "conv2")
    assert conv2.input[1] == "w"  # the second conv still reads the original weight
    x = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(run(model, x), run(before, x), rtol=1e-5, atol=1e-6)
