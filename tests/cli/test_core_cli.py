"""`hwopt devices|inspect|bench`: JSON contracts, side-by-side bench, and exit 2 + one line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper
from typer.testing import CliRunner

from hwopt.cli import app
from hwopt.graph.load import save_model

BENCH_KEYS = {"runtime", "device", "threads", "runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms"}
INSPECT_KEYS = {"opset", "params", "macs", "ops", "groups"}
FAST = ["--warmup", "1", "--runs", "5"]


def invoke(*args: str):
    """Run the CLI in-process; a wide terminal so rich does not abbreviate table cells."""
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "160"})


def test_inspect_json_keys_and_values(tiny_model_path) -> None:
    r = invoke("inspect", tiny_model_path, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert INSPECT_KEYS <= set(doc)
    assert doc["opset"] == 17 and doc["ops"] == {"Conv": 1, "Flatten": 1, "GlobalAveragePool": 1, "Relu": 1}
    assert doc["params"] == 4 * 3 * 3 * 3 + 4 and doc["macs"] == 8 * 8 * 4 * 3 * 3 * 3
    assert isinstance(doc["groups"], list)


def test_inspect_table_and_nodes(example_model) -> None:
    r = invoke("inspect", example_model, "--nodes")
    assert r.exit_code == 0, r.stderr
    assert "MACs" in r.stdout and "Conv" in r.stdout and "opset 17" in r.stdout


def test_bench_json_single_runtime(tiny_model_path) -> None:
    r = invoke("bench", tiny_model_path, "--runtime", "onnxruntime", "--json", *FAST)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert BENCH_KEYS <= set(doc)
    assert doc["runtime"] == "onnxruntime" and doc["runs"] == 5 and doc["threads"] == 1
    assert 0 < doc["p50_ms"] <= doc["p90_ms"] <= doc["p99_ms"]


def test_bench_side_by_side_json_and_table(example_model) -> None:
    r = invoke("bench", example_model, "--runtime", "onnxruntime,openvino", "--json", *FAST)
    assert r.exit_code == 0, r.stderr
    docs = json.loads(r.stdout)
    assert [d["runtime"] for d in docs] == ["onnxruntime", "openvino"]
    assert all(BENCH_KEYS <= set(d) for d in docs)
    assert docs[1]["precision"] == "fp32", "OpenVINO must run the fp32 it was asked for, not its bf16 default"

    table = invoke("bench", example_model, "--runtime", "onnxruntime,openvino", *FAST)
    assert table.exit_code == 0, table.stderr
    assert "onnxruntime" in table.stdout and "openvino" in table.stdout and "p50 ms" in table.stdout


def test_bench_reports_a_runtime_that_fails_and_runs_the_rest(tiny_model_path, monkeypatch) -> None:
    """silero-vad: OpenVINO cannot convert it; the onnxruntime number must still come out."""
    from hwopt.errors import HwoptError
    from hwopt.runtimes import get_runtime, openvino_rt

    if not get_runtime("openvino").available():
        pytest.skip("OpenVINO not installed")

    def refuse(*args, **kwargs):
        raise HwoptError("OpenVINO cannot load the model: Conversion is failed for: Conv-16")

    monkeypatch.setattr(openvino_rt, "OvSession", refuse)
    r = invoke("bench", tiny_model_path, "--runtime", "onnxruntime,openvino", "--json", *FAST)
    assert r.exit_code == 0, r.stderr
    ok, failed = json.loads(r.stdout)
    assert ok["runtime"] == "onnxruntime" and ok["p50_ms"] > 0
    assert failed["runtime"] == "openvino" and "p50_ms" not in failed and failed["error"]

    table = invoke("bench", tiny_model_path, "--runtime", "onnxruntime,openvino", *FAST)
    assert table.exit_code == 0, table.stderr
    assert "failed" in table.stdout and "openvino failed:" in table.stderr


def test_bench_fails_when_no_runtime_runs_the_model(tiny_model_path, monkeypatch) -> None:
    from hwopt import api
    from hwopt.errors import HwoptError
    from hwopt.runtimes import get_runtime

    if not get_runtime("openvino").available():
        pytest.skip("OpenVINO not installed")

    def refuse(model, rt, **kwargs):
        raise HwoptError(f"{rt} says no")

    monkeypatch.setattr(api, "bench", refuse)
    r = invoke("bench", tiny_model_path, "--runtime", "onnxruntime,openvino", *FAST)
    assert r.exit_code == 2
    assert "no runtime could run the model: onnxruntime: onnxruntime says no; openvino: openvino says no" in r.stderr
    assert "Traceback" not in r.stderr


def test_bench_with_data_file_and_shape(examples_dir, make_conv_model, tmp_path) -> None:
    r = invoke("bench", examples_dir / "mobilenet_digits.onnx", "--data", examples_dir / "eval.npz", "--json", *FAST)
    assert r.exit_code == 0, r.stderr
    dyn = save_model(make_conv_model(("N", 3, "h", "w")), tmp_path / "dyn.onnx")
    r = invoke("bench", dyn, "--shape", "x=1x3x16x24", "--json", *FAST)
    assert r.exit_code == 0, r.stderr


# ---------------------------------------------------------------- bad input: exit 2, one line, no traceback


def _bad_models(folder, make_conv_model) -> dict:
    """Every kind of unusable model file, keyed by a test id (onnx.save_model with external data
    rewrites the proto it is given, hence a fresh model for each file)."""
    data = make_conv_model().SerializeToString()
    files = {
        "missing": folder / "missing.onnx",
        "empty": folder / "empty.onnx",
        "random-bytes": folder / "random.onnx",
        "truncated": folder / "truncated.onnx",
        "folder": folder,
    }
    files["empty"].write_bytes(b"")
    files["random-bytes"].write_bytes(np.random.default_rng(0).bytes(2048))
    files["truncated"].write_bytes(data[: len(data) // 2])

    ext = folder / "ext"
    ext.mkdir()
    onnx.save_model(make_conv_model(), str(ext / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    escaping = onnx.load_model(str(ext / "m.onnx"), load_external_data=False)
    for t in escaping.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../../w.bin"
    (ext / "escape.onnx").write_bytes(escaping.SerializeToString())
    files["external-escapes"] = ext / "escape.onnx"
    missing_ext = folder / "noext"
    missing_ext.mkdir()
    onnx.save_model(make_conv_model(), str(missing_ext / "m.onnx"), save_as_external_data=True, location="gone.bin", size_threshold=0)
    (missing_ext / "gone.bin").unlink()
    files["external-missing"] = missing_ext / "m.onnx"
    return files


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == "", "nothing on stdout when --json fails"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and lines[0].startswith("error: ")
    for f in fragments:
        assert f in lines[0], (f, lines[0])


MODEL_ERRORS = {
    "missing": "not found",
    "empty": "empty",
    "random-bytes": "not a valid ONNX model",
    "truncated": "ONNX model",
    "folder": "folder",
    "external-escapes": "outside the model folder",
    "external-missing": "missing",
}


@pytest.mark.parametrize("command", ["inspect", "bench"])
@pytest.mark.parametrize("kind", list(MODEL_ERRORS))
def test_bad_model_files_exit_2_with_one_line(command, kind, tmp_path, make_conv_model) -> None:
    path = _bad_models(tmp_path, make_conv_model)[kind]
    _assert_one_line_error(invoke(command, path, "--json"), MODEL_ERRORS[kind])


def _custom_op_model(folder, make_conv_model):
    model = make_conv_model()
    model.graph.node.append(helper.make_node("FancyOp", ["y"], ["z"], domain="com.acme"))
    model.graph.output[0].name = "z"
    model.opset_import.append(helper.make_opsetid("com.acme", 1))
    return save_model(model, folder / "custom.onnx")


def test_custom_op_bench_refuses_and_inspect_warns(tmp_path, make_conv_model) -> None:
    path = _custom_op_model(tmp_path, make_conv_model)
    _assert_one_line_error(invoke("bench", path, "--json"), "com.acme::FancyOp")
    r = invoke("inspect", path, "--json")  # a census of the rest is still useful
    assert r.exit_code == 0
    assert json.loads(r.stdout)["ops"]["FancyOp"] == 1
    assert "com.acme::FancyOp" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--runtime", "tvm"], ["unknown runtime 'tvm'", "onnxruntime"]),
        (["--runtime", "onnxruntime,tensorrt"], ["tensorrt is not available"]),
        (["--runs", "0"], ["--runs"]),
        (["--shape", "x=1x3"], ["rank 2"]),
        (["--shape", "img=1x3x8x8"], ["unknown input"]),
        (["--shape", "x=1x3xAx8"], ["bad --shape"]),
        (["--runtime", "openvino", "--precision", "fp8"], ["precision"]),
        (["--data", "nowhere.npz"], ["data file not found"]),
    ],
    ids=["unknown-runtime", "tensorrt", "runs", "shape-rank", "shape-name", "shape-syntax", "precision", "data"],
)
def test_bench_bad_options_exit_2(tiny_model_path, args, fragments) -> None:
    from hwopt.runtimes import get_runtime

    if "onnxruntime,tensorrt" in args and get_runtime("tensorrt").available():
        pytest.skip("TensorRT present")
    _assert_one_line_error(invoke("bench", tiny_model_path, "--json", *FAST, *args), *fragments)


def test_bench_wrong_data_shape_exit_2(tiny_model_path, tmp_path) -> None:
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.zeros((4, 3, 9, 9), np.float32))
    _assert_one_line_error(invoke("bench", tiny_model_path, "--json", "--data", npz), "must be 8")


def test_dynamic_dims_without_shape_name_the_dims(make_conv_model, tmp_path) -> None:
    dyn = save_model(make_conv_model(("N", 3, "height", "width")), tmp_path / "dyn.onnx")
    for command in ("bench", "inspect"):
        _assert_one_line_error(invoke(command, dyn, "--json"), "x[2] (height)", "x[3] (width)", "--shape")


def test_real_console_script_prints_one_line_without_traceback(tmp_path) -> None:
    """The installed entry point, in a real process with real stderr (not CliRunner's capture)."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    proc = subprocess.run(
        [sys.executable, "-c", "from hwopt.cli import main; main()", "bench", str(bad), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
