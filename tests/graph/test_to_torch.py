"""onnx_to_torch reproduces onnxruntime op by op and on whole models; write_back round-trips."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from hwopt.errors import HwoptError
from hwopt.graph.normalize import normalize_model
from hwopt.graph.to_torch import onnx_to_torch, weight_initializers, write_back

torch.set_num_threads(1)
RNG = np.random.default_rng(0)


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimize: bool = True) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def torch_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    module = onnx_to_torch(model)
    with torch.no_grad():
        out = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def single_node(op: str, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray] | None = None,
                n_out: int = 1, opset: int = 17, **attrs) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A one-node model; `inputs` are graph inputs, `inits` initializers, both in input order."""
    inits = inits or {}
    names = list(inputs) + list(inits)
    order = attrs.pop("order", names)
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, order, outs, name="n0", **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in inputs.items()],
        [helper.ValueInfoProto(name=o) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model)
    for o in model.graph.output:  # give outputs their inferred types so onnxruntime accepts them
        vi = next((v for v in model.graph.value_info if v.name == o.name), None)
        if vi is not None:
            o.CopyFrom(vi)
    return model, inputs


def assert_matches(model: onnx.ModelProto, feeds: dict[str, np.ndarray], atol: float = 1e-5) -> None:
    expected = ort_run(model, feeds)
    got = torch_run(model, feeds)
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert e.shape == g.shape, (e.shape, g.shape)
        np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), atol=atol, rtol=1e-5)


def f32(*shape: int, positive: bool = False) -> np.ndarray:
    x = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(x) + 0.1 if positive else x


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


