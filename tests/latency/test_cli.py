"""`hwopt predict` and `hwopt profile` through the CLI: JSON contract and one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hwopt.cli import app
from hwopt.graph.load import save_model
from hwopt.latency.table import tables_dir

runner = CliRunner()


@pytest.fixture
def model_path(tmp_path, net):
    return save_model(net, tmp_path / "net.onnx")


def test_predict_json_has_the_contract_keys(model_path):
    res = runner.invoke(app, ["predict", str(model_path), "--target", "rpi4", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert {"target", "runtime", "threads", "latency_ms", "layers", "provenance"} <= set(doc)
    assert doc["target"] == "rpi4" and doc["runtime"] == "litert"
    assert {"name", "op", "latency_ms", "source"} <= set(doc["layers"][0])
    assert {layer["source"] for layer in doc["layers"]} == {"analytical"}
    assert doc["provenance"]["method"] == "analytical"


def test_predict_threads_scale_an_analytical_table_and_a_measured_one_refuses(model_path):
    ms = {}
    for threads in (1, 4):
        res = runner.invoke(app, ["predict", str(model_path), "--target", "rpi4", "--threads", str(threads), "--json"])
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert doc["threads"] == threads
        ms[threads] = doc["latency_ms"]
    assert ms[1] > ms[4]
    res = runner.invoke(app, ["predict", str(model_path), "--target", "x86-avx512", "-r", "onnxruntime", "--threads", "4"])
    assert res.exit_code == 2 and "thread" in res.output


@pytest.mark.skipif(not (tables_dir() / "x86-avx512-onnxruntime.json").is_file(), reason="table not profiled yet")
def test_predict_human_output_on_the_measured_table(model_path):
    res = runner.invoke(app, ["predict", str(model_path), "--target", "x86-avx512", "-r", "onnxruntime"])
    assert res.exit_code == 0, res.output
    assert "ms" in res.stdout and "x86-avx512-onnxruntime.json" in res.stdout


@pytest.mark.parametrize("args,match", [
    (["--target", "nosuch"], "unknown target 'nosuch'"),
    (["--target", "rpi4", "--runtime", "openvino"], "has no runtime 'openvino'"),
])
def test_predict_bad_input_exits_2_with_one_line(model_path, args, match):
    res = runner.invoke(app, ["predict", str(model_path), *args])
    assert res.exit_code == 2
    assert match in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_predict_missing_model_exits_2(tmp_path):
    res = runner.invoke(app, ["predict", str(tmp_path / "none.onnx"), "--target", "rpi4"])
    assert res.exit_code == 2 and "not found" in res.stderr


def test_profile_refuses_a_target_not_present_here(tmp_path):
    res = runner.invoke(app, ["profile", "--target", "rpi4", "--runtime", "litert", "-o", str(tmp_path / "t.json")])
    assert res.exit_code == 2 and "not present here" in res.stderr


def test_profile_rejects_a_negative_retime_count(tmp_path):
    res = runner.invoke(app, ["profile", "--target", "x86-avx512", "--runtime", "onnxruntime", "--retime", "-1",
                              "-o", str(tmp_path / "t.json")])
    assert res.exit_code == 2 and "--retime" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_validate_measures_a_real_paddle_model_with_its_shape(tmp_path):
    """The committed PP-OCR classifier (dynamic H/W, Constant weights, input `x`) next to a model with
    a dynamic input `image`: each gets the --shape entry naming its own input, both are measured here."""
    from pathlib import Path

    from hwopt.latency.builders import GraphBuilder

    g = GraphBuilder((1, 3, 16, 16), name="image")
    other = g.build([g.conv(g.input, 8, 3, act="Relu")])
    for d in other.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "size"
    other_path = save_model(other, tmp_path / "other.onnx")
    real = Path(__file__).resolve().parents[1] / "data" / "ppocr_cls.onnx"
    res = runner.invoke(app, ["predict", "--validate", str(real), str(other_path), "--shape", "image=1x3x24x24",
                              "--target", "x86-avx512",
                              "--runtime", "onnxruntime", "--shape", "x=1x3x48x192", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["clock"] == "process CPU time" and len(doc["models"]) == 2
    for row in doc["models"]:
        assert row["measured_ms"] > 0 and row["predicted_ms"] > 0
        assert row["rel_error"] == pytest.approx(row["predicted_ms"] / row["measured_ms"] - 1)
    probe = doc["drift_normalized"]  # the speed probe was timed with the models; the shipped table recorded it
    assert probe["probe_ms_now"] > 0 and probe["probe_ms_at_table"] > 0
    assert probe["drift"] == pytest.approx(probe["probe_ms_now"] / probe["probe_ms_at_table"], rel=1e-3)
    assert probe["summary"]["models"] == 2


def test_validate_text_output_shows_the_drift_normalized_line_beside_the_raw_one(model_path, monkeypatch):
    """The raw summary stays the headline; the probe-normalized one follows it, labelled with the drift."""
    import hwopt.cli.latency as cli_latency

    row = {"model": str(model_path), "predicted_ms": 1.1, "measured_ms": 1.0, "rel_error": 0.1, "sources": {}}
    report = {"target": "x86-avx512", "runtime": "onnxruntime", "threads": 1, "measured_on": "here",
              "clock": "process CPU time", "models": [row],
              "summary": {"models": 1, "within_10pct": 1.0, "mean_abs_rel_error": 0.1, "spearman": None},
              "drift_normalized": {"drift": 0.95, "probe_ms_now": 0.19, "probe_ms_at_table": 0.2,
                                   "summary": {"models": 1, "within_10pct": 1.0, "mean_abs_rel_error": 0.045}}}
    monkeypatch.setattr(cli_latency, "validate_models", lambda *a, **k: report)
    res = runner.invoke(app, ["predict", "--validate", str(model_path), "--target", "x86-avx512", "--runtime", "onnxruntime"])
    assert res.exit_code == 0, res.output
    raw, normalized = res.output.index("mean |error| 10.0%"), res.output.index("drift-normalized (x0.950")
    assert raw < normalized and "mean |error| 4.5%" in res.output
