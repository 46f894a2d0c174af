"""LiteRT adapter on a .tflite written with LiteRT's own flatbuffer schema (no TensorFlow needed here).

The model is one FULLY_CONNECTED layer (y = x W^T + b) followed by RELU, so the expected output is
plain numpy. Converting real ONNX models to .tflite is the exporter's job and tested there.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
import pytest

from hwopt.api import bench
from hwopt.errors import HwoptError
from hwopt.runtimes import get_runtime

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")

IN, OUT = 8, 5


def _tensor(shape, buffer: int, name: str):
    t = schema.TensorT()
    t.shape = list(shape)
    t.type = schema.TensorType.FLOAT32
    t.buffer = buffer
    t.name = name
    return t


def _buffer(array: np.ndarray | None):
    b = schema.BufferT()
    b.data = None if array is None else list(array.astype(np.float32).tobytes())
    return b


def write_fc_tflite(path, weights: np.ndarray, bias: np.ndarray) -> None:
    """Serialize a one-subgraph model: input(1, IN) -> FULLY_CONNECTED -> RELU -> output(1, OUT)."""
    fc_code, relu_code = schema.OperatorCodeT(), schema.OperatorCodeT()
    fc_code.builtinCode = fc_code.deprecatedBuiltinCode = schema.BuiltinOperator.FULLY_CONNECTED
    relu_code.builtinCode = relu_code.deprecatedBuiltinCode = schema.BuiltinOperator.RELU
    fc = schema.OperatorT()
    fc.opcodeIndex, fc.inputs, fc.outputs = 0, [0, 1, 2], [3]
    fc.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    fc.builtinOptions = schema.FullyConnectedOptionsT()
    relu = schema.OperatorT()
    relu.opcodeIndex, relu.inputs, relu.outputs = 1, [3], [4]

    sub = schema.SubGraphT()
    sub.tensors = [_tensor((1, IN), 0, "x"), _tensor((OUT, IN), 1, "w"), _tensor((OUT,), 2, "b"),
                   _tensor((1, OUT), 0, "fc"), _tensor((1, OUT), 0, "y")]
    sub.inputs, sub.outputs, sub.operators, sub.name = [0], [4], [fc, relu], "main"
    model = schema.ModelT()
    model.version = 3
    model.operatorCodes = [fc_code, relu_code]
    model.subgraphs = [sub]
    model.buffers = [_buffer(None), _buffer(weights), _buffer(bias)]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())


@pytest.fixture
def fc_model(tmp_path):
    rt = get_runtime("litert")
    if not rt.available():
        pytest.skip("LiteRT not installed")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((OUT, IN)).astype(np.float32)
    b = rng.standard_normal(OUT).astype(np.float32)
    path = tmp_path / "fc.tflite"
    write_fc_tflite(path, w, b)
    return path, w, b


def test_litert_runs_tflite_and_matches_numpy(fc_model) -> None:
    path, w, b = fc_model
    sess = get_runtime("litert").session(path, threads=1)
    assert sess.input_names == ["x"] and sess.output_names == ["y"] and sess.input_shapes == {"x": (1, IN)}
    x = np.random.default_rng(1).standard_normal((1, IN)).astype(np.float32)
    (y,) = sess.run({"x": x})
    np.testing.assert_allclose(y, np.maximum(x @ w.T + b, 0), rtol=1e-5, atol=1e-5)


def test_litert_bench_through_the_api(fc_model) -> None:
    res = bench(fc_model[0], runtime="litert", warmup=1, runs=5)
    assert res.runtime == "litert" and res.runs == 5 and res.p50_ms > 0


def test_litert_refuses_onnx_and_garbage(fc_model, tiny_model_path, tmp_path) -> None:
    rt = get_runtime("litert")
    with pytest.raises(HwoptError, match="runs .tflite"):
        rt.session(tiny_model_path)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(HwoptError, match="LiteRT cannot load"):
        rt.session(bad)