X = f32(2, 4, 7, 9)
CASES = {
    "Add": ("Add", {"a": X, "b": f32(4, 1, 9)}, {}, {}),
    "Sub": ("Sub", {"a": X, "b": f32(1, 9)}, {}, {}),
    "Mul": ("Mul", {"a": X, "b": f32(4, 7, 1)}, {}, {}),
    "Div": ("Div", {"a": X, "b": f32(9, positive=True)}, {}, {}),
    "Div_int": ("Div", {"a": np.array([7, -7, 9], np.int64), "b": np.array([2, 2, -4], np.int64)}, {}, {}),
    "Pow": ("Pow", {"a": f32(3, 5, positive=True), "b": f32(5)}, {}, {}),
    "Sqrt": ("Sqrt", {"a": f32(3, 5, positive=True)}, {}, {}),
    "Neg": ("Neg", {"a": X}, {}, {}),
    "Abs": ("Abs", {"a": X}, {}, {}),
    "Exp": ("Exp", {"a": X}, {}, {}),
    "Log": ("Log", {"a": f32(3, 5, positive=True)}, {}, {}),
    "Reciprocal": ("Reciprocal", {"a": f32(3, 5, positive=True)}, {}, {}),
    "Erf": ("Erf", {"a": X}, {}, {}),
    "Relu": ("Relu", {"a": X}, {}, {}),
    "LeakyRelu": ("LeakyRelu", {"a": X}, {}, {"alpha": 0.2}),
    "PRelu": ("PRelu", {"a": X}, {"slope": f32(4, 1, 1)}, {}),
    "Sigmoid": ("Sigmoid", {"a": X}, {}, {}),
    "HardSigmoid": ("HardSigmoid", {"a": X * 3}, {}, {"alpha": 0.3, "beta": 0.4}),
    "HardSwish": ("HardSwish", {"a": X * 3}, {}, {}),
    "Tanh": ("Tanh", {"a": X}, {}, {}),
    "Clip": ("Clip", {"a": X}, {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}, {}),
    "Clip_min_only": ("Clip", {"a": X}, {"lo": np.array(0.0, np.float32)}, {}),
    "Softmax": ("Softmax", {"a": X}, {}, {"axis": 1}),
    "LogSoftmax": ("LogSoftmax", {"a": X}, {}, {}),
    "Where": ("Where", {"c": X > 0, "a": X, "b": f32(9)}, {}, {}),
    "Equal": ("Equal", {"a": np.array([1, 2, 3], np.int64), "b": np.array([1, 5, 3], np.int64)}, {}, {}),
    "BatchNormalization": ("BatchNormalization", {"a": X},
                           {"s": f32(4), "b": f32(4), "m": f32(4), "v": f32(4, positive=True)}, {"epsilon": 1e-3}),
    "InstanceNormalization": ("InstanceNormalization", {"a": X}, {"s": f32(4), "b": f32(4)}, {}),
    "LayerNormalization": ("LayerNormalization", {"a": X}, {"s": f32(9), "b": f32(9)}, {}),
    "LayerNormalization_axis": ("LayerNormalization", {"a": X}, {"s": f32(7, 9), "b": f32(7, 9)}, {"axis": 2}),
    "Conv_groups_dil_asym": ("Conv", {"a": X}, {"w": f32(6, 2, 3, 3), "b": f32(6)},
                             {"group": 2, "dilations": [2, 1], "pads": [1, 0, 2, 1], "strides": [1, 2]}),
    "Conv_same_upper": ("Conv", {"a": X}, {"w": f32(5, 4, 3, 2)}, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "Conv_same_lower": ("Conv", {"a": X}, {"w": f32(5, 4, 4, 4)}, {"auto_pad": "SAME_LOWER"}),
    "Conv_depthwise": ("Conv", {"a": X}, {"w": f32(4, 1, 3, 3), "b": f32(4)}, {"group": 4, "pads": [1, 1, 1, 1]}),
    "Conv1d": ("Conv", {"a": f32(2, 3, 11)}, {"w": f32(4, 3, 3)}, {"pads": [1, 1]}),
    "ConvTranspose": ("ConvTranspose", {"a": X}, {"w": f32(4, 3, 3, 3), "b": f32(3)},
                      {"strides": [2, 2], "pads": [1, 0, 1, 1], "output_padding": [1, 1]}),
    "ConvTranspose_group": ("ConvTranspose", {"a": X}, {"w": f32(4, 2, 2, 2)}, {"strides": [2, 2], "group": 2}),
    "ConvTranspose_output_shape": ("ConvTranspose", {"a": X}, {"w": f32(4, 3, 3, 3)},
                                   {"strides": [2, 2], "output_shape": [14, 19]}),
    "ConvTranspose_same_upper": ("ConvTranspose", {"a": X}, {"w": f32(4, 3, 4, 4)}, {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "Gemm": ("Gemm", {"a": f32(5, 3)}, {"w": f32(3, 4), "c": f32(4)}, {}),
    "Gemm_trans_alpha_beta": ("Gemm", {"a": f32(3, 5)}, {"w": f32(4, 3), "c": f32(5, 4)},
                              {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}),
    "MatMul": ("MatMul", {"a": f32(2, 5, 3)}, {"w": f32(3, 4)}, {}),
    "MaxPool_pads_ceil": ("MaxPool", {"a": X}, {}, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 1], "ceil_mode": 1}),
    "MaxPool_dilated": ("MaxPool", {"a": X}, {}, {"kernel_shape": [2, 2], "dilations": [2, 2]}),
    "MaxPool_same": ("MaxPool", {"a": X}, {}, {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "AveragePool_exclude_pad": ("AveragePool", {"a": X}, {}, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "AveragePool_include_pad_ceil": ("AveragePool", {"a": X}, {},
                                     {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 0, 1], "ceil_mode": 1,
                                      "count_include_pad": 1}),
    "AveragePool_ceil": ("AveragePool", {"a": X}, {}, {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    "GlobalAveragePool": ("GlobalAveragePool", {"a": X}, {}, {}),
    "GlobalMaxPool": ("GlobalMaxPool", {"a": X}, {}, {}),
    "Concat": ("Concat", {"a": X, "b": f32(2, 1, 7, 9)}, {}, {"axis": 1}),
    "Split_input": ("Split", {"a": X}, {"s": i64(1, 3)}, {"axis": 1, "n_out": 2}),
    "Split_equal": ("Split", {"a": X}, {}, {"axis": 1, "n_out": 2}),
    "Split_num_outputs": ("Split", {"a": X}, {}, {"axis": 3, "num_outputs": 2, "n_out": 2, "opset": 18}),
    "Slice": ("Slice", {"a": X}, {"st": i64(1, -2), "en": i64(100, 0), "ax": i64(2, 3), "sp": i64(2, -2)}, {}),
    "Slice_default_axes": ("Slice", {"a": X}, {"st": i64(0, 1), "en": i64(1, 3)}, {}),
    "Reshape": ("Reshape", {"a": X}, {"s": i64(0, -1, 9)}, {}),
    "Flatten": ("Flatten", {"a": X}, {}, {"axis": 2}),
    "Flatten_0": ("Flatten", {"a": X}, {}, {"axis": 0}),
    "Transpose": ("Transpose", {"a": X}, {}, {"perm": [0, 2, 3, 1]}),
    "Squeeze": ("Squeeze", {"a": f32(2, 1, 3, 1)}, {"ax": i64(-1)}, {}),
    "Squeeze_all": ("Squeeze", {"a": f32(2, 1, 3, 1)}, {}, {}),
    "Unsqueeze": ("Unsqueeze", {"a": f32(2, 3)}, {"ax": i64(0, -1)}, {}),
    "Gather": ("Gather", {"a": X}, {"i": np.array([[0, -1], [2, 1]], np.int64)}, {"axis": 1}),
    "Gather_scalar": ("Gather", {"a": X}, {"i": np.array(-2, np.int64)}, {"axis": 3}),
    "Shape": ("Shape", {"a": X}, {}, {}),
    "Shape_start_end": ("Shape", {"a": X}, {}, {"start": 1, "end": -1}),
    "Cast": ("Cast", {"a": X * 4}, {}, {"to": TensorProto.INT32}),
    "ConstantOfShape": ("ConstantOfShape", {"a": i64(2, 3)}, {}, {"value": numpy_helper.from_array(np.array([1.5], np.float32))}),
    "Identity": ("Identity", {"a": X}, {}, {}),
    "Dropout": ("Dropout", {"a": X}, {}, {}),
    "Pad_constant": ("Pad", {"a": X}, {"p": i64(0, 0, 1, 2, 0, 0, 3, 0), "v": np.array(0.5, np.float32)}, {}),
    "Pad_reflect": ("Pad", {"a": X}, {"p": i64(0, 0, 2, 1, 0, 0, 1, 2)}, {"mode": "reflect"}),
    "Pad_edge": ("Pad", {"a": X}, {"p": i64(0, 0, 2, 1, 0, 0, 1, 2)}, {"mode": "edge"}),
    "Resize_nearest_asym_floor": ("Resize", {"a": X}, {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 2], np.float32)},
                                  {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}),
    "Resize_nearest_half_pixel": ("Resize", {"a": X}, {"r": np.zeros(0, np.float32), "s": np.zeros(0, np.float32),
                                                       "z": i64(2, 4, 11, 5)}, {"mode": "nearest"}),
    "Resize_linear_half_pixel": ("Resize", {"a": X}, {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 1.5, 0.5], np.float32)},
                                 {"mode": "linear"}),
    "Resize_linear_align_corners": ("Resize", {"a": X}, {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 2], np.float32)},
                                    {"mode": "linear", "coordinate_transformation_mode": "align_corners"}),
    "Resize_linear_asymmetric": ("Resize", {"a": X}, {"r": np.zeros(0, np.float32), "s": np.array([1, 1, 2, 3], np.float32)},
                                 {"mode": "linear", "coordinate_transformation_mode": "asymmetric"}),
    "Resize_linear_pytorch_half_pixel": ("Resize", {"a": X}, {"r": np.zeros(0, np.float32), "s": np.zeros(0, np.float32),
                                                              "z": i64(2, 4, 1, 13)},
                                         {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}),
    "ReduceMean": ("ReduceMean", {"a": X}, {}, {"axes": [2, 3]}),
    "ReduceMean_18": ("ReduceMean", {"a": X}, {"ax": i64(1)}, {"keepdims": 0, "opset": 18}),
    "ReduceSum": ("ReduceSum", {"a": X}, {"ax": i64(-1)}, {}),
    "ReduceSum_all": ("ReduceSum", {"a": X}, {}, {"keepdims": 0}),
    "ReduceMax": ("ReduceMax", {"a": X}, {}, {"axes": [1], "keepdims": 0}),
    "Expand": ("Expand", {"a": f32(4, 1)}, {"s": i64(2, 1, 5)}, {}),
    "Range": ("Range", {"a": np.array(1.0, np.float32), "b": np.array(9.0, np.float32), "c": np.array(2.5, np.float32)}, {}, {}),
    "Tile": ("Tile", {"a": f32(2, 3)}, {"r": i64(2, 3)}, {}),
    "DepthToSpace_DCR": ("DepthToSpace", {"a": f32(1, 8, 3, 4)}, {}, {"blocksize": 2}),
    "DepthToSpace_CRD": ("DepthToSpace", {"a": f32(1, 8, 3, 4)}, {}, {"blocksize": 2, "mode": "CRD"}),
    "SpaceToDepth": ("SpaceToDepth", {"a": f32(1, 2, 4, 6)}, {}, {"blocksize": 2}),
    "Gelu": ("Gelu", {"a": X}, {}, {"opset": 20}),
    "Gelu_tanh": ("Gelu", {"a": X}, {}, {"approximate": "tanh", "opset": 20}),
    "GroupNormalization": ("GroupNormalization", {"a": X}, {"s": f32(4), "b": f32(4)}, {"num_groups": 2, "opset": 21}),
    "QuantizeLinear_uint8": ("QuantizeLinear", {"a": X * 3}, {"s": np.array(0.02, np.float32), "z": np.array(128, np.uint8)}, {}),
    "QuantizeLinear_int8_per_channel": ("QuantizeLinear", {"a": X}, {"s": np.array([0.01, 0.02, 0.05, 0.1], np.float32),
                                                                      "z": np.array([0, 3, -5, 1], np.int8)}, {"axis": 1}),
    "DequantizeLinear_int8_per_channel": ("DequantizeLinear", {"a": RNG.integers(-128, 128, (2, 4, 3), dtype=np.int8)},
                                          {"s": np.array([0.01, 0.02, 0.05, 0.1], np.float32), "z": np.array([0, 3, -5, 1], np.int8)},
                                          {"axis": 1}),
    "DequantizeLinear_uint8": ("DequantizeLinear", {"a": RNG.integers(0, 256, (3, 5), dtype=np.uint8)},
                               {"s": np.array(0.1, np.float32), "z": np.array(7, np.uint8)}, {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_onnxruntime(case: str) -> None:
    op, inputs, inits, attrs = CASES[case]
    attrs = dict(attrs)
    n_out, opset = attrs.pop("n_out", 1), attrs.pop("opset", 17)
    model, feeds = single_node(op, inputs, inits, n_out=n_out, opset=opset, **attrs)
    assert_matches(model, feeds)


def test_constant_node_and_attribute_forms_via_normalize() -> None:
    """Opset-11 attribute forms (Split/Squeeze/Unsqueeze/ReduceSum axes) work after normalization."""
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.float32([[1.0, 2.0, 3.0, 4.0]]))),
        helper.make_node("Add", ["x", "c"], ["a"]),
        helper.make_node("Split", ["a"], ["s0", "s1"], axis=1, split=[1, 3]),
        helper.make_node("Unsqueeze", ["s1"], ["u"], axes=[0]),
        helper.make_node("Squeeze", ["u"], ["q"], axes=[0]),
        helper.make_node("ReduceSum", ["q"], ["r"], axes=[1], keepdims=1),
        helper.make_node("Concat", ["s0", "r"], ["y"], axis=1),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    assert_matches(normalize_model(model), {"x": f32(3, 4)})
    with pytest.raises(HwoptError, match="normalize"):
        onnx_to_torch(model)


