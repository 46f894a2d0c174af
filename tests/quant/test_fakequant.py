"""AdaRound and LSQ/QDrop quantizers: initial state, gradients, modes."""

from __future__ import annotations

import math

import pytest
import torch

from hwopt.quant.fakequant import AdaRoundQuantizer, LsqActQuantizer, quant_disabled, rectified_sigmoid

torch.set_num_threads(1)


def _weight_quantizer(bits: int = 4) -> AdaRoundQuantizer:
    torch.manual_seed(0)
    w = torch.randn(6, 3, 3, 3)
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / qmax
    return AdaRoundQuantizer(w, scale, torch.zeros_like(scale), -qmax, qmax)


def test_rectified_sigmoid_reaches_both_ends():
    h = rectified_sigmoid(torch.tensor([-20.0, 0.0, 20.0]))
    assert h.tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_adaround_starts_at_float_weight_and_hard_start_is_nearest():
    q = _weight_quantizer()
    assert torch.allclose(q(), q.weight, atol=1e-3 * float(q.scale.max()))
    q.hard = True
    ints = q.integers()
    frac = q.weight / q.scale - torch.floor(q.weight / q.scale)
    not_tie = (frac - 0.5).abs() > 1e-3
    assert torch.equal(ints[not_tie], q.nearest_integers()[not_tie])
    assert ints.min() >= q.qmin and ints.max() <= q.qmax


def test_adaround_regularizer_vanishes_only_at_binary_rounding():
    q = _weight_quantizer()
    assert q.regularizer(2.0).item() > 0
    with torch.no_grad():
        q.alpha.copy_(torch.where(q.alpha >= 0, 20.0, -20.0))
    assert q.regularizer(2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert q.regularizer(20.0).item() <= q.regularizer(2.0).item() + 1e-9


def test_adaround_gradient_reaches_rounding_variables():
    q = _weight_quantizer()
    (q() ** 2).sum().backward()
    assert q.alpha.grad is not None and float(q.alpha.grad.abs().sum()) > 0


def test_lsq_forward_and_step_gradient_match_the_paper():
    q = LsqActQuantizer(scale=0.1, zero_point=0, qmin=-8, qmax=7)
    x = torch.tensor([[0.234, -0.051, 0.9, -2.0]])
    y = q(x)
    expected = torch.clamp(torch.round(x / 0.1), -8, 7) * 0.1
    assert torch.allclose(y, expected)
    y.sum().backward()
    v = x / 0.1
    inside = (v > -8) & (v < 7)
    per_elem = torch.where(inside, torch.round(v) - v, torch.clamp(torch.round(v), -8, 7))
    g = 1 / math.sqrt(x[0].numel() * 7)
    assert float(q.scale.grad) == pytest.approx(float(per_elem.sum()) * g, rel=1e-4)


def test_qdrop_keeps_float_elements_only_in_training():
    torch.manual_seed(0)
    q = LsqActQuantizer(scale=0.5, zero_point=0, qmin=-8, qmax=7)
    q.drop_prob = 0.5
    x = torch.randn(64, 256) * 0.77
    quantized = torch.clamp(torch.round(x / 0.5), -8, 7) * 0.5
    q.train()
    kept = (q(x) == x) & (quantized != x)
    assert 0.4 < float(kept.float().mean()) < 0.6
    q.eval()
    assert torch.equal(q(x), quantized)


def test_float_path_restores_folded_relu_and_disabling_is_scoped():
    q = LsqActQuantizer(scale=0.1, zero_point=-8, qmin=-8, qmax=7)  # grid starts at 0.0
    x = torch.tensor([[-1.0, 0.33]])
    with quant_disabled(q):
        assert q(x).tolist() == [[0.0, pytest.approx(0.33)]]
    assert q.enabled and q(x).tolist() == [[0.0, pytest.approx(0.3)]]


def test_lsq_init_from_data_picks_a_smaller_step_for_low_bits():
    q = LsqActQuantizer(scale=1.0, zero_point=0, qmin=-8, qmax=7)
    q.init_pending = True
    q(torch.randn(4, 1000) * 0.5)
    assert not q.init_pending and float(q.scale.detach()) < 1.0
