"""Cross-layer equalization is exact and balances ranges; fp16 / mixed candidates run correctly."""

import numpy as np
import torch
from onnx import numpy_helper
from torch import nn

from hwopt.quant.equalize import equalizable_pairs, equalize, has_depthwise
from hwopt.quant.precision import candidate_models, measure_candidates, mixed_int8_fp16, to_fp16
from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
from hwopt.quant.schemes import scheme_for
from hwopt.quant.sensitivity import evaluate


def test_equalize_preserves_function_and_balances_ranges(tmp_path, digits, to_onnx):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                        nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():  # make channel ranges very unequal, as depthwise layers after BN folding are
        net[2].weight.mul_(torch.logspace(-2, 1, 8).view(8, 1, 1, 1))
    model = to_onnx(net, tmp_path / "dw.onnx")
    assert has_depthwise(model) and len(equalizable_pairs(model)) == 2
    eq, pairs = equalize(model)
    ds = digits["eval"].subset(16)
    ds.labels = None
    _, a = evaluate(model, ds)
    _, b = evaluate(eq, ds)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-3, atol=1e-4)
    dw = next(n for n in eq.graph.node if n.op_type == "Conv" and any(x.name == "group" and x.i == 8 for x in n.attribute))
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}[dw.input[1]]
    after = {t.name: numpy_helper.to_array(t) for t in eq.graph.initializer}[dw.input[1]]
    spread = lambda w: np.abs(w).reshape(8, -1).max(1).max() / np.abs(w).reshape(8, -1).max(1).min()  # noqa: E731
    assert spread(after) < spread(before) / 10


def test_fp16_and_mixed_int8_fp16_run_close_to_float(tiny_model, digits):
    f16 = to_fp16(tiny_model)
    assert any(t.data_type == 10 for t in f16.graph.initializer)  # FLOAT16
    _, ref = evaluate(tiny_model, digits["eval"])
    m16, _ = evaluate(f16, digits["eval"], reference=ref)
    assert m16["sqnr_db"] > 40
    plan = plan_quantization(tiny_model, scheme_for("onnxruntime"))
    q = emit(plan, calibrate_plan(plan, digits["calib"]))
    mixed, _ = evaluate(mixed_int8_fp16(q), digits["eval"], reference=ref)
    assert mixed["sqnr_db"] > 25


def test_measure_candidates_times_every_runtime_and_precision(tiny_model, digits):
    from hwopt.graph.shapes import fix_input_shapes

    fixed = fix_input_shapes(tiny_model, {"x": (1, 3, 16, 16)})
    plan = plan_quantization(fixed, scheme_for("openvino"))
    q = emit(plan, calibrate_plan(plan, digits["calib"]))
    cands = measure_candidates(candidate_models(fixed, q, ["onnxruntime", "openvino"]), {"x": digits["eval"].inputs["x"][:1]},
                               rounds=1, runs=3)
    got = {(c.runtime, c.precision) for c in cands if not c.error and c.p50_ms > 0}
    assert got == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16"),
                   ("openvino", "int8"), ("openvino", "int8+bf16")}