def test_constant_node_kept_as_op() -> None:
    model, feeds = single_node("Add", {"a": f32(2, 3)}, order=["a", "c"])
    model.graph.node.insert(0, helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]))
    assert_matches(model, feeds)


def test_unknown_op_names_it() -> None:
    model, _ = single_node("Relu", {"a": f32(2, 3)})
    model.graph.node[0].op_type = "NonMaxSuppression"
    with pytest.raises(HwoptError, match="NonMaxSuppression"):
        onnx_to_torch(model)
    model.graph.node[0].domain = "com.example"
    with pytest.raises(HwoptError, match="com.example::NonMaxSuppression"):
        onnx_to_torch(model)


def test_dynamic_shapes_compute_on_the_fly() -> None:
    """Shape -> Gather -> Concat -> Reshape with a dynamic batch: one module, two batch sizes."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero1d"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(i64(0), "zero1d"),
             numpy_helper.from_array(i64(-1), "minus1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    module = onnx_to_torch(model)
    for batch in (1, 5):
        assert module(torch.randn(batch, 3, 4)).shape == (batch, 12)


# ---------------------------------------------------------------- whole models


def export(module: torch.nn.Module, shape: tuple[int, ...], path) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(*shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "b"}})
    return normalize_model(onnx.load(str(path)))


def zoo_names() -> list[str]:
    try:
        from hwopt.models.zoo import ZOO
    except ImportError:
        return []
    return sorted(ZOO)


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_model_matches_onnxruntime_and_trains(name: str, tmp_path) -> None:
    from hwopt.models.zoo import build

    net, shape = build(name)
    model = export(net, shape, tmp_path / "m.onnx")
    x = RNG.standard_normal((2,) + tuple(shape[1:])).astype(np.float32)
    expected = ort_run(model, {"x": x})[0]
    module = onnx_to_torch(model)
    got = module(torch.from_numpy(x))
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=1e-4, rtol=1e-4)
    got.square().sum().backward()
    params = dict(module.named_parameters())
    assert params, "no weights became parameters"
    for attr, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), attr
    nonzero = sum(bool(p.grad.abs().sum() > 0) for p in params.values())
    assert nonzero >= 0.9 * len(params)


class TinyMix(torch.nn.Module):
    """Conv/BN/PReLU/GroupNorm/ConvTranspose/Linear-on-3D mix (no zoo needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.gn = torch.nn.GroupNorm(2, 8)
        self.act = torch.nn.PReLU(8)
        self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.ln = torch.nn.LayerNorm(4)
        self.fc = torch.nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.gn(self.conv(x)))
        y = self.up(y).flatten(2).transpose(1, 2)  # (B, HW, C)
        return self.fc(self.ln(y)).mean(1)


