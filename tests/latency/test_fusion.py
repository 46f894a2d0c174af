"""Kernel detection: each runtime's fusion rules decide how a graph is cut into kernels."""

from __future__ import annotations

import pytest

from hwopt.errors import HwoptError
from hwopt.latency import FUSION_RULES, Kernel, extract_kernels


def _by_op(kernels):
    return [(k.op, k.fused) for k in kernels]


def test_onnxruntime_fuses_bn_residual_add_and_relu(net):
    ks = extract_kernels(net, "onnxruntime")
    ops = _by_op(ks)
    assert ops[0] == ("Conv", ("Relu",))  # BatchNorm folded, not listed
    assert ops[1] == ("Conv", ("Add", "Relu"))
    # onnxruntime 1.32's optimized graph runs Conv + HardSwish as one FusedConv
    assert ("Conv", ("HardSwish",)) in ops and not any(k.op == "HardSwish" for k in ks)
    assert not any(k.op == "BatchNormalization" for k in ks)


def test_onnxruntime_keeps_clip_after_a_residual_add_separate():
    """Its NCHWc Conv + Add fusion takes a Relu after the Add, nothing else (Relu6 is a Clip node)."""
    from hwopt.latency.builders import GraphBuilder

    g = GraphBuilder((1, 16, 8, 8))
    y = g.conv(g.input, 16, 3)
    y = g.conv(y, 16, 3, act="Relu6", residual=y)
    ops = _by_op(extract_kernels(g.build([y]), "onnxruntime"))
    assert ops == [("Conv", ()), ("Conv", ("Add",)), ("Clip", ())]
    assert _by_op(extract_kernels(g.build([y]), "openvino"))[1] == ("Conv", ("Add", "Clip"))


def test_litert_keeps_residual_add_separate(net):
    ops = _by_op(extract_kernels(net, "litert"))
    assert ops[1] == ("Conv", ())
    assert ops[2] == ("Add", ("Relu",))


def test_openvino_fuses_any_activation_and_swish_diamond(net):
    ks = extract_kernels(net, "openvino")
    ops = _by_op(ks)
    assert ("Conv", ("HardSwish", "Swish")) in ops  # depthwise conv + HardSwish + x*sigmoid(x) chain
    assert not any(k.op == "Sigmoid" for k in ks)
    covered = [n for k in ks for n in k.nodes]
    assert len(covered) == len(set(covered))  # no node counted twice


def test_every_node_is_covered_once(net):
    for rt in FUSION_RULES:
        ks = extract_kernels(net, rt)
        covered = [n for k in ks for n in k.nodes]
        assert len(covered) == len(set(covered)), rt
        compute = {n.name for n in net.graph.node if n.op_type not in ("Flatten",)}
        assert set(covered) == compute, rt


def test_qdq_model_gives_int8_kernels_without_qdq_nodes(net_int8):
    ks = extract_kernels(net_int8, "onnxruntime")
    assert all(k.op not in ("QuantizeLinear", "DequantizeLinear") for k in ks)
    convs = [k for k in ks if k.op == "Conv"]
    assert convs and all(k.dtype == "int8" for k in convs)
    # int8 on onnxruntime: QLinearConv then QLinearAdd, so the residual Add is not fused
    assert any(k.op == "Add" for k in ks)


def test_kernel_key_is_readable_and_round_trips(net):
    k = extract_kernels(net, "onnxruntime")[1]
    assert k.key == "Conv|in=1x16x16x16|out=1x16x16x16|w=16x16x3x3|k=3x3|s=1|g=1|fp32|fused=Add+Relu"
    assert Kernel.from_dict(k.to_dict()) == k
    assert k.flops == pytest.approx(2 * 16 * 16 * 16 * 16 * 9 + 2 * 16 * 16 * 16)


def test_depthwise_and_pointwise_families(net):
    fams = {k.family for k in extract_kernels(net, "onnxruntime")}
    assert {"conv", "dwconv", "gemm", "gpool"} <= fams


def test_unknown_runtime_is_a_clear_error(net):
    with pytest.raises(HwoptError, match="no fusion rules for runtime 'tflite'"):
        extract_kernels(net, "tflite")
