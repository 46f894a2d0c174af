"""TFLite/LiteRT: conversion in the isolated onnx2tf venv, offline, verified in LiteRT here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwopt.errors import NotAvailableError
from hwopt.exporters import export
from hwopt.exporters.tflite_export import sanitize_names
from hwopt.exporters.toolenv import tool_python
from hwopt.runtimes import get_runtime


@pytest.fixture(scope="module")
def tflite_tool():
    """The converter venv; the tests skip (with the reason) when it cannot be found or created."""
    try:
        return tool_python("tflite")
    except NotAvailableError as exc:
        pytest.skip(f"TFLite converter venv unavailable: {exc}")


def test_sanitize_names_keeps_the_function():
    nodes = [helper.make_node("Relu", ["in@0"], ["mid:1"], name="p2o.Relu@0"),
             helper.make_node("Neg", ["mid:1"], ["out"], name="")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("in@0", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])])
    m = sanitize_names(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    onnx.checker.check_model(m)
    assert m.graph.input[0].name == "in_0" and m.graph.node[0].name == "p2o.Relu_0" and m.graph.node[1].name
    x = np.array([[-1, 2, -3, 4]], np.float32)
    (y,) = get_runtime("onnxruntime").session(m).run({"in_0": x})
    np.testing.assert_array_equal(y, -np.maximum(x, 0))


def test_tflite_fp32_fp16_int8_verified_in_litert(small_cnn, tmp_path, tflite_tool, monkeypatch):
    if not get_runtime("litert").available():
        pytest.skip("ai-edge-litert is not installed")
    # offline: onnx2tf's sample-image download would fail loudly if it were attempted without a proxy
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    model, calib = small_cnn
    r = export(model, "litert", tmp_path / "m.tflite", precision="int8", calib=calib)
    assert r.artifact.name == "m.tflite" and {f.name for f in r.files} == {"m.tflite", "m_fp32.tflite", "m_fp16.tflite"}
    assert r.verification.passed and r.verification.cosine > 0.97, r.verification
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(r.artifact)).get_input_details()[0]
    assert details["dtype"] == np.int8 and tuple(details["shape"]) == (1, 32, 32, 3)  # full-integer, NHWC
    assert any("m_fp32.tflite: fp32, max abs diff" in n for n in r.notes)


def _conv_lstm(path):
    """A CNN + LSTM recognizer in miniature (the dddd_rec shape: conv features -> time-major LSTM -> classes).

    TensorFlow's full-integer quantizer crashes on its LSTM, while fp32/fp16 convert fine.
    """
    import torch

    class ConvLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.lstm = torch.nn.LSTM(4 * 8, 16)
            self.fc = torch.nn.Linear(16, 5)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            n, c, h, w = y.shape
            y, _ = self.lstm(y.permute(3, 0, 1, 2).reshape(w, n, c * h))
            return self.fc(y)

    torch.manual_seed(0)
    torch.onnx.export(ConvLSTM().eval(), torch.randn(1, 1, 8, 16), str(path), input_names=["input1"], output_names=["out"],
                      opset_version=12, dynamo=False)
    return path


def test_int8_failure_keeps_the_float_tflite_files(tmp_path, tflite_tool):
    if not get_runtime("litert").available():
        pytest.skip("ai-edge-litert is not installed")
    from hwopt.errors import HwoptError
    from hwopt.pipeline import StageCache

    model = _conv_lstm(tmp_path / "lstm.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, input1=np.random.default_rng(0).standard_normal((8, 1, 8, 16)).astype(np.float32))
    cache = StageCache(tmp_path / "cache")  # one conversion serves both requests, as in compress
    with pytest.raises(HwoptError, match=r"TFLite int8 conversion failed \(fp32, fp16 converted\): the converter"):
        export(model, "litert", tmp_path / "int8" / "m.tflite", precision="int8", calib=calib, cache=cache)
    r = export(model, "litert", tmp_path / "fp32" / "m.tflite", precision="fp32", calib=calib, cache=cache)
    assert {f.name for f in r.files} == {"m.tflite", "m_fp16.tflite"}
    assert r.verification.passed and r.verification.max_abs_diff < 1e-4, r.verification
    assert any(n.startswith("int8: conversion failed") for n in r.notes)
    assert len([e for e in (tmp_path / "cache").iterdir() if e.name.startswith("tflite-convert")]) == 1