def test_tiny_model_parameters_gradients_and_write_back(tmp_path) -> None:
    torch.manual_seed(0)
    model = export(TinyMix(), (1, 3, 6, 6), tmp_path / "mix.onnx")
    module = onnx_to_torch(model)
    ops = {n.op_type for n in model.graph.node}
    assert {"ConvTranspose", "MatMul", "PRelu"} <= ops
    x = f32(3, 3, 6, 6)
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), ort_run(model, {"x": x})[0], atol=1e-4)
    # every weight became a parameter, named in param_names; shape constants stayed buffers
    assert set(module.param_names) == weight_initializers(model)
    assert all(np.issubdtype(numpy_helper.to_array(t).dtype, np.floating) for t in model.graph.initializer
               if t.name in module.param_names)
    matmul_bias = [n.input for n in model.graph.node if n.op_type == "Add"]
    assert any(i in module.param_names for inputs in matmul_bias for i in inputs), "Linear bias after MatMul not trainable"
    module(torch.from_numpy(x)).sum().backward()
    for name, attr in module.param_names.items():
        grad = getattr(module, attr).grad
        assert grad is not None and float(grad.abs().sum()) > 0, name

    # unchanged round trip is exact
    same = write_back(model, module)
    for a, b in zip(model.graph.initializer, same.graph.initializer):
        assert a.name == b.name and a.data_type == b.data_type
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))

    # after an update, onnxruntime on the written model computes what the module computes
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    updated = write_back(model, module)
    np.testing.assert_allclose(ort_run(updated, {"x": x})[0], module(torch.from_numpy(x)).detach().numpy(), atol=1e-4)
    assert ort_run(model, {"x": x})[0].tolist() != ort_run(updated, {"x": x})[0].tolist()
    assert model.graph.node == updated.graph.node  # graph untouched, only values


