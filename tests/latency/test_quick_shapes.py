"""Quick shape propagation: the same dims as onnx shape inference, or no answer at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.graph.load import load_model
from hwopt.latency import fusion
from hwopt.latency.fusion import _constant_tensors, clear_cut_cache, extract_kernels
from hwopt.latency.quick_shapes import propagate

from .conftest import residual_net

PPOCR_CLS = Path(__file__).resolve().parents[1] / "data" / "ppocr_cls.onnx"


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"{name}_const", value=numpy_helper.from_array(array, name))


def paddle_style_net() -> onnx.ModelProto:
    """Opset 11 with every weight in a Constant node, Paddle-style names, Clip with Constant min/max,
    a Reshape-based SE gate with HardSigmoid, MaxPool with ceil_mode, and a torch-style flatten
    built from Shape/Gather/Unsqueeze/Concat in front of a MatMul head."""
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [
        _const("conv2d_0.w_0", f32(16, 3, 3, 3)), _const("conv2d_0.b_0", f32(16)),
        helper.make_node("Conv", ["x", "conv2d_0.w_0", "conv2d_0.b_0"], ["conv2d_12.tmp_0"], name="p2o.Conv.0",
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        _const("clip_min", np.array(0.0, np.float32)), _const("clip_max", np.array(6.0, np.float32)),
        helper.make_node("Clip", ["conv2d_12.tmp_0", "clip_min", "clip_max"], ["relu6.tmp"], name="p2o.Clip.0"),
        helper.make_node("MaxPool", ["relu6.tmp"], ["pool.tmp"], name="p2o.MaxPool.0", kernel_shape=[3, 3],
                         strides=[2, 2], ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["pool.tmp"], ["se.gap"], name="p2o.GlobalAveragePool.0"),
        _const("se.shape", np.array([1, 16], np.int64)),
        helper.make_node("Reshape", ["se.gap", "se.shape"], ["se.flat"], name="p2o.Reshape.0"),
        _const("se.w", f32(16, 16)),
        helper.make_node("MatMul", ["se.flat", "se.w"], ["se.fc"], name="p2o.MatMul.0"),
        helper.make_node("HardSigmoid", ["se.fc"], ["se.gate"], name="p2o.HardSigmoid.0", alpha=0.2, beta=0.5),
        _const("se.back", np.array([1, 16, 1, 1], np.int64)),
        helper.make_node("Reshape", ["se.gate", "se.back"], ["se.gate4"], name="p2o.Reshape.1"),
        helper.make_node("Mul", ["pool.tmp", "se.gate4"], ["se.out"], name="p2o.Mul.0"),
        helper.make_node("Shape", ["se.out"], ["shape"], name="p2o.Shape.0"),
        _const("zero", np.array(0, np.int64)),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="p2o.Gather.0", axis=0),
        helper.make_node("Unsqueeze", ["batch"], ["batch1"], name="p2o.Unsqueeze.0", axes=[0]),
        _const("minus1", np.array([-1], np.int64)),
        helper.make_node("Concat", ["batch1", "minus1"], ["flat_shape"], name="p2o.Concat.0", axis=0),
        helper.make_node("Reshape", ["se.out", "flat_shape"], ["flat"], name="p2o.Reshape.2"),
        _const("fc.w", f32(16 * 8 * 8, 10)),
        helper.make_node("MatMul", ["flat", "fc.w"], ["save_infer_model/scale_0.tmp_0"], name="p2o.MatMul.1"),
    ]
    graph = helper.make_graph(nodes, "paddle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("save_infer_model/scale_0.tmp_0", TensorProto.FLOAT,
                                                             [-1, 10])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def _onnx_dims(model: onnx.ModelProto, inputs: dict) -> dict[str, tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    out = {}
    for vi in (*inferred.graph.value_info, *inferred.graph.output):
        dims = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        if vi.type.tensor_type.HasField("shape") and all(d > 0 for d in dims):
            out[vi.name] = dims
    return out


@pytest.mark.parametrize("build", [residual_net, lambda: residual_net(int8=True), paddle_style_net])
def test_dims_equal_onnx_inference(build):
    model = build()
    inputs = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input}
    quick = propagate(model.graph, inputs, _constant_tensors(model))
    assert quick is not None
    dims, _ = quick
    expected = _onnx_dims(model, inputs)
    expected.pop("save_infer_model/scale_0.tmp_0", None)  # its annotation says -1; checked below
    assert expected and all(dims[name] == d for name, d in expected.items())
    if "save_infer_model/scale_0.tmp_0" in dims:
        assert dims["save_infer_model/scale_0.tmp_0"] == (1, 10)
        assert dims["pool.tmp"] == (1, 16, 8, 8)  # ceil_mode: (16 - 3) / 2 rounded up, + 1
        assert dims["flat"] == (1, 1024)  # through Shape/Gather/Unsqueeze/Concat, where onnx stops


def test_unknown_op_gives_no_answer():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 32])
    g = helper.make_graph([helper.make_node("LpNormalization", ["x"], ["y"], name="lp", axis=-1)], "g", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert propagate(model.graph, {"x": (1, 64, 32)}, {}) is None


def _cut_both_ways(model, runtime, shapes=None, monkeypatch=None):
    clear_cut_cache()
    fast = [k.key for k in extract_kernels(model, runtime, shapes)]
    monkeypatch.setattr(fusion, "propagate", lambda *a: None)
    clear_cut_cache()
    slow = [k.key for k in extract_kernels(model, runtime, shapes)]
    monkeypatch.undo()
    clear_cut_cache()
    return fast, slow


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino", "litert"])
def test_kernel_cut_is_identical_with_and_without_onnx_inference(runtime, monkeypatch):
    for model, shapes in ((residual_net(), None), (residual_net(int8=True), None), (paddle_style_net(), None),
                          (load_model(PPOCR_CLS), {"x": (1, 3, 48, 192)})):
        fast, slow = _cut_both_ways(model, runtime, shapes, monkeypatch)
        assert fast == slow and fast
