"""Profiling a small table here, resuming it, and predicting from it (table / predictor / fallback)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwopt.errors import HwoptError
from hwopt.latency import extract_kernels, load_table, predict_kernels, predict_latency, profile_table
from hwopt.latency.kernels import Kernel
from hwopt.latency.profiler import (
    _calibration, choose_calibration, measure_model, network_levels, read_samples, retime_profile, samples_path,
)
from hwopt.latency.table import calibration_class


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    """A 10-network onnxruntime profile (fp32 + int8): hundreds of kernels, enough for the predictor."""
    out = tmp_path_factory.mktemp("prof") / "x86-avx512-onnxruntime.json"
    return profile_table("x86-avx512", "onnxruntime", out, budget_min=3, max_samples=10), out


def test_profile_writes_table_predictor_and_samples(small_table):
    table, out = small_table
    assert out.is_file() and out.with_suffix(".joblib").is_file()
    doc = json.loads(out.read_text())
    assert doc["method"] == "measured" and doc["threads"] == 1
    assert doc["provenance"]["runtime_version"] and doc["provenance"]["measured_on"]
    assert len(doc["entries"]) >= 10
    dtypes = {e["dtype"] for e in doc["entries"].values()}
    assert dtypes == {"fp32", "int8"}
    assert all(e["ms"] > 0 for e in doc["entries"].values())
    assert table.overhead_ms > 0 and table.provenance["networks"] >= 8
    for line in out.with_suffix(".samples.jsonl").read_text().splitlines()[1:]:
        rec = json.loads(line)  # every network's kernels share out its measured time (less the session's)
        if rec["kind"].startswith("net-"):
            assert len(rec["kernel_ms"]) == len(rec["kernels"])
            assert sum(rec["kernel_ms"]) <= rec["ms"] + 1e-3 * len(rec["kernels"])


def test_resume_keeps_earlier_samples(small_table, tmp_path):
    _, out = small_table
    samples = out.with_suffix(".samples.jsonl")
    n_before = len(samples.read_text().splitlines())
    copy = tmp_path / "t.json"
    copy.with_suffix(".samples.jsonl").write_text(samples.read_text() + '{"torn": ')  # killed mid-write
    profile_table("x86-avx512", "onnxruntime", copy, budget_min=3, max_samples=n_before + 1)
    lines = copy.with_suffix(".samples.jsonl").read_text().splitlines()
    sids = [json.loads(x)["sid"] for x in lines if x.startswith("{") and x.endswith("}")]
    assert len(sids) == len(set(sids))  # nothing measured twice
    assert len(sids) >= n_before


def test_a_gzipped_log_rebuilds_the_same_table_and_grows_in_place(small_table, tmp_path):
    """The shipped tables keep their log gzipped: it rebuilds the same table, a run that adds
    networks appends to it (no plain log appears), and a gzip log cut mid-write is repaired."""
    table, out = small_table
    copy = tmp_path / "t.json"
    packed = tmp_path / "t.samples.jsonl.gz"
    packed.write_bytes(gzip.compress(out.with_suffix(".samples.jsonl").read_bytes()))
    assert samples_path(copy) == packed
    rebuilt = profile_table("x86-avx512", "onnxruntime", copy, budget_min=0)
    assert rebuilt.entries == table.entries
    n_before = len(read_samples(packed))
    whole = packed.read_bytes()
    packed.write_bytes(whole[: len(whole) - 20])  # killed while writing the gzip member
    profile_table("x86-avx512", "onnxruntime", copy, budget_min=3, max_samples=n_before)
    assert not copy.with_suffix(".samples.jsonl").exists()
    records = read_samples(packed)
    assert n_before - 2 <= len(records) <= n_before + 1 and all("sid" in r for r in records.values())


def test_table_hit_predictor_and_fallback_sources(small_table, net):
    _, out = small_table
    table = load_table(out)  # as written: the file rounds entries and overhead to 1 ns
    key, ms = next(iter(table.entries.items()))
    hit = predict_kernels([table.kernels[key]], "x86-avx512", "onnxruntime", table=out)
    assert hit.layers[0].source == "table"
    expected = table.kernel_scale * ms + table.kernel_overhead_ms
    assert hit.layers[0].latency_ms == pytest.approx(expected)
    pred = predict_latency(net, "x86-avx512", "onnxruntime", table=out)
    assert pred.latency_ms > 0 and {"table", "predictor"} & set(pred.sources)
    assert pred.latency_ms == pytest.approx(sum(x.latency_ms for x in pred.layers) + table.overhead_ms)


def test_op_the_table_lacks_still_gets_a_fallback_prediction(small_table):
    _, out = small_table
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 32])
    g = helper.make_graph([helper.make_node("LpNormalization", ["x"], ["y"], name="lp", axis=-1)], "g", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    pred = predict_latency(model, "x86-avx512", "onnxruntime", table=out)
    assert [layer.source for layer in pred.layers] == ["fallback"]
    assert pred.latency_ms > 0


def test_bigger_kernel_is_measured_and_predicted_slower(small_table, make_net):
    _, out = small_table
    small, big = make_net(res=8), make_net(res=64)
    assert measure_model(big, "onnxruntime") > 4 * measure_model(small, "onnxruntime")
    p_small = predict_latency(small, "x86-avx512", "onnxruntime", table=out).latency_ms
    p_big = predict_latency(big, "x86-avx512", "onnxruntime", table=out).latency_ms
    assert p_big > 4 * p_small


def test_predict_kernels_is_fast_enough_for_a_search(small_table, make_net):
    _, out = small_table
    kernels = []
    for r in (8, 16, 24, 32, 40, 48):
        kernels += extract_kernels(make_net(res=r), "onnxruntime")
    assert len(kernels) >= 50
    predict_kernels(kernels, "x86-avx512", "onnxruntime", table=out)  # warm the caches
    t0 = time.process_time()  # CPU time: wall time on a shared machine measures the neighbours
    for _ in range(20):
        predict_kernels(kernels, "x86-avx512", "onnxruntime", table=out)
    assert (time.process_time() - t0) / 20 < 0.005


def test_targets_without_hardware_here_cannot_be_profiled(tmp_path):
    with pytest.raises(HwoptError, match="not present here"):
        profile_table("rpi4", "litert", tmp_path / "t.json", budget_min=0.01)
    with pytest.raises(HwoptError, match="has no runtime 'tensorrt'"):
        profile_table("x86-avx512", "tensorrt", tmp_path / "t.json", budget_min=0.01)


def test_unknown_target_and_wrong_runtime_are_clear_errors(net):
    with pytest.raises(HwoptError, match="unknown target 'nosuch'"):
        predict_latency(net, "nosuch")
    with pytest.raises(HwoptError, match="has no runtime 'openvino'"):
        predict_latency(net, "rpi4", "openvino")


def test_input_model_is_not_modified(small_table, net):
    _, out = small_table
    before = net.SerializeToString()
    predict_latency(net, "x86-avx512", "onnxruntime", table=out)
    assert net.SerializeToString() == before
    assert isinstance(net, onnx.ModelProto)


def test_retime_rescales_networks_to_their_fastest_pass(small_table, tmp_path):
    _, out = small_table
    copy = tmp_path / "r.json"
    copy.with_suffix(".samples.jsonl").write_text(out.with_suffix(".samples.jsonl").read_text())
    n = retime_profile(copy, "onnxruntime", passes=2)
    assert n >= 5  # the current generator rebuilds the seed-0 networks it recorded
    records = [json.loads(x) for x in copy.with_suffix(".samples.jsonl").read_text().splitlines()]
    retimed = [r for r in records if r["kind"] == "retime"]
    assert len(retimed) == n and all(r["ms"] > 0 and r["passes"] == 2 for r in retimed)
    probes = [r for r in records if r["kind"] == "probe"]  # the speed probe ran in the same passes
    assert len(probes) == 1 and probes[0]["ms"] > 0 and probes[0]["passes"] == 2
    table = profile_table("x86-avx512", "onnxruntime", copy, budget_min=0)
    level = table.provenance["machine_level"]
    assert level["retimed_networks"] == n
    assert table.provenance["speed_probe"]["ms"] == probes[0]["ms"]
    nets = {r["sid"]: r for r in records if r["kind"].startswith("net-")}
    factors, _ = network_levels(records)
    for r in retimed:  # never slower than recorded: the profile's own timing counts as a pass
        assert factors[r["net"]] == pytest.approx(min(r["ms"] / nets[r["net"]]["ms"], 1.0))
    before = copy.with_suffix(".samples.jsonl").read_text()
    assert retime_profile(copy, "onnxruntime", passes=1, seeds=[7]) == 0  # no such profile run
    assert retime_profile(copy, "onnxruntime", passes=1, seeds=[0]) == n
    added = [json.loads(x) for x in copy.with_suffix(".samples.jsonl").read_text()[len(before):].splitlines()]
    assert len(added) == n and {r["kind"] for r in added} == {"retime"}  # no probe: not every run was re-timed


def _net_record(sid: int, ms: float, kernel_ms: list[float]) -> dict:
    relu = Kernel("Relu", ((1, 8, 4, 4),), (1, 8, 4, 4)).to_dict()
    conv = Kernel("Conv", ((1, 8, 4, 4),), (1, 8, 4, 4), (8, 8, 3, 3), (3, 3)).to_dict()
    return {"sid": sid, "kind": "net-fp32", "ms": ms, "kernels": [relu, conv][:len(kernel_ms)], "kernel_ms": kernel_ms}


def test_network_levels_place_runs_without_retiming_through_shared_kernels():
    records = [_net_record(1, 2.0, [0.5, 1.5]), _net_record(2, 2.0, [0.5, 1.5]),
               {"sid": -1, "kind": "retime", "net": 1, "ms": 1.5}, {"sid": -2, "kind": "retime", "net": 2, "ms": 3.0},
               _net_record(1_000_001, 4.0, [1.0, 3.0])]  # seed 1 ran while the machine was twice as slow
    levels, info = network_levels(records)
    assert levels[1] == pytest.approx(0.75) and levels[2] == pytest.approx(1.0)
    assert levels[1_000_001] == pytest.approx(np.median([0.75, 1.0]) / 2)
    assert info["retimed_networks"] == 2
    assert network_levels(records[:2])[0] == {1: 1.0, 2: 1.0}  # nothing re-timed: nothing changes


def test_predictor_calibration_comes_from_unseen_kernels_per_class(small_table):
    dw = Kernel("Conv", ((1, 32, 16, 16),), (1, 32, 16, 16), (32, 1, 3, 3), (3, 3), groups=32)
    tiny = Kernel("Conv", ((1, 32, 2, 2),), (1, 32, 2, 2), (32, 1, 3, 3), (3, 3), groups=32)
    gemm = Kernel("Gemm", ((1, 64),), (1, 10), (64, 10))
    guesses = [(0, dw, 2.0, 1.0)] * 40 + [(0, tiny, 1.0, 1.0)] * 10 + [(0, gemm, 1.0, 3.0)] * 5
    cal = _calibration(guesses)
    assert calibration_class(dw) == calibration_class(tiny, coarse=True) != calibration_class(tiny)
    assert cal[calibration_class(dw)] == pytest.approx(50 / 90)  # each kernel counted once
    assert calibration_class(tiny) not in cal  # too few of its own: it falls back to its coarse class
    assert calibration_class(gemm) not in cal
    table, _ = small_table
    table = dataclasses.replace(table, predictor_calibration={**cal, calibration_class(tiny): 0.25})
    got = table.calibrated([dw, tiny, gemm], np.ones(3))
    assert got == pytest.approx([50 / 90, 0.25, 1.0])


def test_calibration_is_kept_only_for_the_precision_it_helps_out_of_fold():
    """fp32 guesses: right for 30 networks, 4x too slow for 4 (calibrating them by the ratio of sums
    would spoil the 30); int8 guesses: all 2x too slow. Only the int8 classes' calibration pays."""
    fp32 = Kernel("Conv", ((1, 8, 8, 8),), (1, 8, 8, 8), (8, 8, 3, 3), (3, 3))
    int8 = dataclasses.replace(fp32, dtype="int8")
    n = 64
    t = np.random.default_rng(0).uniform(0.5, 2.0, n)  # each network's measured ms (one kernel each)
    guesses = ([(i, fp32, t[i], t[i]) for i in range(30)] + [(i, fp32, 4 * t[i], t[i]) for i in range(30, 34)]
               + [(i, int8, 2 * t[i], t[i]) for i in range(34, n)])
    chosen, cal, fits = choose_calibration(np.zeros(n), guesses, t, np.ones(n), 0.0)
    assert chosen == "calibrated_int8_only"
    assert cal == {calibration_class(int8): pytest.approx(0.5),
                   calibration_class(int8, coarse=True): pytest.approx(0.5)}
    assert fits["calibrated_int8_only"]["mean"] < min(fits[k]["mean"] for k in fits if k != chosen)
