"""The guard's decision under timing noise, on fake interleaved timings (no model is run).

A candidate displaces a faster-looking one only if it wins most rounds by more than the noise;
within the noise the smaller accuracy drop, then the simpler deployment wins, and nothing slower
than the float baseline is returned.
"""

from __future__ import annotations

import numpy as np
import pytest

from hwopt.pipeline.guard import MIN_MARGIN, choose, clearly_faster, relative_spread


def _rec(name, rounds, *, drop=0.0, precision="int8", runtime="openvino"):
    return {"name": name, "runtime": runtime, "precision": precision, "status": "ok", "accuracy": 90 - drop,
            "accuracy_drop": drop, "latency_ms": float(np.median(rounds)), "latency_rounds_ms": list(rounds)}


def _prefer_openvino(rec):
    return (rec["runtime"] == "openvino",)


ORT_FP32 = _rec("onnxruntime-fp32", [0.174, 0.176, 0.173, 0.175, 0.174], precision="fp32", runtime="onnxruntime")


def test_a_noisy_lead_does_not_displace_the_float_baseline():
    # the mobilenet_digits case: bf16 looks faster by its median but wins only 2 of 5 rounds
    bf16 = _rec("openvino-bf16", [0.150, 0.240, 0.168, 0.251, 0.160], precision="bf16")
    assert bf16["latency_ms"] < ORT_FP32["latency_ms"] and not clearly_faster(bf16, ORT_FP32)
    v = choose([ORT_FP32, bf16], ORT_FP32, 1.0, None, prefer=_prefer_openvino)
    assert v.chosen == "onnxruntime-fp32" and v.rule == "simpler-precision" and v.budget_met
    assert set(v.within_noise) == {"onnxruntime-fp32", "openvino-bf16"} and "timing noise" in v.reason


def test_winning_every_round_by_less_than_the_margin_is_a_tie():
    int8 = _rec("openvino-int8-minmax", [x * (1 - MIN_MARGIN / 2) for x in ORT_FP32["latency_rounds_ms"]])
    assert sum(a < b for a, b in zip(int8["latency_rounds_ms"], ORT_FP32["latency_rounds_ms"])) == 5
    v = choose([ORT_FP32, int8], ORT_FP32, 1.0, None)
    assert v.chosen == "onnxruntime-fp32"


def test_a_clear_win_is_kept():
    fp32 = _rec("onnxruntime-fp32", [3.90, 3.95, 3.88, 4.10, 3.92], precision="fp32", runtime="onnxruntime")
    int8 = _rec("openvino-int8-minmax", [1.33, 1.31, 1.36, 1.32, 1.40], drop=0.33)
    v = choose([fp32, int8], fp32, 1.0, None)
    assert v.chosen == "openvino-int8-minmax" and v.rule == "fastest" and v.reason.startswith("fastest candidate")
    assert v.within_noise == ["openvino-int8-minmax"]


def test_within_noise_the_smaller_drop_wins():
    fp32 = _rec("onnxruntime-fp32", [3.90, 3.95, 3.88, 4.10, 3.92], precision="fp32", runtime="onnxruntime")
    minmax = _rec("openvino-int8-minmax", [1.32, 1.35, 1.31, 1.36, 1.33], drop=0.33)
    percentile = _rec("openvino-int8-percentile", [1.34, 1.33, 1.35, 1.34, 1.36], drop=0.0)
    v = choose([fp32, minmax, percentile], fp32, 1.0, None)
    assert v.chosen == "openvino-int8-percentile" and v.rule == "smaller-drop"
    assert "0.00 vs 0.33" in v.reason
    # the same pair, but the smaller-drop one is clearly slower: speed wins
    slow = _rec("openvino-int8-percentile", [1.60, 1.62, 1.58, 1.61, 1.63], drop=0.0)
    assert choose([fp32, minmax, slow], fp32, 1.0, None).chosen == "openvino-int8-minmax"


def test_a_big_but_inconsistent_lead_is_noise():
    fp32 = _rec("onnxruntime-fp32", [2.0, 2.0, 2.0, 2.0, 2.0], precision="fp32", runtime="onnxruntime")
    int8 = _rec("openvino-int8-minmax", [1.0, 1.0, 1.0, 2.2, 2.3])  # wins 3 of 5: a load spike hit fp32's rounds?
    assert not clearly_faster(int8, fp32)
    assert choose([fp32, int8], fp32, 1.0, None).chosen == "onnxruntime-fp32"