def test_write_back_refuses_other_model(tmp_path) -> None:
    model, _ = single_node("Conv", {"a": X}, {"w": f32(2, 4, 3, 3)})
    other, _ = single_node("Conv", {"a": X}, {"w": f32(3, 4, 3, 3)})
    with pytest.raises(HwoptError, match="shape"):
        write_back(other, onnx_to_torch(model))
    renamed, _ = single_node("Conv", {"a": X}, {"w2": f32(2, 4, 3, 3)})
    with pytest.raises(HwoptError, match="no matching initializer"):
        write_back(renamed, onnx_to_torch(model))


def test_trainable_extra_initializers() -> None:
    model, _ = single_node("QuantizeLinear", {"a": X}, {"s": np.array(0.02, np.float32), "z": np.array(0, np.int8)})
    module = onnx_to_torch(model, trainable=["s"])
    assert "s" in module.param_names
    with pytest.raises(HwoptError, match="only float"):
        onnx_to_torch(model, trainable=["z"])
    with pytest.raises(HwoptError, match="not initializers"):
        onnx_to_torch(model, trainable=["nope"])


# ---------------------------------------------------------------- quantized models


def test_fake_quant_gradients_are_straight_through_and_lsq() -> None:
    """Q->DQ sharing one scale: identity gradient inside the range, LSQ's step gradient."""
    scale = np.array(0.1, np.float32)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                              [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(np.array(0, np.int8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    module = onnx_to_torch(model, trainable=["s"])
    x = torch.tensor([0.123, -0.26, 50.0, -0.04], requires_grad=True)
    y = module(x)
    np.testing.assert_allclose(y.detach().numpy(), ort_run(model, {"x": x.detach().numpy()})[0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1, 1, 0, 1])  # 50.0 saturates at 127*0.1
    v = x.detach().numpy() / 0.1
    lsq = np.where(np.abs(v) <= 127, np.round(v) - v, np.clip(v, -128, 127))
    np.testing.assert_allclose(module.tensor("s").grad.item(), lsq.sum(), rtol=1e-4)


def test_narrowed_quant_range() -> None:
    model, feeds = single_node("QuantizeLinear", {"a": X}, {"s": np.array(0.05, np.float32), "z": np.array(0, np.int8)})
    module = onnx_to_torch(model)
    module.set_quant_range("n0", -8, 7)
    out = module(torch.from_numpy(feeds["a"]))
    assert out.min() == -8 and out.max() == 7
    with pytest.raises(KeyError):
        module.set_quant_range("missing", -8, 7)


def test_ort_quantize_static_qdq_model_matches(tmp_path) -> None:
    """A QDQ model from onnxruntime's quantize_static: fake-quant equals the unfused QDQ graph
    and stays close to onnxruntime's fused int8 kernels."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
    )
    float_model = export(net, (1, 3, 8, 8), tmp_path / "f.onnx")
    onnx.save(float_model, str(tmp_path / "f.onnx"))
    calib = [{"x": f32(1, 3, 8, 8)} for _ in range(16)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    qmodel = normalize_model(onnx.load(str(tmp_path / "q.onnx")))
    assert any(n.op_type == "QuantizeLinear" for n in qmodel.graph.node)
    x = f32(8, 3, 8, 8)
    got = onnx_to_torch(qmodel)(torch.from_numpy(x)).detach().numpy()
    unfused = ort_run(qmodel, {"x": x}, optimize=False)[0]
    fused = ort_run(qmodel, {"x": x})[0]
    np.testing.assert_allclose(got, unfused, atol=1e-5)
    out_scale = float(np.abs(fused).max()) / 127
    assert np.abs(got - fused).max() <= 3 * out_scale  # fused int8 kernels requantize slightly differently
    assert (got.argmax(1) == fused.argmax(1)).mean() >= 0.75


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_matches_onnxruntime(direction: str) -> None:
    """Torch-exported CRNNs (e.g. ddddocr's recognizer) end in a bidirectional LSTM."""
    dirs, hidden = (2 if direction == "bidirectional" else 1), 3
    inits = {"W": f32(dirs, 4 * hidden, 4), "R": f32(dirs, 4 * hidden, hidden), "B": f32(dirs, 8 * hidden),
             "h0": f32(dirs, 2, hidden), "c0": f32(dirs, 2, hidden), "P": f32(dirs, 3 * hidden)}
    model, feeds = single_node("LSTM", {"x": f32(5, 2, 4)}, inits, n_out=3, direction=direction, hidden_size=hidden,
                               order=["x", "W", "R", "B", "", "h0", "c0", "P"])
    assert_matches(model, feeds)
    assert {"W", "R", "B"} <= weight_initializers(model)
