"""PTQ on real runtimes: accuracy, OpenVINO really runs int8 and agrees with onnxruntime, options."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwopt.data import Dataset
from hwopt.errors import HwoptError
from hwopt.quant.ptq import calibrate_plan, emit, float_tails, plan_quantization
from hwopt.quant.qdq import align_biases, read_quant_params
from hwopt.quant.schemes import scheme_for
from hwopt.quant.sensitivity import evaluate
from hwopt.runtimes import get_runtime


def _ptq(model, calib, runtime="onnxruntime", **kw):
    plan = plan_quantization(model, scheme_for(runtime), **{k: kw.pop(k) for k in list(kw) if k in ("exclude_nodes", "exclude_ops", "keep_first_last")})
    stats = calibrate_plan(plan, calib, kw.pop("method", "minmax"))
    return plan, stats, emit(plan, stats, **kw)


def test_w8a8_keeps_accuracy_on_onnxruntime(tiny_model, digits):
    _, _, q = _ptq(tiny_model, digits["calib"])
    f, ref = evaluate(tiny_model, digits["eval"])
    m, _ = evaluate(q, digits["eval"], reference=ref)
    assert f["accuracy"] > 60
    assert abs(f["accuracy"] - m["accuracy"]) < 2.0 and m["sqnr_db"] > 25
    assert {n.op_type for n in q.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    assert "Relu" not in {n.op_type for n in q.graph.node if n.output[0].endswith("stem.2/Relu_output_0")}


def test_openvino_compiles_qdq_to_int8_and_matches_onnxruntime(tiny_model, digits):
    _, _, q = _ptq(tiny_model, digits["calib"], "openvino")
    session = get_runtime("openvino").session(q, precision="int8")
    precisions = {}
    for op in session._compiled.get_runtime_model().get_ordered_ops():  # noqa: SLF001 - proof that int8 runs
        info = op.get_rt_info()
        if info["layerType"].astype(str) in ("Convolution", "FullyConnected"):
            precisions[op.get_friendly_name()] = info["runtimePrecision"].astype(str)
    assert len(precisions) == 5 and set(precisions.values()) <= {"u8", "i8"}, precisions
    _, ref = evaluate(tiny_model, digits["eval"])
    ov, ov_out = evaluate(q, digits["eval"], "openvino", ref)
    ort, ort_out = evaluate(q, digits["eval"], "onnxruntime", ref)
    assert abs(ov["accuracy"] - ort["accuracy"]) <= 1.0
    assert (ov_out[0].argmax(1) == ort_out[0].argmax(1)).mean() > 0.98


def test_tensorrt_scheme_is_symmetric(tiny_model, digits):
    _, _, q = _ptq(tiny_model, digits["calib"], "tensorrt")
    recs = read_quant_params(q).values()
    assert all(int(np.abs(r.zero_point).max()) == 0 for r in recs)
    assert all(r.axis == 0 for r in recs if r.kind == "weight" and r.int_weight.ndim == 4)


def test_exclusions_and_keep_first_last(tiny_model, digits):
    plan, _, q = _ptq(tiny_model, digits["calib"], keep_first_last=True, exclude_ops=["Add"])
    first, last = plan.order[0], plan.order[-1]
    nodes = {n.name: n for n in q.graph.node}
    assert not nodes[first].input[1].endswith("_dq") and not nodes[last].input[1].endswith("_dq")
    assert nodes[plan.order[1]].input[1].endswith("_dq")
    add = next(n for n in q.graph.node if n.op_type == "Add")
    assert not any(i.endswith("_dq") for i in add.input)
    with pytest.raises(HwoptError, match="not in the model"):
        plan_quantization(tiny_model, scheme_for("onnxruntime"), exclude_nodes=["nope"])


def test_bias_correction_reduces_output_bias_at_low_bits(tiny_model, digits):
    plan = plan_quantization(tiny_model, scheme_for("onnxruntime"))
    stats = calibrate_plan(plan, digits["calib"])
    _, ref = evaluate(tiny_model, digits["eval"])
    plain = evaluate(emit(plan, stats, wbits=3, abits=8), digits["eval"], reference=ref)[1][0]
    fixed = evaluate(emit(plan, stats, wbits=3, abits=8, bias_correction=True), digits["eval"], reference=ref)[1][0]
    shift = lambda out: np.abs((out - ref[0]).mean(axis=0)).mean()  # noqa: E731
    assert shift(fixed) < shift(plain)


class _Detector(nn.Module):
    """Boxes in pixels (0..300) and scores (0..1) concatenated into one output."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.box = nn.Conv2d(8, 4, 1)
        self.cls = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = torch.relu(self.body(x))
        boxes = torch.relu(self.box(y)) * 300.0
        scores = torch.sigmoid(self.cls(y))
        return torch.cat([boxes, scores], 1).flatten(2).transpose(1, 2)


