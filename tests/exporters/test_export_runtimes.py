"""Exporters: each artifact runs on its runtime and matches the ONNX model; bad input is exit 2."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import onnx
import pytest

from hwopt.errors import HwoptError
from hwopt.exporters import compare_outputs, export, is_quantized
from hwopt.graph.load import load_model


def test_onnxruntime_writes_optimized_onnx_and_ort(small_cnn, tmp_path):
    model, calib = small_cnn
    r = export(model, "onnxruntime", tmp_path / "ort", calib=calib)
    assert r.artifact.suffix == ".onnx" and r.artifact.is_file()
    ort_file = r.artifact.with_suffix(".ort")
    assert ort_file in r.files and ort_file.stat().st_size > 0
    assert r.verification.ran and r.verification.passed
    assert r.verification.max_abs_diff < 1e-4
    # basic-level optimization folds BatchNorm into Conv: fewer nodes, same function
    assert len(load_model(r.artifact).graph.node) < len(load_model(model).graph.node)


def test_openvino_ir_keeps_fp32_weights_and_verifies_bf16(small_cnn, tmp_path):
    pytest.importorskip("openvino")
    model, calib = small_cnn
    r32 = export(model, "openvino", tmp_path / "ov32", calib=calib)
    assert r32.artifact.suffix == ".xml" and r32.verification.passed and r32.verification.max_abs_diff < 1e-4
    params = sum(int(np.prod(t.dims)) for t in load_model(model).graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    # compress_to_fp16=False: the .bin holds 4-byte weights (BN is folded, so a bit fewer than the ONNX params)
    assert r32.artifact.with_suffix(".bin").stat().st_size > 0.8 * params * 4
    rbf = export(model, "openvino", tmp_path / "ovbf", precision="bf16", calib=calib)
    assert rbf.verification.passed
    assert json.loads((tmp_path / "ovbf" / "model.deploy.json").read_text())["config"]["INFERENCE_PRECISION_HINT"] == "bf16"


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_export_quantizes_a_float_model_and_matches_its_qdq(small_cnn, tmp_path, runtime):
    pytest.importorskip(runtime)
    model, calib = small_cnn
    r = export(model, runtime, tmp_path / runtime, precision="int8", calib=calib)
    assert r.verification.passed, r.verification
    assert r.verification.cosine > 0.97  # judged against the float model
    if runtime == "onnxruntime":
        assert is_quantized(load_model(r.artifact))


def test_int8_of_a_float_model_without_data_is_a_clear_error(small_cnn, tmp_path):
    with pytest.raises(HwoptError, match="calibration data"):
        export(small_cnn[0], "openvino", tmp_path / "x", precision="int8")


def test_bad_runtime_precision_and_target(small_cnn, tmp_path):
    model = small_cnn[0]
    with pytest.raises(HwoptError, match="unknown export runtime"):
        export(model, "coreml", tmp_path)
    with pytest.raises(HwoptError, match="supports precision"):
        export(model, "onnxruntime", tmp_path, precision="bf16")
    with pytest.raises(HwoptError, match="runs"):
        export(model, "openvino", tmp_path, target="rpi4")


def test_compare_outputs_catches_a_wrong_artifact():
    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((4, 10)).astype(np.float32)]
    assert compare_outputs(ref, [ref[0] + 1e-6], "fp32", vs_float=False).passed
    assert not compare_outputs(ref, [ref[0] + 0.5], "fp32", vs_float=False).passed
    assert not compare_outputs(ref, [ref[0][:, ::-1]], "int8", vs_float=True).passed  # scrambled classes
    assert not compare_outputs(ref, [ref[0][:2]], "fp32", vs_float=False).passed


def _cli(*args, env=None):
    return subprocess.run(["hwopt", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_cli_export_json(small_cnn, tmp_path):
    model, calib = small_cnn
    p = _cli("export", str(model), "--to", "onnxruntime", "--calib", str(calib), "-o", str(tmp_path / "m.onnx"), "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["verification"]["passed"] is True and doc["artifact"].endswith("m.onnx")


def test_cli_export_tool_missing_is_exit_2(small_cnn, tmp_path):
    model, calib = small_cnn
    p = _cli("export", str(model), "--to", "litert", "--calib", str(calib), "-o", str(tmp_path / "m.tflite"),
             env={"HWOPT_TFLITE_VENV": str(tmp_path / "no-venv"), "HWOPT_TOOL_INSTALL": "0"})
    assert p.returncode == 2
    assert "export tool missing" in p.stderr and "Traceback" not in p.stderr


def test_cli_export_bad_input_is_exit_2(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    p = _cli("export", str(bad), "--to", "openvino", "-o", str(tmp_path / "o"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
