"""compress on the traits of real exports: dynamic H/W, Paddle names, already-quantized input, failing candidates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.devices import load_device
from hwopt.errors import HwoptError
from hwopt.pipeline import compress
from hwopt.pipeline.guard import failure_warning
from hwopt.pipeline.recipe import HEAVY_MACS, INT8_LEVELS, Candidate, Recipe, plan_recipe
from hwopt.pipeline.stages import Step

PPOCR_CLS = Path(__file__).resolve().parents[1] / "data" / "ppocr_cls.onnx"


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    """Calibration/eval inputs for the PP-OCR direction classifier at 48x192 (its dims are dynamic)."""
    root = tmp_path_factory.mktemp("ppocr_cls")
    x = np.random.default_rng(0).random((8, 3, 48, 192), dtype=np.float32)
    np.savez(root / "calib.npz", x=x)
    return root / "calib.npz"


def _x86_recipe() -> Recipe:
    """float + min-max int8 on both x86 runtimes: the candidates that failed on this model before."""
    cands = [Candidate("onnxruntime-fp32", "onnxruntime-fp32", "onnxruntime", "fp32"),
             Candidate("openvino-fp32", "openvino-fp32", "openvino", "fp32")]
    for rt in ("onnxruntime", "openvino"):
        cands.append(Candidate(f"{rt}-int8-minmax", f"{rt}-int8", rt, "int8", [Step("quantize", {"runtime": rt, "method": "minmax"})]))
    return Recipe("x86-avx512", 1.0, None, True, [{"runtime": "onnxruntime"}, {"runtime": "openvino"}], cands)


def test_ppocr_cls_dynamic_dims_every_candidate_runs(cls_data, tmp_path):
    """PaddlePaddle MobileNetV3 (opset 11, Constant weights, dynamic H/W): int8 needs the concrete dims."""
    r = compress(PPOCR_CLS, target="x86-avx512", calib=cls_data, recipe=_x86_recipe(), out_dir=tmp_path / "o",
                 shapes={"x": (1, 3, 48, 192)})
    rep = r.report
    assert all(c["status"] == "ok" for c in rep["candidates"]), [(c["name"], c["reason"]) for c in rep["candidates"]]
    assert "WARNING" not in r.reason
    guard = next(s for s in rep["stages"] if s["stage"] == "guard")
    assert guard["warning"] == "" and guard["candidates"] == {"ok": 4}
    assert rep["baseline"]["macs"] > 10_000_000 and rep["result"]["macs"] == rep["baseline"]["macs"]
    node_names = {n.name for n in onnx.load(str(PPOCR_CLS)).graph.node}
    layers = next(s for s in rep["stages"] if s["stage"] == "deploy")["layers"]
    assert layers and all(lay["name"] in node_names for lay in layers), layers[:3]  # the model's own names, e.g. Conv@0


def test_already_quantized_model_is_refused_in_one_line(tmp_path):
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.uint8), "w")
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("ConvInteger", ["xq", "w", "xz"], ["y"])]
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 2, 4, 4])], [w])
    model = tmp_path / "q.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(model))
    with pytest.raises(HwoptError, match=r"already quantized \(ConvInteger, DynamicQuantizeLinear\)"):
        compress(model, target="x86-avx512", out_dir=tmp_path / "o")
    p = subprocess.run([sys.executable, "-m", "hwopt", "compress", str(model), "--target", "rpi4", "-o", str(tmp_path / "c")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "already quantized" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_failing_candidates_are_said_loudly(small_model, tmp_path, monkeypatch):
    """A crash inside one stage fails that candidate only, and the result says how many failed."""
    from hwopt.pipeline import stages

    def broken(*args, **kwargs):
        raise ValueError("matmul: Input operand 1 has a mismatch")

    monkeypatch.setitem(stages.STAGES, "quantize", (stages.QuantizeOptions, broken))
    model, calib, ev = small_model
    r = compress(model, target="x86-avx512", calib=calib, eval=ev, recipe=_x86_recipe(), out_dir=tmp_path / "o")
    failed = [c for c in r.report["candidates"] if c["status"] == "failed"]
    assert {c["name"] for c in failed} == {"onnxruntime-int8-minmax", "openvino-int8-minmax"}
    assert all("internal error in the quantize stage: ValueError" in c["reason"] for c in failed)
    assert "WARNING: 2 of 4 candidates tried failed, only 2 could be judged" in r.reason
    guard = next(s for s in r.report["stages"] if s["stage"] == "guard")
    assert guard["warning"] and guard["candidates"] == {"ok": 2, "failed": 2} and guard["reason"] == r.reason
    assert 'class="warn"' in (tmp_path / "o" / "report.html").read_text()


def test_failure_warning_names_the_failed_ones():
    recs = [{"name": "a", "status": "ok"}, {"name": "b", "status": "failed", "reason": "export\n does not match"},
            {"name": "c", "status": "skipped"}]
    w = failure_warning(recs)
    assert w.startswith("WARNING: 1 of 2 candidates tried failed, only 1 could be judged") and "b" in w
    assert "export does not match" in w
    assert failure_warning(recs[:1]) == ""


def test_large_models_get_only_the_cheap_int8_levels():
    dev = load_device("x86-avx512")
    small = plan_recipe(dev, model_macs=HEAVY_MACS // 10)
    big = plan_recipe(dev, model_macs=HEAVY_MACS * 4)
    levels = lambda r: {c.name.rsplit("-", 1)[1] for c in r.candidates if c.precision == "int8" and c.runtime != "litert"}  # noqa: E731
    assert levels(small) == {name for name, _ in INT8_LEVELS}
    assert levels(big) == {"minmax", "percentile"}
    assert any(f"large model ({HEAVY_MACS * 4 / 1e9:.2f} GMACs)" in n and "adaround, mixed" in n for n in big.notes)
    # a light model's min-max level that loses accuracy does not end the escalation; a heavy one's does
    unsettled = lambda r: {c.name for c in r.candidates if not c.settles}  # noqa: E731
    assert unsettled(small) == {"onnxruntime-int8-minmax", "openvino-int8-minmax"}
    assert unsettled(big) == set()


def test_time_major_outputs_are_judged_per_sample(tmp_path):
    """A CRNN's [T, N, C] output (ddddocr): axis 0 is time, so the samples' rows are T at a time."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((6, 1, 3, 3)).astype(np.float32), "conv.w")
    nodes = [helper.make_node("Conv", ["input1", "conv.w"], ["f"], pads=[1, 1, 1, 1], name="Conv_0"),
             helper.make_node("ReduceMean", ["f"], ["m"], axes=[2], keepdims=0, name="ReduceMean_0"),  # [N, C, W]
             helper.make_node("Transpose", ["m"], ["387"], perm=[2, 0, 1], name="Transpose_0")]  # [W, N, C]
    g = helper.make_graph(nodes, "crnn", [helper.make_tensor_value_info("input1", TensorProto.FLOAT, [1, 1, 8, "w"])],
                          [helper.make_tensor_value_info("387", TensorProto.FLOAT, ["w", 1, 6])], [w])
    model = tmp_path / "crnn.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(model))
    np.savez(tmp_path / "d.npz", input1=np.random.default_rng(1).random((6, 1, 8, 16), dtype=np.float32))
    cands = [Candidate(f"{rt}-fp32", f"{rt}-fp32", rt, "fp32") for rt in ("onnxruntime", "openvino")]
    recipe = Recipe("x86-avx512", 1.0, None, True, [{"runtime": "onnxruntime"}, {"runtime": "openvino"}], cands)
    r = compress(model, target="x86-avx512", eval=tmp_path / "d.npz", recipe=recipe, out_dir=tmp_path / "o")
    assert [c["status"] for c in r.report["candidates"]] == ["ok", "ok"], [c["reason"] for c in r.report["candidates"]]
    assert all(c["accuracy"] > 99.99 for c in r.report["candidates"])
