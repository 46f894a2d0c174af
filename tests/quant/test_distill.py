"""KD-QAT on a small trained model: keeps W8A8, recovers W4A4, writes a valid QDQ model back."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from hwopt.data import Dataset
from hwopt.errors import HwoptError
from hwopt.graph.normalize import normalize_model
from hwopt.quant.distill import distill_qat, find_qdq_layout
from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
from hwopt.quant.schemes import scheme_for


def accuracy(model: onnx.ModelProto, ds: Dataset) -> float:
    """Top-1 of the QDQ model as onnxruntime runs it (fused int8 kernels), not fake-quant."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return float((sess.run(None, ds.inputs)[0].argmax(1) == ds.labels).mean() * 100)


@pytest.fixture(scope="module")
def train_ds(digits) -> Dataset:
    x, y = digits["train"]
    return Dataset({"x": x[:600]}, y[:600], "train")


@pytest.fixture(scope="module")
def ort_w8a8(tiny_model_path, tmp_path_factory, digits) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    calib = digits["calib"].inputs["x"]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(range(0, 128, 16))

        def get_next(self):
            i = next(self.it, None)
            return None if i is None else {"x": calib[i : i + 16]}

    out = tmp_path_factory.mktemp("q") / "w8a8.onnx"
    quantize_static(str(tiny_model_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return onnx.load(str(out))


@pytest.fixture(scope="module")
def hwopt_ptq(tiny_model, digits):
    plan = plan_quantization(tiny_model, scheme_for("onnxruntime"))
    stats = calibrate_plan(plan, digits["calib"])
    return lambda wbits, abits: emit(plan, stats, wbits=wbits, abits=abits)


def test_w8a8_qat_keeps_ptq_accuracy(tiny_model, ort_w8a8, train_ds, digits) -> None:
    ptq = accuracy(ort_w8a8, digits["eval"])
    qat_model = distill_qat(tiny_model, ort_w8a8, train_ds, epochs=2, quiet=True)
    qat = accuracy(qat_model, digits["eval"])
    assert qat >= ptq - 1.0, (ptq, qat)
    # same QDQ graph and tensor types; integers changed, and stayed on their grids
    q0 = normalize_model(ort_w8a8)
    assert [n.op_type for n in qat_model.graph.node] == [n.op_type for n in q0.graph.node]
    before = {t.name: numpy_helper.to_array(t) for t in q0.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in qat_model.graph.initializer}
    assert {k: v.dtype for k, v in before.items()} == {k: v.dtype for k, v in after.items()}
    layout = find_qdq_layout(q0)
    changed = 0
    for wp in layout.weights:
        w = after[wp.int_name]
        assert wp.qrange[0] <= w.min() and w.max() <= wp.qrange[1]
        changed += int((w != before[wp.int_name]).sum())
    assert changed > 0
    assert layout.biases, "onnxruntime's int32 biases should be found"
    for bp in layout.biases:  # requantized bias scale = input scale * weight scale
        x_s, w_s = bp.consumer_scales
        np.testing.assert_allclose(after[bp.scale], after[x_s] * after[w_s], rtol=1e-6)


def test_w4a4_qat_recovers_ptq_loss(tiny_model, hwopt_ptq, train_ds, digits) -> None:
    float_acc = accuracy(tiny_model, digits["eval"])
    ptq_model = hwopt_ptq(4, 4)
    ptq = accuracy(ptq_model, digits["eval"])
    qat_model = distill_qat(tiny_model, ptq_model, train_ds, epochs=3, quiet=True)
    qat = accuracy(qat_model, digits["eval"])
    assert float_acc - ptq > 2, "4-bit PTQ should lose accuracy on this model"
    assert qat > ptq + 2 and qat >= ptq + 0.5 * (float_acc - ptq), (float_acc, ptq, qat)
    # the emulated 4-bit grids survive: weights in [-7, 7], clips at the learned scale's 4-bit range
    layout = find_qdq_layout(normalize_model(qat_model))
    inits = {t.name: numpy_helper.to_array(t) for t in qat_model.graph.initializer}
    nodes = {n.name: n for n in qat_model.graph.node}
    assert all(wp.qrange == (-7, 7) and np.abs(inits[wp.int_name]).max() <= 7 for wp in layout.weights)
    for ap in [a for a in layout.acts if a.clip]:
        assert ap.qrange == (-8, 7)
        hi = inits[nodes[ap.clip].input[2]]
        assert float(hi) == pytest.approx((7 - float(inits[ap.zero_point])) * float(inits[ap.scale]), rel=1e-5)


def test_layout_reads_bits_from_the_representation(hwopt_ptq, ort_w8a8) -> None:
    w2a4 = find_qdq_layout(normalize_model(hwopt_ptq(2, 4)))
    assert {wp.qrange for wp in w2a4.weights} == {(-1, 1)}
    assert {ap.qrange for ap in w2a4.acts} == {(-8, 7)}
    # no hwopt metadata: bits come from the Clip in front of the QuantizeLinear
    stripped = normalize_model(hwopt_ptq(8, 3))
    del stripped.metadata_props[:]
    assert {ap.qrange for ap in find_qdq_layout(stripped).acts} == {(-4, 3)}
    ort_layout = find_qdq_layout(normalize_model(ort_w8a8))
    assert {wp.qrange for wp in ort_layout.weights} == {(-127, 127)}
    assert {ap.qrange for ap in ort_layout.acts} == {(-128, 127)}


def test_pure_kd_without_labels_is_deterministic(tiny_model, hwopt_ptq, train_ds) -> None:
    unlabeled = Dataset({"x": train_ds.inputs["x"][:128]}, None, "unlabeled")
    q = hwopt_ptq(4, 8)
    a = distill_qat(tiny_model, q, unlabeled, epochs=1, quiet=True, seed=3)
    b = distill_qat(tiny_model, q, unlabeled, epochs=1, quiet=True, seed=3)
    assert a.SerializeToString() == b.SerializeToString()


def test_bad_input(tiny_model, train_ds, hwopt_ptq) -> None:
    with pytest.raises(HwoptError, match="quantize it first"):
        distill_qat(tiny_model, tiny_model, train_ds, quiet=True)
    with pytest.raises(HwoptError, match="loss weights"):
        distill_qat(tiny_model, hwopt_ptq(8, 8), train_ds, w=1.5, quiet=True)
    with pytest.raises(HwoptError, match="epochs"):
        distill_qat(tiny_model, hwopt_ptq(8, 8), train_ds, epochs=-1, quiet=True)