def test_spread_widens_the_margin():
    steady = [1.0, 1.0, 1.0, 1.0, 1.0]
    jumpy = [0.8, 1.0, 0.9, 1.2, 0.85]
    assert relative_spread(steady) == 0.0 and relative_spread(jumpy) == pytest.approx(0.1 / 0.9)
    a = _rec("a", [x * 0.92 for x in steady])
    assert clearly_faster(a, _rec("b", steady))  # 8 % faster every round, no spread
    noisy_a = _rec("a", [x * 0.92 for x in jumpy])
    assert not clearly_faster(noisy_a, _rec("b", jumpy))  # same 8 %, but the rounds spread by ~11 %


def test_nothing_slower_than_the_baseline_is_picked():
    base = _rec("onnxruntime-fp32", [1.0] * 5, precision="fp32", runtime="onnxruntime")
    fast = _rec("openvino-int8-minmax", [0.80] * 5, drop=0.5)
    # within noise of `fast` (wins 3 of 5 against it) with a smaller drop, but slower than the baseline by its median
    erratic = _rec("openvino-int8-percentile", [0.70, 0.75, 1.30, 1.25, 1.20], drop=0.0)
    assert not clearly_faster(fast, erratic)
    v = choose([base, fast, erratic], base, 1.0, None)
    assert v.chosen == "openvino-int8-minmax" and "openvino-int8-percentile" not in v.within_noise


def test_single_numbers_use_the_margin_alone():
    # predicted latencies (a target not present here) have no rounds
    base = {"name": "litert-fp32", "runtime": "litert", "precision": "fp32", "status": "ok", "accuracy": 90,
            "accuracy_drop": 0.0, "latency_ms": 11.36}
    near = base | {"name": "litert-int8", "precision": "int8", "latency_ms": 11.0, "accuracy_drop": 0.2}
    far = base | {"name": "litert-int8", "precision": "int8", "latency_ms": 5.43, "accuracy_drop": 0.2}
    assert choose([base, near], base, 1.0, None).chosen == "litert-fp32"
    assert choose([base, far], base, 1.0, None).chosen == "litert-int8"


def test_latency_budget_still_filters_the_tie():
    fp32 = _rec("onnxruntime-fp32", [1.00, 1.01, 0.99, 1.00, 1.02], precision="fp32", runtime="onnxruntime")
    int8 = _rec("openvino-int8-minmax", [0.98, 0.99, 0.97, 0.99, 0.98])
    v = choose([fp32, int8], fp32, 1.0, 0.995)
    assert v.chosen == "openvino-int8-minmax" and v.budget_met  # fp32 is within noise but over the latency budget


def _sampled(rec, n, metric="top1"):
    return rec | {"eval_samples": n, "metric": metric}


def test_a_drop_difference_of_a_few_samples_is_noise_and_speed_decides():
    # the MobileNetV2@128 case: OpenVINO int8 right on 1 more of 150 guard images, onnxruntime int8
    # 17 % faster by its median but within the rounds' spread: one image is no evidence
    fp32 = _rec("onnxruntime-fp32", [3.9, 3.8, 4.1, 3.7, 4.0], precision="fp32", runtime="onnxruntime")
    ort = _sampled(_rec("onnxruntime-int8-minmax", [1.30, 1.70, 1.25, 1.32, 1.60], runtime="onnxruntime"), 150)
    ov = _sampled(_rec("openvino-int8-minmax", [1.58, 1.40, 1.62, 1.59, 1.30], drop=-0.67), 150)
    assert not clearly_faster(ort, ov)
    v = choose([_sampled(fp32, 150), ort, ov], fp32, 1.0, None, prefer=_prefer_openvino)
    assert v.chosen == "onnxruntime-int8-minmax" and v.rule == "fastest"
    assert "1 of 150 samples, within noise" in v.reason
    # 6 images (4 points) is beyond what a tie can explain: the smaller drop wins again
    better = ov | {"accuracy_drop": -4.0, "accuracy": 94.0}
    assert choose([_sampled(fp32, 150), ort, better], fp32, 1.0, None).chosen == "openvino-int8-minmax"
    # a metric without per-sample right/wrong (cosine of several outputs) keeps comparing drops exactly
    cos = [_sampled(r, 150, "cosine_x100") for r in (ort, ov)]
    assert choose([_sampled(fp32, 150, "cosine_x100"), *cos], fp32, 1.0, None).chosen == "openvino-int8-minmax"
