"""Census MACs: exact against a hand count of the example models, within 1% of torch's FLOP counter."""

from __future__ import annotations

import importlib.util
from math import prod

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.graph.census import census
from hwopt.graph.load import load_model

torch = pytest.importorskip("torch")


def hand_count_macs(module: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs from layer shapes: conv = output pixels x Cout x (Cin/groups) x kernel area; linear = in x out.

    Forward hooks only report each layer's output size; the formula uses the layer's own weights' shape
    parameters, not the ONNX graph, so it checks the census independently.
    """
    total = 0

    def hook(layer, _inputs, output):
        nonlocal total
        if isinstance(layer, torch.nn.Conv2d):
            out_pixels = output.shape[2] * output.shape[3]
            total += out_pixels * layer.out_channels * (layer.in_channels // layer.groups) * prod(layer.kernel_size)
        elif isinstance(layer, torch.nn.Linear):
            total += prod(output.shape[:-1]) * layer.in_features * layer.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        module.eval()(torch.zeros(input_shape))
    for h in handles:
        h.remove()
    return total


def example_builders(examples_dir):
    spec = importlib.util.spec_from_file_location("train_examples", examples_dir / "train_examples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_model_macs_equal_hand_count(example_model, examples_dir) -> None:
    builders = example_builders(examples_dir)
    module = builders.MODELS[example_model.stem]()
    expected = hand_count_macs(module, builders.INPUT_SHAPE)
    c = census(load_model(example_model))
    assert c.macs == expected
    # every conv gets a bias on export (BatchNorm folds into it), so params = weights + one bias per output
    layers = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert c.params == sum(m.weight.numel() + m.weight.shape[0] for m in layers)
    assert c.inputs == {"input": [1, 3, 32, 32]} and c.outputs == {"logits": [1, 10]}


def _flop_counter_macs(module: torch.nn.Module, shape: tuple[int, ...]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros(shape))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_zoo_macs_within_one_percent_of_torch_flop_counter(name, tmp_path) -> None:
    from hwopt.models import build, export_onnx

    module, shape = build(name)
    export_onnx(module, tmp_path / "m.onnx", shape)
    ours = census(load_model(tmp_path / "m.onnx")).macs
    theirs = _flop_counter_macs(module, shape)
    assert abs(ours - theirs) <= 0.01 * theirs, (ours, theirs)


def test_matmul_gemm_and_conv_transpose_macs() -> None:
    """Ops the CNN examples lack: batched MatMul, Gemm with transB, ConvTranspose with groups."""
    w = numpy_helper.from_array(torch.zeros(16, 8).numpy(), "w")
    wt = numpy_helper.from_array(torch.zeros(4, 3, 2, 2).numpy(), "wt")  # (Cin, Cout/group, k, k), group 2
    nodes = [
        helper.make_node("MatMul", ["a", "b"], ["ab"]),
        helper.make_node("Gemm", ["g", "w"], ["gw"], transB=1),
        helper.make_node("ConvTranspose", ["t", "wt"], ["tt"], strides=[2, 2], group=2),
    ]
    graph = helper.make_graph(
        nodes, "ops",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4, 5, 6]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 4, 6, 7]),
         helper.make_tensor_value_info("g", TensorProto.FLOAT, [3, 8]),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("ab", TensorProto.FLOAT, [2, 4, 5, 7]),
         helper.make_tensor_value_info("gw", TensorProto.FLOAT, [3, 16]),
         helper.make_tensor_value_info("tt", TensorProto.FLOAT, [1, 6, 10, 10])],
        [w, wt],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    macs = {n.op: n.macs for n in census(model).nodes}
    assert macs["MatMul"] == 2 * 4 * 5 * 7 * 6
    assert macs["Gemm"] == 3 * 8 * 16
    assert macs["ConvTranspose"] == (4 * 5 * 5) * (3 * 2 * 2)  # each input element feeds Cout/group x k x k outputs


def test_qdq_scales_and_zero_points_are_not_counted_as_params():
    """A per-channel int8 weight counts once; its scales and zero points are metadata."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from hwopt.graph.census import census

    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.int8), "w_q")
    scale = numpy_helper.from_array(np.full(8, 0.1, np.float32), "w_scale")
    zero = numpy_helper.from_array(np.zeros(8, np.int8), "w_zero")
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], [w, scale, zero],
    )
    c = census(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert c.params == 8 * 3 * 3 * 3
    assert c.macs == 8 * 4 * 4 * 27
