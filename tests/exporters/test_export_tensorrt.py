"""TensorRT: the GPU-free QDQ rule checker always runs; engines only where TensorRT is installed."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwopt.exporters import check_tensorrt_qdq, export, trtexec_command


def _qdq_conv(zp_dtype=np.int8, zp_value=0, act_scale=(0.1,), w_axis=0, q_feeds_relu=False) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(W via DQ) -> y, with knobs to break each TensorRT rule."""
    w = np.random.default_rng(0).integers(-100, 100, (4, 3, 3, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(act_scale, np.float32).reshape(-1) if len(act_scale) > 1 else np.float32(act_scale[0]), "xs"),
        numpy_helper.from_array(np.array([zp_value] * len(act_scale), zp_dtype).reshape(-1) if len(act_scale) > 1
                                else np.array(zp_value, zp_dtype), "xz"),
        numpy_helper.from_array(w, "wq"),
        numpy_helper.from_array(np.full(w.shape[w_axis], 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(w.shape[w_axis], np.int8), "wz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_x", axis=1),
        helper.make_node("Relu" if q_feeds_relu else "DequantizeLinear", ["xq"] if q_feeds_relu else ["xq", "xs", "xz"],
                         ["xd"], name="dq_x", axis=1),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dq_w", axis=w_axis),
        helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _rules(model) -> set[str]:
    return {i.rule for i in check_tensorrt_qdq(model) if i.severity == "error"}


def test_compliant_qdq_has_no_errors():
    assert _rules(_qdq_conv()) == set()


def test_each_broken_rule_is_named():
    assert "int8" in _rules(_qdq_conv(zp_dtype=np.uint8, zp_value=128))
    assert "symmetric" in _rules(_qdq_conv(zp_value=3))
    assert "per-tensor-activation" in _rules(_qdq_conv(act_scale=(0.1, 0.2, 0.3)))
    assert "per-channel-axis" in _rules(_qdq_conv(w_axis=1))
    assert "q-dq-pair" in _rules(_qdq_conv(q_feeds_relu=True))


def test_trtexec_flags_follow_precision_and_sparsity():
    cmd = trtexec_command("m.onnx", "m.engine", "int8", {"input": (1, 3, 32, 32)}, sparsity=True)
    assert "--int8" in cmd and "--fp16" in cmd and "--sparsity=enable" in cmd and "--shapes=input:1x3x32x32" in cmd
    assert "--int8" not in trtexec_command("m.onnx", "m.engine", "fp16", {"input": (1, 3, 8, 8)}, sparsity=False)


def test_tensorrt_export_writes_scripts_and_says_not_run_here(small_cnn, tmp_path):
    model, calib = small_cnn
    r = export(model, "tensorrt", tmp_path / "trt", target="jetson-orin-nano", precision="int8", calib=calib)
    names = {f.name for f in r.files}
    assert {"model.onnx", "build_engine.sh", "build_engine.py"} <= names
    assert "--sparsity=enable" in (tmp_path / "trt" / "build_engine.sh").read_text()  # Orin has 2:4 sparse cores
    compile((tmp_path / "trt" / "build_engine.py").read_text(), "build_engine.py", "exec")
    assert not [c for c in r.checks if c["severity"] == "error"]  # hwopt's TensorRT scheme obeys the rules
    if not r.verification.ran:
        assert "not run here" in r.verification.reason
