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