def test_detector_tail_concat_stays_float(tmp_path, digits, to_onnx):
    torch.manual_seed(0)
    model = to_onnx(_Detector().eval(), tmp_path / "det.onnx")
    plan = plan_quantization(model, scheme_for("openvino"))
    stats = calibrate_plan(plan, digits["calib"])
    tails = float_tails(plan, stats)
    concat = next(n.name for n in model.graph.node if n.op_type == "Concat")
    assert concat in tails
    q = emit(plan, stats, float_nodes=tails)
    ds = Dataset({"x": digits["eval"].inputs["x"][:32]})
    _, ref = evaluate(model, ds)
    _, out_kept = evaluate(q, ds, reference=ref)
    _, out_crushed = evaluate(emit(plan, stats), ds, reference=ref)
    score_err = lambda out: np.abs(out[0][..., 4:] - ref[0][..., 4:]).mean()  # noqa: E731
    assert score_err(out_kept) < score_err(out_crushed)


def test_litert_full_integer_graph_is_valid_after_relu_folding(tiny_model, digits):
    """Full-integer planning asks for a QDQ on every Conv output; after a folded Relu that tensor
    no longer exists, and emitting it anyway produced a graph ORT refused to load."""
    plan, _, q = _ptq(tiny_model, digits["calib"], "litert")
    onnx.checker.check_model(q, full_check=True)
    produced = {o for n in q.graph.node for o in n.output} | {i.name for i in q.graph.input} | {t.name for t in q.graph.initializer}
    assert all(i in produced for n in q.graph.node for i in n.input if i)
    conv_outputs = {n.output[0] for n in q.graph.node if n.op_type == "Conv"}
    assert not any(n.op_type == "Relu" and n.input[0] in conv_outputs for n in q.graph.node)  # folded
    # every weighted op's output is quantized (no float island for the TFLite converter)
    consumers = {i: n.op_type for n in q.graph.node for i in n.input}
    weighted = [n for n in q.graph.node if n.name in plan.weights]
    assert weighted and all(consumers.get(n.output[0]) == "QuantizeLinear" for n in weighted if n.op_type == "Conv")
    _, ref = evaluate(tiny_model, digits["eval"])
    f, _ = evaluate(tiny_model, digits["eval"])
    m, _ = evaluate(q, digits["eval"], reference=ref)
    assert abs(f["accuracy"] - m["accuracy"]) < 2.0 and m["sqnr_db"] > 25


def _ort_logits(model, x, level):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = level
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, x)[0]


def test_w4a4_fused_onnxruntime_matches_unfused_qdq_arithmetic(tiny_model, digits):
    """onnxruntime rewrites float biases to int32 at input_scale*weight_scale; align_biases
    pre-rounds them so the optimized session computes exactly what the plain QDQ graph says."""
    import onnxruntime as ort

    q = align_biases(_ptq(tiny_model, digits["calib"], wbits=4, abits=4, method="mse")[2])
    x = {"x": digits["eval"].inputs["x"][:64]}
    plain = _ort_logits(q, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    fused = _ort_logits(q, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    assert np.abs(fused - plain).max() <= 1e-4 * np.abs(plain).max()
    # the same model with the original (off-grid) float biases does disagree: the check has teeth
    floats = {t.name: t for t in tiny_model.graph.initializer}
    raw = onnx.ModelProto()
    raw.CopyFrom(q)
    for t in raw.graph.initializer:
        if t.name in floats and len(t.dims) == 1 and t.data_type == onnx.TensorProto.FLOAT and "bias" in t.name.lower():
            t.CopyFrom(floats[t.name])
    raw_plain = _ort_logits(raw, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    raw_fused = _ort_logits(raw, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    assert not np.allclose(raw_plain, raw_fused, atol=1e-4 * np.abs(raw_plain).max())


def _ort_optimized_ops(model) -> dict[str, int]:
    """Op counts of onnxruntime's fully optimized graph of `model` (what it really runs)."""
    import collections
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = f"{tmp}/opt.onnx"
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return dict(collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node))


def test_onnxruntime_classifier_gemm_writes_its_graph_output_through_qdq(tiny_model, digits):
    """Left with its graph output's name, the head Gemm's Q/DQ hung unused and onnxruntime ran
    the Gemm in float; routed, it fuses to QGemm and the output keeps its name and accuracy."""
    from hwopt.quant.qdq import route_output_quantizers

    q = align_biases(_ptq(tiny_model, digits["calib"])[2])
    head = tiny_model.graph.output[0].name
    assert "QGemm" not in _ort_optimized_ops(q)
    routed = route_output_quantizers(q)
    assert [o.name for o in routed.graph.output] == [head]
    assert _ort_optimized_ops(routed).get("QGemm") == 1
    consumed = {i for n in routed.graph.node for i in n.input} | {head}
    assert all(o in consumed for n in routed.graph.node for o in n.output), "no dangling nodes"
    assert read_quant_params(routed)[head].kind == "activation"
    f, ref = evaluate(tiny_model, digits["eval"])
    m, _ = evaluate(routed, digits["eval"], reference=ref)
    assert abs(f["accuracy"] - m["accuracy"]) < 2.0
    # routing is for quantized weighted ops only, and idempotent
    assert route_output_quantizers(routed).SerializeToString() == routed.SerializeToString()
