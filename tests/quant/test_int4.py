"""INT4 weight storage of 4-bit QDQ models: smaller files, the same numbers on onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hwopt.errors import HwoptError
from hwopt.graph.normalize import opset_of
from hwopt.quant.int4 import INT4_OPSET, int4_export, int4_weights
from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
from hwopt.quant.qdq import read_quant_params
from hwopt.quant.schemes import scheme_for


def _run(model: onnx.ModelProto, x: np.ndarray, optimize: bool) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def plan_stats(tiny_model, digits):
    plan = plan_quantization(tiny_model, scheme_for("onnxruntime"))
    return plan, calibrate_plan(plan, digits["calib"], "mse")


@pytest.mark.parametrize("abits", [8, 4])
def test_int4_weights_compute_exactly_what_the_int8_storage_model_does(plan_stats, digits, abits):
    w4 = emit(*plan_stats, wbits=4, abits=abits)
    before = w4.SerializeToString()
    out = int4_export(w4)
    assert w4.SerializeToString() == before  # input untouched
    onnx.checker.check_model(out, full_check=True)
    assert opset_of(out) == INT4_OPSET
    names = int4_weights(w4)
    assert names and names == sorted(t for t, r in read_quant_params(w4).items() if r.kind == "weight")
    inits = {t.name: t for t in out.graph.initializer}
    recs = read_quant_params(w4)
    for t in names:
        dq = next(n for n in out.graph.node if n.name == recs[t].dq)
        assert inits[dq.input[0]].data_type == onnx.TensorProto.INT4
        assert inits[dq.input[2]].data_type == onnx.TensorProto.INT4
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(inits[dq.input[0]]), recs[t].int_weight)
    weight_bytes = lambda m: sum(t.ByteSize() for t in m.graph.initializer if t.name.endswith("_q"))  # noqa: E731
    assert weight_bytes(out) < 0.6 * weight_bytes(w4)
    x = digits["eval"].inputs["x"][:64]
    exact = _run(w4, x, optimize=False)  # plain QDQ arithmetic, what the fake-quant stages compute
    np.testing.assert_array_equal(_run(out, x, optimize=False), exact)
    # optimized, onnxruntime's fused kernels round differently from the plain QDQ arithmetic (for
    # int8-storage models too: about 10% of the largest logit at A4, see docs/reconstruct.md)
    fused = _run(out, x, optimize=True)
    assert np.abs(fused - exact).max() < 0.15 * np.abs(exact).max()
    assert (fused.argmax(1) == exact.argmax(1)).mean() >= 0.8


def test_8_bit_weights_are_refused(plan_stats):
    with pytest.raises(HwoptError, match="no weights quantized to 4 bits"):
        int4_export(emit(*plan_stats, wbits=8, abits=8))


@pytest.mark.parametrize(("runtime", "storage"), [("onnxruntime", "int4"), ("openvino", "int8 (holding 4-bit")])
def test_quantize_stores_int4_only_for_a_runtime_that_reads_it(tiny_model, digits, runtime, storage):
    from hwopt.quant.api import quantize

    res = quantize(tiny_model, digits["calib"], eval=digits["eval"], runtime=runtime, wbits=4, abits=8,
                   measure_latency=False)
    assert res.report["weight_storage"].startswith(storage)
    assert (opset_of(res.model) == INT4_OPSET) == (storage == "int4")
