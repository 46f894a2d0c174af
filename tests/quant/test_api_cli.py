"""`hwopt.quantize` and `hwopt quantize`: reports, mixed precision, bad input -> exit 2."""

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from hwopt.cli import app
from hwopt.errors import HwoptError
from hwopt.quant.api import quantize
from hwopt.quant.sensitivity import layer_sensitivity
from hwopt.quant.ptq import calibrate_plan, plan_quantization
from hwopt.quant.schemes import scheme_for


@pytest.fixture(scope="module")
def data_files(tmp_path_factory, digits):
    d = tmp_path_factory.mktemp("data")
    c, e = digits["calib"], digits["eval"]
    np.savez(d / "calib.npz", x=c.inputs["x"], labels=c.labels)
    np.savez(d / "eval.npz", x=e.inputs["x"], labels=e.labels)
    bad = c.inputs["x"][:4].copy()
    bad[0, 0, 0, 0] = np.nan
    np.savez(d / "nan.npz", x=bad)
    np.savez(d / "wrong.npz", image=c.inputs["x"][:4])
    np.savez(d / "shape.npz", x=c.inputs["x"][:4, :, :8])
    return d


def test_quantize_reports_accuracy_on_both_runtimes_and_latency(tiny_model, digits):
    r = quantize(tiny_model, digits["calib"], eval=digits["eval"], target="x86-avx512")
    rep = r.report
    assert rep["runtime"] == "openvino" and rep["accuracy_runtime"] == "openvino"
    assert set(rep["quantized"]) == {"openvino", "onnxruntime"}
    assert rep["accuracy_drop"] < 2.0
    precisions = {(c["runtime"], c["precision"]) for c in rep["latency"] if not c["error"]}
    assert ("openvino", "int8") in precisions and ("onnxruntime", "fp32") in precisions
    assert set(rep["speedup"]) >= {"onnxruntime", "openvino", "best"}


@pytest.mark.parametrize("runtime", ["litert", "onnxruntime"])
def test_quantize_for_rpi4_runtimes_gives_a_loadable_model(tiny_model, digits, runtime):
    r = quantize(tiny_model, digits["calib"], eval=digits["eval"], target="rpi4", runtime=runtime, measure_latency=False)
    onnx.checker.check_model(r.model, full_check=True)
    assert r.report["runtime"] == runtime and r.report["accuracy_drop"] < 2.0


def test_sensitivity_ranks_layers_and_mixed_precision_meets_budget(tiny_model, digits):
    plan = plan_quantization(tiny_model, scheme_for("onnxruntime"))
    stats = calibrate_plan(plan, digits["calib"])
    ranking = layer_sensitivity(plan, stats, digits["eval"], wbits=2, abits=4, limit=128)
    assert len(ranking) == 5 and ranking[0].drop >= ranking[-1].drop
    r = quantize(tiny_model, digits["calib"], eval=digits["eval"], runtime="onnxruntime", wbits=2, abits=4,
                 max_accuracy_drop=3.0, measure_latency=False)
    mp = r.report["mixed_precision"]
    assert mp["met_budget"] and r.report["accuracy_drop"] <= 3.0
    assert mp["tried"][0]["accuracy"] < mp["tried"][-1]["accuracy"]
    assert mp["float_layers"] and set(mp["float_layers"]) <= set(r.report["float_layers"])


def test_missing_calibration_needs_data_free(tiny_model):
    with pytest.raises(HwoptError, match="--data-free"):
        quantize(tiny_model, None)
    with pytest.warns(UserWarning, match="synthetic"):
        r = quantize(tiny_model, None, data_free=True, measure_latency=False)
    assert r.report["data_free"]


def test_reconstruct_option_is_validated(tiny_model, digits):
    with pytest.raises(HwoptError, match="--reconstruct"):
        quantize(tiny_model, digits["calib"], reconstruct="brecq")


def test_cli_quantize_json_and_output(tmp_path, tiny_model_path, data_files):
    out = tmp_path / "q.onnx"
    res = CliRunner().invoke(app, ["quantize", str(tiny_model_path), "--calib", str(data_files / "calib.npz"), "--eval",
                                   str(data_files / "eval.npz"), "--no-latency", "--bias-correction", "empirical",
                                   "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["output"] == str(out) and rep["float"]["metric"] == "top1"
    bc = next(s for s in rep["stages"] if s["stage"] == "bias_correction")
    assert bc["method"] == "empirical" and bc["layers"] == 5
    onnx.checker.check_model(onnx.load(str(out)))
    assert json.loads((tmp_path / "q.report.json").read_text())["wbits"] == 8


@pytest.mark.parametrize("args, message", [
    ([], "no calibration data"),
    (["--calib", "nan.npz"], "NaN"),
    (["--calib", "wrong.npz"], "lacks model input"),
    (["--calib", "shape.npz"], "dim 2 must be 16"),
    (["--calib", "calib.npz", "--wbits", "5"], "--wbits must be one of"),
    (["--calib", "calib.npz", "--abits", "16"], "--abits must be one of"),
    (["--calib", "calib.npz", "--method", "kl"], "unknown --method"),
    (["--calib", "calib.npz", "--bias-correction", "fast"], "unknown bias correction"),
    (["--calib", "calib.npz", "--target", "nope"], "unknown target"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, tiny_model_path, data_files, args, message):
    args = [str(data_files / a) if a.endswith(".npz") else a for a in args]
    res = CliRunner().invoke(app, ["quantize", str(tiny_model_path), *args, "-o", str(tmp_path / "q.onnx")])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "q.onnx").exists()
