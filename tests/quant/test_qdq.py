"""The QDQ representation: emission, reading and writing parameters back, bits checks."""

import numpy as np
import onnx
import pytest

from hwopt.errors import HwoptError
from hwopt.quant.ptq import emit, plan_quantization
from hwopt.quant.qdq import activation_record, check_bits, read_quant_params, weight_record, write_quant_params
from hwopt.quant.schemes import scheme_for
from hwopt.quant.sensitivity import evaluate


def _minmax_stats(plan, calib):
    from hwopt.quant.ptq import calibrate_plan

    return calibrate_plan(plan, calib, "minmax")


@pytest.mark.parametrize("bits", [1, 5, 16])
def test_bits_outside_supported_set_are_refused(bits):
    with pytest.raises(HwoptError, match="must be one of 2, 3, 4, 8"):
        check_bits(bits)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weight_record_stays_on_the_b_bit_grid_and_dequantizes_close(bits):
    w = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32)
    rec = weight_record("w", w, bits, axis=0)
    assert rec.int_weight.min() >= -(2 ** (bits - 1) - 1) and rec.int_weight.max() <= 2 ** (bits - 1) - 1
    assert rec.scale.shape == (8,) and not rec.zero_point.any()
    rel = np.abs(rec.dequantized() - w).mean() / np.abs(w).mean()
    assert rel < {8: 0.01, 4: 0.15, 3: 0.3, 2: 0.6}[bits]


def test_activation_record_asymmetric_covers_range_and_zero():
    rec = activation_record("a", 0.0, 6.0, 8, symmetric=False)
    lo, hi = rec.float_range()
    assert int(rec.zero_point) == -128 and abs(lo) < 1e-6 and abs(hi - 6.0) < 1e-3
    sym = activation_record("a", -1.0, 3.0, 8, symmetric=True)
    assert int(sym.zero_point) == 0 and abs(float(sym.scale) - 3.0 / 127) < 1e-7


def test_read_write_roundtrip_and_edit(tiny_model, digits):
    plan = plan_quantization(tiny_model, scheme_for("onnxruntime"))
    q = emit(plan, _minmax_stats(plan, digits["calib"]), wbits=4, abits=4)
    onnx.checker.check_model(q)
    recs = read_quant_params(q)
    weights = [r for r in recs.values() if r.kind == "weight"]
    acts = [r for r in recs.values() if r.kind == "activation"]
    assert len(weights) == 5 and acts and all(r.bits == 4 and r.clip for r in acts)
    assert {r.axis for r in weights if r.int_weight.ndim == 4} == {0}
    # writing back unchanged records leaves outputs unchanged; zeroing one layer's integers changes them
    same = write_quant_params(q, recs)
    feeds = digits["eval"].subset(32)
    a, _ = evaluate(q, feeds)
    b, _ = evaluate(same, feeds)
    assert a["accuracy"] == b["accuracy"]
    w0 = weights[0]
    w0.int_weight = np.zeros_like(w0.int_weight)
    changed = write_quant_params(q, [w0])
    assert not read_quant_params(changed)[w0.tensor].int_weight.any()
    assert read_quant_params(q)[w0.tensor].int_weight.any()  # input model untouched


def test_write_refuses_off_grid_integers_and_bad_scales(tiny_model, digits):
    plan = plan_quantization(tiny_model, scheme_for("onnxruntime"))
    q = emit(plan, _minmax_stats(plan, digits["calib"]), wbits=4, abits=8)
    rec = next(r for r in read_quant_params(q).values() if r.kind == "weight")
    rec.int_weight = np.full_like(rec.int_weight, 9)
    with pytest.raises(HwoptError, match="4-bit grid"):
        write_quant_params(q, [rec])
    act = next(r for r in read_quant_params(q).values() if r.kind == "activation")
    act.scale = np.array(-1.0, np.float32)
    with pytest.raises(HwoptError, match="positive"):
        write_quant_params(q, [act])


def test_lowering_activation_bits_inserts_the_emulating_clip(tiny_model, digits):
    plan = plan_quantization(tiny_model, scheme_for("onnxruntime"))
    q = emit(plan, _minmax_stats(plan, digits["calib"]))
    act = next(r for r in read_quant_params(q).values() if r.kind == "activation")
    assert not act.clip
    act.bits = 2
    low = write_quant_params(q, [act])
    back = read_quant_params(low)[act.tensor]
    assert back.bits == 2 and back.clip
    onnx.checker.check_model(low)
