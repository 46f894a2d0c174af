"""Quantization of real-export traits: dynamic H/W (shapes from --shape or from the data), weights
in Constant nodes, Reshape(bias) branches, unfolded BatchNormalization, already quantized models,
bounded calibration memory, and the committed PP-OCR classifier through the CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from hwopt.cli import app
from hwopt.data import Dataset
from hwopt.errors import HwoptError
from hwopt.graph.load import save_model
from hwopt.quant.api import quantize
from hwopt.quant.ptq import CALIB_BATCH_BYTES, feasible_batch

_spec = importlib.util.spec_from_file_location("paddle_like", Path(__file__).parents[1] / "graph" / "paddle_like.py")
paddle_like = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paddle_like)

PPOCR_CLS = Path(__file__).resolve().parents[1] / "data" / "ppocr_cls.onnx"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "160"})


def _data(n: int, h: int, w: int, seed: int = 0) -> Dataset:
    return Dataset({"x": np.random.default_rng(seed).random((n, 3, h, w), dtype=np.float32)}, None, "random")


def test_paddle_like_model_quantizes_for_openvino_without_shape() -> None:
    """Dynamic H/W with no --shape: the calibration data's sample shape is used; OpenVINO must
    load the result (a FakeQuantize over the Reshape(bias) branch made it throw)."""
    r = quantize(paddle_like.paddle_like_model(), _data(8, 24, 40), target="x86-avx512", measure_latency=False)
    rep = r.report
    assert rep["stages"][0] == {"stage": "fold", "conv_affine": 2}
    assert set(rep["quantized"]) == {"openvino", "onnxruntime"}
    for m in rep["quantized"].values():
        assert m["cosine"] > 0.99
    ops = [n.op_type for n in r.model.graph.node]
    assert "BatchNormalization" not in ops and ops.count("DequantizeLinear") >= 3
    # the deployable model keeps its dynamic dims
    dims = r.model.graph.input[0].type.tensor_type.shape.dim
    assert not dims[2].HasField("dim_value") and not dims[3].HasField("dim_value")


def test_shapes_fix_dims_for_data_free_and_latency() -> None:
    model = paddle_like.paddle_like_model()
    with pytest.raises(HwoptError, match=r"x\[2\].*--shape x=1x3x224x224"), pytest.warns(UserWarning, match="data-free"):
        quantize(model, data_free=True, measure_latency=False)
    with pytest.warns(UserWarning, match="data-free"):
        r = quantize(model, data_free=True, shapes={"x": (1, 3, 16, 24)}, runtime="onnxruntime")
    assert r.report["latency_shapes"] == {"x": [1, 3, 16, 24]} and r.report["data_free"]


def test_already_quantized_models_are_refused(tmp_path) -> None:
    path = save_model(paddle_like.quantized_model(), tmp_path / "int8.onnx")
    with pytest.raises(HwoptError, match="already quantized .*ConvInteger x1"):
        quantize(path, data_free=True)
    r = invoke("quantize", path, "--data-free", "-o", tmp_path / "q.onnx")
    assert r.exit_code == 2 and "already quantized" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "q.onnx").exists()
    # inspect and bench still work on it
    assert invoke("inspect", path, "--json").exit_code == 0
    assert invoke("bench", path, "--runs", "2", "--warmup", "0", "--json").exit_code == 0


def test_calibration_batch_shrinks_with_activation_memory() -> None:
    model = paddle_like.paddle_like_model()
    assert feasible_batch(model) == 16
    assert feasible_batch(model, sample_bytes=CALIB_BATCH_BYTES // 4) == 4
    assert feasible_batch(model, sample_bytes=2 * CALIB_BATCH_BYTES) == 1


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cls") / "calib.npz"
    np.savez(path, x=np.random.default_rng(0).random((8, 3, 48, 192), dtype=np.float32))
    return path


@pytest.mark.parametrize("shape", [None, "x=1x3x48x192"])
def test_ppocr_cls_cli_with_and_without_shape(tmp_path, cls_data, shape) -> None:
    extra = ["--shape", shape] if shape else []
    out = tmp_path / "cls.int8.onnx"
    r = invoke("quantize", PPOCR_CLS, "--calib", cls_data, *extra, "--no-latency", "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["stages"][0]["conv_affine"] > 30  # the export's BatchNormalizations joined their convs
    for m in rep["quantized"].values():
        assert m["cosine"] > 0.95, rep["quantized"]
    onnx.checker.check_model(onnx.load(out))
