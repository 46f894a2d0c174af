"""Census on real-export traits: Constant-node weights, -1 declared dims, shapes only a run reveals,
recurrent layers, and the committed PP-OCR classifier against an independent count."""

from __future__ import annotations

import importlib.util
from math import prod
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.api import inspect
from hwopt.graph.census import census, node_macs
from hwopt.graph.load import load_model
from hwopt.graph.shapes import with_outputs

_spec = importlib.util.spec_from_file_location("paddle_like", Path(__file__).with_name("paddle_like.py"))
paddle_like = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paddle_like)

PPOCR_CLS = Path(__file__).resolve().parents[1] / "data" / "ppocr_cls.onnx"


@pytest.mark.parametrize(("h", "w"), [(16, 16), (48, 192), (33, 17)])
def test_paddle_like_counts_are_exact_and_positive(h, w) -> None:
    c = census(paddle_like.paddle_like_model(), {"x": (1, 3, h, w)})
    assert c.macs == paddle_like.paddle_like_macs(h, w)
    # weights live in Constant nodes: conv 8x3x3x3 + bias 8 + 4 BN vectors of 8 + SE 8x8 + conv 8x8 + fc 8x4
    assert c.params == 216 + 8 + 32 + 64 + 64 + 32 and c.weight_bytes == 4 * c.params
    assert c.outputs == {"save_infer_model/scale_0.tmp_0": [1, 4]} and c.unresolved == []
    assert all(n.macs >= 0 and n.activation_bytes >= 0 for n in c.nodes)


def test_unknown_matrix_shapes_are_none_not_garbage() -> None:
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    assert node_macs(node, {"a": (1, 8)}) is None
    assert node_macs(node, {"a": (1, 8), "b": (8, 4), "y": (1, 4)}) == 32


def test_shapes_behind_float_shape_arithmetic_are_resolved() -> None:
    """A Reshape whose target is computed through float arithmetic (as paddle2onnx writes some):
    onnx's own inference cannot follow it; the fallbacks (symbolic inference, then one run) must."""
    w = numpy_helper.from_array(np.ones((12, 5), np.float32), "w")
    two = numpy_helper.from_array(np.array([2.0], np.float32), "two")
    minus = numpy_helper.from_array(np.array([-1], np.int64), "minus")
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["sf", "zero", "one"], ["n"]),
        helper.make_node("Div", ["n", "two"], ["half"]),
        helper.make_node("Cast", ["half"], ["hi"], to=TensorProto.INT64),
        helper.make_node("Concat", ["hi", "minus"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["y"]),
    ]
    inits = [w, two, minus, numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    c = census(model, {"x": (4, 6)})
    assert c.macs == 2 * 5 * 12 and c.outputs["y"] == [2, 5] and c.unresolved == []


def test_lstm_macs_count_every_gate_and_direction() -> None:
    seq, batch, inp, hid = 7, 1, 5, 3
    w = numpy_helper.from_array(np.zeros((2, 4 * hid, inp), np.float32), "W")
    r = numpy_helper.from_array(np.zeros((2, 4 * hid, hid), np.float32), "R")
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=hid, direction="bidirectional")
    graph = helper.make_graph([node], "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, inp])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, r])
    c = census(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8))
    assert c.macs == seq * batch * 2 * 4 * hid * (inp + hid)


def test_integer_ops_of_an_already_quantized_model_are_counted() -> None:
    c = census(paddle_like.quantized_model())
    assert c.macs == 2 * 6 * 6 * 9 and c.params == 2 * 9


def _runtime_macs(path: Path, shape: tuple[int, ...]) -> int:
    """Independent count: Conv/MatMul output sizes from an onnxruntime run (not shape inference)
    times the reduction size read from each node's weight."""
    model = load_model(path)
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant"}
    consts |= {t.name: t for t in model.graph.initializer}
    mats = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul")]
    sess = ort.InferenceSession(with_outputs(model, [n.output[0] for n in mats]).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": np.zeros(shape, np.float32)})))
    total = 0
    for n in mats:
        w = tuple(consts[n.input[1]].dims)
        total += outs[n.output[0]].size * (prod(w[1:]) if n.op_type == "Conv" else w[0])
    return total


def test_ppocr_cls_macs_match_an_independent_count_and_weights_are_found() -> None:
    c = inspect(PPOCR_CLS, shapes={"x": (1, 3, 48, 192)})
    assert c.macs == _runtime_macs(PPOCR_CLS, (1, 3, 48, 192)) == 16_315_376
    assert c.params > 100_000 and c.outputs == {"save_infer_model/scale_0.tmp_1": [1, 2]}
    assert sum(g["prunable"] for g in c.groups) > 10  # groups are found on the Constant-weight export too
