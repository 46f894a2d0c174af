"""compress end to end: report keys (DESIGN.md), measured vs predicted, guard, bad input, input untouched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import numpy as np
import pytest

from hwopt.errors import HwoptError
from hwopt.pipeline import compress
from hwopt.pipeline.compress import CONFIRM_MAX_ROUNDS
from hwopt.pipeline.guard import clearly_faster
from hwopt.pipeline.report import REPORT_KEYS

SIDE_KEYS = {"latency_ms", "latency_source", "accuracy", "params", "macs", "runtime", "precision", "artifact"}


def _check_report(out, report):
    assert tuple(report) == REPORT_KEYS
    on_disk = json.loads((out / "report.json").read_text())
    assert tuple(on_disk) == REPORT_KEYS
    for side in ("baseline", "result"):
        assert set(report[side]) == SIDE_KEYS
        assert (out / report[side]["artifact"]).is_file()
    for rel in report["artifacts"]:
        assert (out / rel).is_file(), rel
    html = (out / "report.html").read_text()
    assert "hwopt compress" in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    if any(c.get("latency_ms") is not None for c in report["candidates"]):
        assert "<svg" in html and "(chosen)" in html


@pytest.fixture(scope="module")
def x86_run(small_model, tmp_path_factory):
    model, calib, ev = small_model
    out = tmp_path_factory.mktemp("x86")
    before = hashlib.sha256(model.read_bytes()).hexdigest()
    r = compress(model, target="x86-avx512", calib=calib, eval=ev, out_dir=out / "o")
    return r, out / "o", before, model


def test_x86_is_measured_and_follows_design_keys(x86_run):
    r, out, _, _ = x86_run
    rep = r.report
    _check_report(out, rep)
    assert rep["baseline"]["latency_source"] == rep["result"]["latency_source"] == "measured"
    assert rep["baseline"]["precision"] == "fp32"
    # the baseline is the fastest float configuration measured
    floats = [c for c in rep["candidates"] if c["precision"] == "fp32" and c["status"] == "ok"]
    assert {c["runtime"] for c in floats} >= {"onnxruntime", "openvino"}
    assert rep["baseline"]["latency_ms"] == min(c["latency_ms"] for c in floats)
    assert rep["speedup"] == pytest.approx(rep["baseline"]["latency_ms"] / rep["result"]["latency_ms"], rel=1e-3)
    assert rep["accuracy_drop"] <= 1.0 and r.budget_met
    chosen = [c for c in rep["candidates"] if c["chosen"]]
    eligible = [c for c in rep["candidates"] if c["status"] == "ok" and c["accuracy_drop"] <= 1.0]
    fastest = min(eligible, key=lambda c: c["latency_ms"])
    # the pick is the fastest, or within timing noise of it; never slower than the float baseline
    assert len(chosen) == 1 and not clearly_faster(fastest, chosen[0]) and rep["speedup"] >= 1.0
    guard = rep["stages"][-2]
    assert guard["rule"] in ("fastest", "smaller-drop", "simpler-precision", "baseline")
    assert chosen[0]["name"] in guard["within_noise"] and fastest["name"] in guard["within_noise"]
    # 1-thread sessions are timed on the process CPU clock, the re-timed ones keep every round
    assert chosen[0]["latency_clock"] == "cpu"
    assert all(3 <= len(c["latency_rounds_ms"]) <= CONFIRM_MAX_ROUNDS for c in eligible if "screen_ms" in c)
    # where the time went: wall seconds per stage
    ran = [s for s in rep["stages"] if "runs" in s]
    assert {"export", "evaluate"} <= {s["stage"] for s in ran} and all(s["seconds"] > 0 for s in ran)
    # every runtime x precision the target offers was measured, int8 included
    tried = {(c["runtime"], c["precision"]) for c in rep["candidates"] if c["status"] == "ok"}
    assert {("onnxruntime", "int8"), ("openvino", "int8"), ("openvino", "bf16")} <= tried
    assert rep["stages"][-2]["stage"] == "guard"


def test_input_model_is_never_modified(x86_run):
    _, _, before, model = x86_run
    assert hashlib.sha256(model.read_bytes()).hexdigest() == before


def test_rerun_hits_the_cache_and_gives_the_same_report(x86_run, small_model):
    r, out, _, _ = x86_run
    model, calib, ev = small_model
    again = compress(model, target="x86-avx512", calib=calib, eval=ev, out_dir=out)
    assert all(c["cached_stages"] == len([s for s in c.get("steps", [])]) + 2 for c in again.report["candidates"]
               if c["status"] == "ok")
    assert again.report["result"] == r.report["result"] and again.report["speedup"] == r.report["speedup"]


def test_rpi4_without_the_tflite_tool_is_predicted_on_onnxruntime(small_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HWOPT_TFLITE_VENV", str(tmp_path / "no-venv"))
    monkeypatch.setenv("HWOPT_TOOL_INSTALL", "0")
    model, calib, ev = small_model
    r = compress(model, target="rpi4", calib=calib, eval=ev, out_dir=tmp_path / "o")
    _check_report(tmp_path / "o", r.report)
    assert r.report["result"]["runtime"] == "onnxruntime" and r.report["result"]["latency_source"] == "predicted"
    lite = [c for c in r.report["candidates"] if c["runtime"] == "litert"]
    assert lite and all(c["status"] == "unavailable" and "export tool missing" in c["reason"] for c in lite)


@pytest.mark.slow
def test_rpi4_is_predicted_and_exported_for_litert(small_model, tmp_path):
    model, calib, ev = small_model
    r = compress(model, target="rpi4", calib=calib, eval=ev, out_dir=tmp_path / "o")
    rep = r.report
    _check_report(tmp_path / "o", rep)
    assert rep["baseline"]["latency_source"] == rep["result"]["latency_source"] == "predicted"
    lite = [c for c in rep["candidates"] if c["runtime"] == "litert" and c["precision"] == "int8"]
    assert lite
    if lite[0]["status"] == "ok":  # the TFLite venv exists here
        assert lite[0]["verification"]["passed"] and lite[0]["accuracy_runtime"] == "litert"
    else:
        assert lite[0]["status"] == "unavailable" and "tool missing" in lite[0]["reason"]
    assert "predicted" in (tmp_path / "o" / "report.html").read_text()


def test_latency_budget_that_cannot_be_met_is_said(small_model, tmp_path, x86_run):
    model, calib, ev = small_model
    r = compress(model, target="x86-avx512", calib=calib, eval=ev, out_dir=tmp_path / "o", latency_ms=1e-6,
                 cache_dir=x86_run[1] / ".cache")
    assert not r.budget_met and "latency budget" in r.reason
    guard = next(s for s in r.report["stages"] if s["stage"] == "guard")
    assert guard["budget_met"] is False and guard["reason"] == r.reason


def test_bad_inputs_are_clear_errors(small_model, tmp_path):
    model, calib, _ = small_model
    with pytest.raises(HwoptError, match="unknown target"):
        compress(model, target="toaster", calib=calib, out_dir=tmp_path / "a")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, input=np.zeros((4, 3, 16, 16), np.float32))
    with pytest.raises(HwoptError, match="dim 2 must be 32"):
        compress(model, target="x86-avx512", calib=wrong, out_dir=tmp_path / "b")
    with pytest.raises(HwoptError, match="not found"):
        compress(tmp_path / "missing.onnx", target="x86-avx512", out_dir=tmp_path / "c")


def test_cli_exit_codes_and_json(small_model, tmp_path, x86_run):
    model, calib, ev = small_model
    p = subprocess.run(["hwopt", "compress", str(model), "--target", "toaster", "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "unknown target" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(["hwopt", "compress", str(model), "--target", "x86-avx512", "--calib", str(calib), "--eval", str(ev),
                        "-o", str(tmp_path / "o"), "--cache-dir", str(x86_run[1] / ".cache"), "--json", "--quiet"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    assert tuple(json.loads(p.stdout)) == REPORT_KEYS
