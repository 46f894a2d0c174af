"""Channel groups on the model zoo: exact removal of zeroed channels, barriers, odd exports."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from hwopt.models.export import export_onnx
from hwopt.models.zoo import ZOO
from hwopt.pruning import apply_pruning, build_groups, describe_groups, prepare_model



@pytest.mark.parametrize("name", sorted(ZOO))
def test_zeroed_channels_prune_exactly(zoo_model, name, run_model, zero):
    """(a) zero chosen channels in every member of every group, prune exactly those: same outputs."""
    _, proto, shape = zoo_model(name)
    model = prepare_model(proto)
    groups = build_groups(model, prepared=True)
    prunable = [g for g in groups if g.prunable]
    assert prunable, f"{name}: no prunable group"
    rng = np.random.default_rng(0)
    keep, zeroed = {}, model
    for g in prunable:
        drop = rng.choice(g.free, size=max(1, min(len(g.free), g.channels - 1) // 3), replace=False)
        keep[g.id] = np.setdiff1d(np.arange(g.channels), drop)
        zeroed = zero(zeroed, g, drop)
    pruned = apply_pruning(zeroed, keep, groups)
    x = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(run_model(pruned, x), run_model(zeroed, x), atol=1e-5)
    params = lambda m: sum(int(np.prod(t.dims)) for t in m.graph.initializer)  # noqa: E731
    assert params(pruned) < params(zeroed)


def test_transformer_head_dims_and_mlp_are_grouped(zoo_model):
    _, proto, _ = zoo_model("transformer_encoder")
    groups = build_groups(proto)
    sizes = sorted(g.channels for g in groups if g.prunable)
    # per layer: q/k head dim (16), v head dim (16), MLP hidden (256); residual stream fixed by LayerNorm
    assert sizes == [16, 16, 16, 16, 256, 256]
    fixed = [g for g in groups if not g.prunable]
    assert any("LayerNormalization" in g.reason() for g in fixed)


def test_grouped_conv_prunes_whole_groups(zoo_model):
    _, proto, _ = zoo_model("grouped_conv_net")
    groups = build_groups(proto)
    assert sorted(g.channels for g in groups if any(m.role == "conv_groups" for m in g.members)) == [4, 4, 4]


def _tiny(in_ch=3):
    return nn.Sequential(nn.Conv2d(in_ch, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())


def test_unknown_op_is_a_barrier_not_a_corrupt_graph():
    """(c) a custom op between two convs fixes its channels; other groups stay prunable."""
    w1 = numpy_helper.from_array(np.random.rand(8, 3, 3, 3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(np.random.rand(8, 8, 3, 3).astype(np.float32), "w2")
    w3 = numpy_helper.from_array(np.random.rand(4, 8, 1, 1).astype(np.float32), "w3")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("LRN", ["a"], ["b"], size=3),
        helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["d"]),
        helper.make_node("Conv", ["d", "w3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, w2, w3],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    desc = describe_groups(model)
    by_member = {tuple(d["members"]): d for d in desc}
    assert not by_member[("Conv_0",)]["prunable"]  # LRN mixes channels: no rule
    assert "LRN" in by_member[("Conv_0",)]["reason"]
    assert by_member[("Conv_2", "Conv_4")]["prunable"]
    assert not by_member[("Conv_4",)]["prunable"]  # graph output


def test_constant_node_weights_and_opset11(tmp_path, run_model):
    """Weights held in Constant nodes (opset 11 export) are found and pruned like initializers."""
    torch.manual_seed(0)
    module = _tiny()
    proto = export_onnx(module, tmp_path / "m.onnx", (1, 3, 8, 8), opset=11)
    as_constants = onnx.ModelProto()
    as_constants.CopyFrom(proto)
    nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in as_constants.graph.initializer]
    del as_constants.graph.initializer[:]
    for n in reversed(nodes):
        as_constants.graph.node.insert(0, n)
    onnx.checker.check_model(as_constants)
    groups = build_groups(as_constants)
    g = next(g for g in groups if g.prunable)
    pruned = apply_pruning(as_constants, {g.id: [0, 2, 4]}, groups)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert run_model(pruned, x).shape == run_model(as_constants, x).shape
    assert [o for o in pruned.opset_import if o.domain == ""][0].version >= 13
