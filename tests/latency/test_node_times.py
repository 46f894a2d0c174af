"""In-context kernel times: runtime profiler events charged to hwopt's kernels, training networks."""

from __future__ import annotations

import numpy as np
import pytest

from hwopt.graph.shapes import random_inputs, resolve_input_shapes
from hwopt.latency import extract_kernels
from hwopt.latency.builders import GraphBuilder
from hwopt.latency.fusion import clear_cut_cache
from hwopt.latency.kernels import Kernel
from hwopt.latency.networks import (
    DEEP_FROM_SEED,
    MAX_MACS,
    WIDE_STEMS_FROM_SEED,
    deep_share,
    network_macs,
    stem_kernels,
    training_network,
)
from hwopt.latency.node_times import event_times, kernel_times, owner_of
from hwopt.runtimes import get_runtime


def _k(*nodes: str) -> Kernel:
    return Kernel("Relu", ((1, 8),), (1, 8), nodes=nodes)


def test_event_names_map_to_the_kernel_of_their_node():
    owners = {"conv_3": 0, "relu_4": 0, "conv_31": 1, "mul_5": 2}
    assert owner_of("relu_4_nchwc", owners) == 0  # onnxruntime: FusedConv named after its last node
    assert owner_of("conv_31_token_30", owners) == 1  # QLinearConv: the longest node-name prefix wins
    assert owner_of("conv_3/WithoutBiases", owners) == 0  # OpenVINO
    assert owner_of("mul_5/QuickGeluFusion/", owners) == 2
    assert owner_of("conv_310", owners) is None  # a prefix must end at a separator
    assert owner_of("ReorderInput_token_5", owners) is None


def test_unmatched_events_go_to_the_next_kernel_and_the_floor_comes_off():
    kernels = [_k("a"), _k("b"), _k("c")]
    events = [("ReorderInput", 5.0), ("a", 12.0), ("b_nchwc", 3.0), ("ReorderOutput", 4.0), ("c", 6.0), ("tail", 2.0)]
    ms, unmatched = kernel_times(kernels, events, floor_us=1.0)
    assert unmatched == 2 + 1
    assert ms == pytest.approx(np.array([4.0 + 11.0, 2.0, 3.0 + 5.0 + 1.0]) / 1e3)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_real_profile_charges_the_convs_most(runtime):
    if not get_runtime(runtime).available():
        pytest.skip(f"{runtime} not installed")
    g = GraphBuilder((1, 16, 32, 32))
    y = g.conv(g.input, 64, 3, act="Relu")
    y = g.conv(y, 64, 3, g=64, act="Relu")
    y = g.gemm(g.flatten(g.global_pool(y)), 10)
    model = g.build([y])
    kernels = extract_kernels(model, runtime)
    events = event_times(model, runtime, random_inputs(model, resolve_input_shapes(model, None)), 8)
    ms, _ = kernel_times(kernels, events)
    assert [k.op for k in kernels][:2] == ["Conv", "Conv"]
    assert ms[0] == ms.max() and ms.sum() > 0


def test_training_networks_are_seeded_and_bounded():
    a = training_network(np.random.default_rng(3), False, 3)
    b = training_network(np.random.default_rng(3), False, 3)
    assert a.SerializeToString() == b.SerializeToString()
    q = training_network(np.random.default_rng(3), True, 3)
    assert any(n.op_type == "DequantizeLinear" for n in q.graph.node)
    sizes = [network_macs(extract_kernels(training_network(np.random.default_rng(s), False, s), "openvino"))
             for s in range(6)]
    assert min(sizes) > 0 and sum(m <= MAX_MACS for m in sizes) >= 1  # the profiler skips the draws too big


def test_later_profile_seeds_also_draw_wide_stems_and_earlier_streams_are_unchanged():
    def stem(model):
        return next(k for k in extract_kernels(model, "openvino") if k.op == "Conv").kernel[0]

    assert stem_kernels(WIDE_STEMS_FROM_SEED - 1) == (3,) and {5, 7} <= set(stem_kernels(WIDE_STEMS_FROM_SEED))
    for s in range(4):  # one stem size draws nothing from the rng: the shipped tables' networks can be rebuilt
        old = training_network(np.random.default_rng(s), False, s)
        assert training_network(np.random.default_rng(s), False, s, (3,)).SerializeToString() == old.SerializeToString()
        assert stem(old) == 3
    wide = {stem(training_network(np.random.default_rng(s), False, s, stem_kernels(WIDE_STEMS_FROM_SEED)))
            for s in range(12)}
    assert {3, 5, 7} <= wide


def test_later_profile_seeds_also_draw_deep_networks_ending_in_small_wide_maps():
    """Deep draws reach the 2x2-4x4 maps with wide channels where classifiers end (the shallow ones
    rarely do), and a share of 0 leaves the earlier seeds' streams as they were."""
    def late_convs(model):
        return sum(k.op == "Conv" and k.output[2] <= 4 and k.output[1] >= 96 and k.kernel[0] == 3
                   for k in extract_kernels(model, "openvino"))

    assert deep_share(DEEP_FROM_SEED - 1) == 0 and deep_share(DEEP_FROM_SEED) > 0
    for s in range(3):
        old = training_network(np.random.default_rng(s), False, s)
        assert training_network(np.random.default_rng(s), False, s, (3,), 0.0).SerializeToString() == \
            old.SerializeToString()
    shallow = sum(late_convs(training_network(np.random.default_rng(s), False, s)) for s in range(12))
    deep = sum(late_convs(training_network(np.random.default_rng(s), False, s, (3,), 1.0)) for s in range(12))
    assert deep > 2 * max(shallow, 1)


def test_cut_is_cached_by_structure_not_weights(net, make_net):
    clear_cut_cache()
    first = extract_kernels(net, "onnxruntime")
    other = type(net)()
    other.CopyFrom(net)
    w = other.graph.initializer[0]
    w.raw_data = bytes(len(w.raw_data))  # same structure, other weights: same cut, from the cache
    assert extract_kernels(other, "onnxruntime") == first
    assert extract_kernels(make_net(res=32), "onnxruntime") != first  # other shapes: a new cut
