"""Raspberry Pi 4 analytical model: thread scaling, per-configuration evaluation, shipped tables.

The calibration data (HW-NAS-Bench, published Pi 4 numbers) is not in CI, so the fitting and
evaluation code runs here on measurements generated from a known roofline, and on a tiny CSV in
the published file's format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwopt.devices import load_device
from hwopt.errors import HwoptError
from hwopt.latency import extract_kernels
from hwopt.latency.analytical import Roofline, fit_terms, kernel_terms, kernels_ms, model_totals
from hwopt.latency.archs import mobilenet_v1, mobilenet_v3_small, nb201
from hwopt.latency.calibrate import (_at_clock, _clock, _in_sample, cross_validate, fit_samples, load_published,
                                     published_leave_one_model_out)
from hwopt.latency.predict import predict_latency
from hwopt.latency.table import load_table, tables_dir

PPOCR_CLS = Path(__file__).resolve().parents[1] / "data" / "ppocr_cls.onnx"

TRUTH = Roofline({"conv": 0.3, "pwconv": 0.5, "dwconv": 0.08, "gemm": 0.2, "pool": 0.05, "eltwise": 0.1},
                 memory_efficiency=0.4, kernel_overhead_ms=0.01, model_overhead_ms=0.2, conv_channel_half=40.0,
                 channel_half=4.0, parallel={"conv": 0.6, "pwconv": 0.5, "dwconv": 0.3, "gemm": 0.4},
                 memory_parallel=0.2, sync_ms=0.004, family_overhead_ms={"act": 0.03, "pool": 0.02})


def _total(kernels, dev, r: Roofline, threads: int) -> float:
    return float(kernels_ms(kernels, dev, r, threads).sum()) + r.model_overhead_ms


def test_more_threads_never_slower_and_below_linear_speedup():
    dev = load_device("rpi4")
    ks = extract_kernels(mobilenet_v1(), "litert")
    times = [_total(ks, dev, TRUTH, t) for t in (1, 2, 3, 4, 8)]
    assert all(a > b for a, b in zip(times[:3], times[1:4]))
    assert times[4] == pytest.approx(times[3])  # capped at the Pi's 4 cores
    assert 1.3 < times[0] / times[3] < 4.0


def test_default_thread_terms_keep_the_old_single_thread_roofline():
    """Tables written before thread scaling (x86 measured ones, 1 thread) must predict the same."""
    dev = load_device("x86-avx512")
    ks = extract_kernels(mobilenet_v3_small(96), "onnxruntime")
    r = Roofline(threads=1)
    comp = np.array([k.flops for k in ks]) / (dev.peak.fp32_gops * 1e6 / dev.cpu.cores)
    mem = np.array([k.bytes_moved for k in ks]) / (dev.memory.bandwidth_gbs * 1e6)
    eff = np.array([r.efficiency.get(k.family, 1.0) for k in ks])
    old = np.maximum(comp / eff, mem / r.memory_efficiency) + r.kernel_overhead_ms
    np.testing.assert_allclose(kernels_ms(ks, dev, r), old, rtol=1e-12)


def test_fit_recovers_thread_scaling_from_runs_at_several_thread_counts():
    dev = load_device("rpi4")
    nets = [extract_kernels(nb201(c), "litert") for c in ("333333", "222222", "131313", "340240")]
    nets += [extract_kernels(mobilenet_v1(r), "litert") for r in (96, 128, 160)]
    parts, y = [], []
    for t in (1, 2, 4):
        for ks in nets:
            parts.append(kernel_terms(ks, dev, t))
            y.append(_total(ks, dev, TRUTH, t))
    from hwopt.latency.analytical import Terms

    terms = Terms.concat(parts)
    owner = np.repeat(np.arange(len(parts)), [len(p.comp) for p in parts])
    fit = fit_terms(terms, owner, y, conv_half=True, family_overheads=True)
    pred = model_totals(terms, owner, len(parts), fit)
    np.testing.assert_allclose(pred, y, rtol=0.05)
    one, four = pred[: len(nets)], pred[-len(nets):]
    np.testing.assert_allclose(one / four, np.array(y[: len(nets)]) / np.array(y[-len(nets):]), rtol=0.05)


def test_cross_validated_roofline_beats_the_flops_floor_on_nb201():
    """Small NB201 subset with latencies from a roofline whose pools, activations and adds cost
    dispatch time: FLOPs alone cannot rank such cells, the fitted roofline can."""
    dev = load_device("rpi4")
    rng = np.random.default_rng(0)
    codes = {"".join(map(str, rng.integers(0, 5, 6))) for _ in range(60)}
    ds = []
    for c in sorted(codes):
        model = nb201(c)
        if model is not None:
            ks = extract_kernels(model, "litert")
            ds.append((ks, _total(ks, dev, TRUTH, 1) * float(np.exp(rng.normal(0, 0.03))), c))
    cv = cross_validate(ds, dev)
    assert cv["spearman"] > 0.9
    assert cv["spearman"] > cv["flops_proportional"]["spearman"]
    assert cv["mean_abs_rel_error"] < cv["flops_proportional"]["mean_abs_rel_error"]


CSV_HEAD = "model,runtime,precision,threads,input_size,latency_ms,latency_stat,device_detail,source,notes\n"
NCNN = ('"ncnn benchncnn (CPU)"', '"Pi 4, Cortex-A72 1.8GHz x4"', "github.com/Tencent/ncnn")
XNN = ("XNNPACK end2end-bench", '"Raspberry Pi 4, ARM64 build"', "XNNPACK README")


def _csv_row(model: str, precision: str, threads: str, ms: float, where: tuple[str, str, str]) -> str:
    runtime, detail, source = where
    return f"{model},{runtime},{precision},{threads},224x224x3,{ms},avg,{detail},{source},"


def test_published_rows_are_read_and_predicted_in_their_own_configuration(tmp_path):
    issue = ("XNNPACK end2end-bench", '"Pi 4B, 4 x 1500 MHz"', "github.com/google/XNNPACK/issues/814")
    torch = ('"PyTorch (qnnpack)"', '"Pi 4"', "pytorch.org")
    (tmp_path / "rpi4_published.csv").write_text(CSV_HEAD + "\n".join([
        _csv_row("mobilenet", "fp32", "4", 61.17, NCNN), _csv_row("mobilenet", "fp32", "1", 124.32, NCNN),
        _csv_row("mobilenet_v2", "fp32", "4", 61.88, NCNN), _csv_row("mobilenet_v2", "fp32", "1", 93.48, NCNN),
        _csv_row("MobileNet v1 1.0X", "fp32", "multi (all cores)", 77, XNN),
        _csv_row("MobileNet v2 1.0X", "fp32", "multi (all cores)", 46, XNN),
        _csv_row("MobileNet v1 1.0X", "fp32", "2", 186.4, issue),
        _csv_row("mobilenet_v2", "int8 (see notes)", "default", 26.4, torch),
        _csv_row("unknown_net", "fp32", "4", 10, NCNN),
    ]) + "\n")
    rows = load_published(tmp_path)
    assert [(r.label, r.source, r.threads, r.clock_ghz) for r in rows] == [
        ("mobilenet", "ncnn", 4, 1.8), ("mobilenet", "ncnn", 1, 1.8), ("mobilenet_v2", "ncnn", 4, 1.8),
        ("mobilenet_v2", "ncnn", 1, 1.8), ("mobilenet", "XNNPACK", 4, None), ("mobilenet_v2", "XNNPACK", 4, None),
        ("mobilenet", "XNNPACK issue #814", 2, 1.5)]
    rep = published_leave_one_model_out(rows, [], load_device("rpi4"), ["XNNPACK", "ncnn", "XNNPACK issue #814"])
    assert len(rep["rows"]) == 7 and rep["goal_rows"]["rows"] == 6  # #814's level is unknown without its network
    assert set(rep["by_group"]) == {"ncnn threads=1", "ncnn threads=4", "XNNPACK threads=4",
                                    "XNNPACK issue #814 threads=2"}
    assert rep["thread_scaling"]["pairs"] and all(p["predicted_speedup"] > 1 for p in rep["thread_scaling"]["pairs"])
    sources = ["XNNPACK", "ncnn", "XNNPACK issue #814"]  # in-sample: the same 6 goal rows, by the fit that saw them
    dev = load_device("rpi4")
    inside = _in_sample(rows, rep["rows"], dev, fit_samples(rows, dev, sources), sources)
    assert inside["rows"] == 6 and "not a held-out error" in inside["note"]
    assert inside["mean_abs_rel_error"] < rep["goal_rows"]["mean_abs_rel_error"]


def test_clock_parsing_and_scaling():
    assert _clock("BCM2711B0 Cortex-A72 1.8GHz x4") == 1.8
    assert _clock("64-bit Ubuntu, governor=performance, 4 x 1500 MHz") == 1.5
    assert _clock("ARM64 build") is None
    dev = load_device("rpi4")
    fast = _at_clock(dev, 1.8)
    assert fast.peak.fp32_gops == pytest.approx(dev.peak.fp32_gops * 1.2)
    assert fast.memory.bandwidth_gbs == dev.memory.bandwidth_gbs


def test_shipped_rpi4_table_has_thread_scaling_and_its_calibration_report():
    tab = load_table(tables_dir() / "rpi4-litert.json")
    assert tab.threads == 4 and tab.roofline.parallel and 0 < tab.roofline.memory_parallel <= 1
    cal = tab.provenance["calibration"]
    assert {"cv", "fitted_on"} <= set(cal["nb201"]) and "flops_proportional" in cal["nb201"]["cv"]
    assert cal["published"]["goal_rows"]["rows"] >= 20
    for name in ("rpi5-litert.json", "arm64-a76-litert.json", "rpi4-onnxruntime.json"):
        assert load_table(tables_dir() / name).roofline.parallel


def test_predict_takes_a_thread_count_for_analytical_tables_only():
    one = predict_latency(PPOCR_CLS, "rpi4", threads=1, shapes={"x": (1, 3, 48, 192)})
    four = predict_latency(PPOCR_CLS, "rpi4", shapes={"x": (1, 3, 48, 192)})
    assert (one.threads, four.threads) == (1, 4) and one.latency_ms > four.latency_ms
    with pytest.raises(HwoptError, match="measured at 1 thread"):
        predict_latency(PPOCR_CLS, "x86-avx512", "onnxruntime", threads=2, shapes={"x": (1, 3, 48, 192)})
