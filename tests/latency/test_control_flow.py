"""Latency of models whose layers sit inside If/Loop (silero-vad: the whole network in one If).

Before: an If node was priced as one elementwise op on its output, so silero-vad predicted
0.038 ms against 0.116 ms measured, with nothing saying why.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.latency.predict import predict_latency

TARGET, RUNTIME = "x86-avx512", "onnxruntime"
CONVS = 3


def _convs(prefix: str, channels: int, x: str = "x") -> tuple[list[onnx.NodeProto], str]:
    """`CONVS` 3x3 convs + Relu on `x` (1x16x32x32), weights in Constant nodes as exporters write them."""
    rng = np.random.default_rng(0)
    nodes, cur, cin = [], x, 16
    for i in range(CONVS):
        w = rng.standard_normal((channels, cin, 3, 3)).astype(np.float32)
        nodes += [helper.make_node("Constant", [], [f"{prefix}w{i}"], value=numpy_helper.from_array(w)),
                  helper.make_node("Conv", [cur, f"{prefix}w{i}"], [f"{prefix}c{i}"], name=f"{prefix}conv{i}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"{prefix}c{i}"], [f"{prefix}r{i}"], name=f"{prefix}relu{i}")]
        cur, cin = f"{prefix}r{i}", channels
    return nodes, cur


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], out: str) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, None, 32, 32])
    graph = helper.make_graph(nodes, "g", [x, *inputs], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def plain_model(channels: int = 32) -> onnx.ModelProto:
    nodes, out = _convs("p", channels)
    return _model(nodes, [], out)


def if_model(cond: bool | None = None) -> onnx.ModelProto:
    """The convs of `plain_model` in the then branch, 8-channel ones in the else branch; the
    condition is a graph input, or a Constant when `cond` is given."""
    def branch(prefix: str, channels: int) -> onnx.GraphProto:
        nodes, out = _convs(prefix, channels)
        nodes.append(helper.make_node("Identity", [out], [f"{prefix}y"]))
        return helper.make_graph(nodes, prefix, [], [helper.make_tensor_value_info(f"{prefix}y", TensorProto.FLOAT, None)])

    nodes = [helper.make_node("If", ["cond"], ["y"], name="If_0", then_branch=branch("t", 32),
                              else_branch=branch("e", 8))]
    if cond is None:
        return _model(nodes, [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])], "y")
    const = helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(cond)))
    return _model([const, *nodes], [], "y")


def loop_model(trips: int) -> onnx.ModelProto:
    """The convs of `plain_model` as a Loop body run `trips` times (a Constant trip count)."""
    nodes, out = _convs("b", 16, x="xin")
    nodes.append(helper.make_node("Identity", ["cin"], ["cout"]))
    body = helper.make_graph(nodes, "body", [
        helper.make_tensor_value_info("i", TensorProto.INT64, []),
        helper.make_tensor_value_info("cin", TensorProto.BOOL, []),
        helper.make_tensor_value_info("xin", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cout", TensorProto.BOOL, []),
         helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])
    top = [helper.make_node("Constant", [], ["M"], value=numpy_helper.from_array(np.array(trips, np.int64))),
           helper.make_node("Constant", [], ["go"], value=numpy_helper.from_array(np.array(True))),
           helper.make_node("Loop", ["M", "go", "x"], ["y"], name="Loop_0", body=body)]
    return _model(top, [], "y")


def test_convs_inside_an_if_cost_what_they_cost_outside() -> None:
    plain = predict_latency(plain_model(), TARGET, RUNTIME)
    branchy = predict_latency(if_model(), TARGET, RUNTIME)
    assert 0.7 < branchy.latency_ms / plain.latency_ms < 1.5
    convs = [lay for lay in branchy.layers if lay.op == "Conv"]
    assert [lay.name for lay in convs] == ["tconv0", "tconv1", "tconv2"]  # the dearer branch, not both
    assert all(lay.source == "fallback" and lay.note.startswith("control flow: If_0 branch then_branch")
               for lay in convs)
    assert branchy.provenance["control_flow"]


@pytest.mark.parametrize("cond,prefix", [(True, "t"), (False, "e")])
def test_a_constant_condition_selects_its_branch(cond: bool, prefix: str) -> None:
    pred = predict_latency(if_model(cond), TARGET, RUNTIME)
    assert {lay.name[0] for lay in pred.layers if lay.op == "Conv"} == {prefix}
    assert all("constant condition" in lay.note for lay in pred.layers)


def test_a_loop_body_counts_once_per_trip() -> None:
    once = predict_latency(loop_model(1), TARGET, RUNTIME)
    thrice = predict_latency(loop_model(3), TARGET, RUNTIME)
    body_ms = sum(lay.latency_ms for lay in once.layers)
    assert body_ms > 0 and sum(lay.latency_ms for lay in thrice.layers) == pytest.approx(3 * body_ms)
    assert all("Loop_0 body x3" in lay.note for lay in thrice.layers)


def test_predict_command_prints_the_control_flow_note(tmp_path):
    from typer.testing import CliRunner

    from hwopt.cli import app
    from hwopt.graph.load import save_model

    path = tmp_path / "if.onnx"
    save_model(if_model(), path)
    res = CliRunner().invoke(app, ["predict", str(path), "--target", TARGET, "--runtime", RUNTIME])
    assert res.exit_code == 0, res.output
    assert "note: control flow: If_0 branch then_branch" in " ".join(res.output.split())
