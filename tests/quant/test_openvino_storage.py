"""OpenVINO activation storage: uint8 Q/DQ, because OpenVINO's CPU plugin mis-computes a Concat
of int8-typed quantized inputs feeding a conv (found on PP-OCR's DB detector: int8 cosine 0.15
on OpenVINO and 0.99 on onnxruntime for the same QDQ model; uint8 storage of the same grid is exact).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.data import Dataset
from hwopt.devices import load_device
from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
from hwopt.quant.qdq import read_quant_params, write_quant_params
from hwopt.quant.schemes import scheme_for

ov = pytest.importorskip("openvino")


def fpn_concat_model() -> onnx.ModelProto:
    """Four signed conv branches (a detector neck) -> Concat -> 3x3 conv, Paddle-style names."""
    rng = np.random.default_rng(0)
    nodes, inits, branches = [], [], []
    for i in range(4):
        w = numpy_helper.from_array((rng.standard_normal((12, 4, 1, 1)) * (i + 1)).astype(np.float32), f"conv2d_{i}.w_0")
        inits.append(w)
        nodes.append(helper.make_node("Conv", ["x", w.name], [f"conv2d_{i}.tmp_0"], name=f"p2o.Conv.{i}"))
        branches.append(f"conv2d_{i}.tmp_0")
    nodes.append(helper.make_node("Concat", branches, ["concat_0.tmp_0"], name="p2o.Concat.0", axis=1))
    w = numpy_helper.from_array((rng.standard_normal((8, 48, 3, 3)) * 0.1).astype(np.float32), "conv2d_4.w_0")
    inits.append(w)
    nodes.append(helper.make_node("Conv", ["concat_0.tmp_0", w.name], ["out"], name="p2o.Conv.4", pads=[1, 1, 1, 1]))
    g = helper.make_graph(nodes, "neck", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def quantized(runtime: str, device: str | None = None) -> onnx.ModelProto:
    model = fpn_concat_model()
    plan = plan_quantization(model, scheme_for(runtime, load_device(device) if device else None))
    calib = np.random.default_rng(1).standard_normal((8, 4, 16, 16)).astype(np.float32)
    return emit(plan, calibrate_plan(plan, Dataset({"x": calib}, None, "calib")))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b))


def run_both(q: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    blob = q.SerializeToString()
    ref = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    core = ov.Core()
    compiled = core.compile_model(core.read_model(blob, b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return ref, compiled([x])[compiled.outputs[0]]


def test_openvino_model_computes_what_onnxruntime_computes_through_a_concat():
    x = np.random.default_rng(2).standard_normal((1, 4, 16, 16)).astype(np.float32)
    ref, got = run_both(quantized("openvino"), x)
    assert cosine(ref, got) > 0.9999  # exact up to float rounding; int8 storage gave 0.998 here, 0.15 on PP-OCR det


def test_openvino_activations_are_stored_uint8_and_read_back_signed():
    q = quantized("openvino")
    inits = {t.name: t for t in q.graph.initializer}
    acts = {t: r for t, r in read_quant_params(q).items() if r.kind == "activation"}
    assert acts
    for t, r in acts.items():
        assert inits[f"{t}_zp"].data_type == TensorProto.UINT8
        assert r.zero_point.dtype == np.int8  # records stay in the signed domain
    # a write-back keeps the storage type and the grid
    again = write_quant_params(q, list(acts.values()))
    assert all({t.name: t for t in again.graph.initializer}[f"{t}_zp"].data_type == TensorProto.UINT8 for t in acts)
    for t, r in read_quant_params(again).items():
        if r.kind == "activation":
            assert int(r.zero_point) == int(acts[t].zero_point)


@pytest.mark.parametrize(("device", "dtype"), [(None, TensorProto.INT8), ("rpi4", TensorProto.INT8), ("x86-avx512", TensorProto.UINT8)])
def test_onnxruntime_storage_follows_the_device_profile(device, dtype):
    q = quantized("onnxruntime", device)
    inits = {t.name: t for t in q.graph.initializer}
    acts = [t for t, r in read_quant_params(q).items() if r.kind == "activation"]
    assert acts and all(inits[f"{t}_zp"].data_type == dtype for t in acts)
