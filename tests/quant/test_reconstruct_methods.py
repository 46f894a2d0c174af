"""What each reconstruction method computes during the fit, and the round-to-nearest fallback."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hwopt.quant import reconstruct as rec
from hwopt.quant.fakequant import AdaRoundQuantizer, LsqActQuantizer
from hwopt.quant.reconstruct import ReconstructConfig, held_out, reconstruct, reconstruct_block, reconstruct_summary

torch.set_num_threads(1)


class _ActThenLinear(nn.Module):
    """x -> 4-bit activation quantizer -> 4-bit linear; records the quantizer's state in training calls."""

    def __init__(self, w: torch.Tensor, step: float):
        super().__init__()
        s = w.abs().amax(1, keepdim=True) / 7
        self.q = AdaRoundQuantizer(w, s, torch.zeros_like(s), -7, 7)
        self.a = LsqActQuantizer(step, 0, -8, 7)
        self.seen: list[tuple[bool, float]] = []

    def forward(self, x):
        if self.training:
            self.seen.append((self.a.enabled, self.a.drop_prob))
        return self.a(x) @ self.q().t()


def _problem(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=g) @ torch.randn(32, 32, generator=g) / 4  # correlated inputs
    return x, torch.randn(16, 32, generator=g)


@pytest.mark.parametrize("method, quantized, drop", [("adaround", False, 0.0), ("qdrop", True, 0.5)])
def test_adaround_fits_with_float_activations_and_qdrop_with_quantized_dropped_ones(method, quantized, drop):
    x, w = _problem()
    block = _ActThenLinear(w, step=float(x.abs().max()) / 7)
    step0 = float(block.a.scale.detach())
    cfg = ReconstructConfig(method=method, iters=40)
    reconstruct_block(block, [x], [x], [x @ w.t()], cfg, torch.Generator().manual_seed(0))
    assert len(block.seen) == 40
    assert set(block.seen) == {(quantized, drop)}
    assert block.a.enabled and block.a.drop_prob == 0.0 and not block.training  # finalized: quantized, no drop
    assert (float(block.a.scale.detach()) != step0) == quantized  # LSQ steps learned only by qdrop / metaaug


def _flip_learned_rounding(monkeypatch) -> None:
    """Make every learned rounding the opposite of what the fit chose (a bad rounding, on purpose)."""
    real = rec.finalize

    def flipped(block: nn.Module) -> None:
        with torch.no_grad():
            for w in rec.learnable(block)[0]:
                w.alpha.neg_()
        real(block)

    monkeypatch.setattr(rec, "finalize", flipped)


def test_a_block_whose_learned_rounding_is_worse_goes_back_to_nearest(monkeypatch):
    x, w = _problem()
    block = _ActThenLinear(w, step=float(x.abs().max()) / 7)
    nearest_ints = block.q.nearest_integers()
    _flip_learned_rounding(monkeypatch)
    st = reconstruct_block(block, [x], [x], [x @ w.t()], ReconstructConfig(method="adaround", iters=30),
                           torch.Generator().manual_seed(0))
    assert st["reverted"] and st["error_learned"] > st["error_nearest"]
    assert torch.equal(block.q.integers(), nearest_ints)
    assert rec.evaluate_block(block, [x], [x @ w.t()], [0]) == pytest.approx(st["error_nearest"])


def test_a_good_learned_rounding_is_kept_and_judged_on_held_out_samples():
    x, w = _problem(n=320)
    block = _ActThenLinear(w, step=float(x.abs().max()) / 7)
    y = x @ w.t()
    st = reconstruct_block(block, [x[:256]], [x[:256]], [y[:256]], ReconstructConfig(method="adaround", iters=200),
                           torch.Generator().manual_seed(0), check=([x[256:]], [y[256:]]))
    assert not st["reverted"] and st["error_learned"] < st["error_nearest"]
    assert st["error_learned"] == pytest.approx(rec.evaluate_block(block, [x[256:]], [y[256:]], [0]))
    assert not torch.equal(block.q.integers(), block.q.nearest_integers())


def test_held_out_share():
    assert [held_out(n) for n in (8, 32, 63, 64, 128, 512, 4096)] == [0, 0, 0, 8, 16, 64, 64]


def test_reconstruct_reports_reverted_blocks(tiny_model, digits, monkeypatch):
    from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
    from hwopt.quant.qdq import read_quant_params
    from hwopt.quant.schemes import scheme_for

    calib = digits["calib"].subset(64)
    plan = plan_quantization(tiny_model, scheme_for("onnxruntime"))
    qdq = emit(plan, calibrate_plan(plan, calib, "mse"), wbits=4, abits=4)
    _flip_learned_rounding(monkeypatch)
    out = reconstruct(tiny_model, qdq, calib, "qdrop", iters=10, quiet=True)
    summary = reconstruct_summary(out)
    fitted = [b["block"] for b in summary["blocks"] if b["iters"]]
    assert summary["held_out"] == 8 and fitted and summary["reverted_blocks"] == fitted
    old, new = read_quant_params(qdq), read_quant_params(out)
    for t, r in new.items():  # every block back in its PTQ state: the PTQ model's integers and steps
        if r.kind == "weight":
            assert (r.int_weight != old[t].int_weight).mean() < 0.01  # ties may round the other way
        else:
            assert float(r.scale) == pytest.approx(float(old[t].scale))


def test_qdrop_block_input_is_the_float_input_or_the_quantized_input_quantized(tiny_model, digits):
    """QDrop: each element of a block's (quantized) input is the float model's value with p = 0.5,
    else the quantized model's value quantized. The old code mixed the raw tensors and then
    dropped again in the input quantizer, so raw quantized-model values and quantized float
    values got through too."""
    from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
    from hwopt.quant.schemes import scheme_for

    calib = digits["calib"].subset(16)
    plan = plan_quantization(tiny_model, scheme_for("onnxruntime"))
    net = rec.QdqNet(emit(plan, calibrate_plan(plan, calib, "mse"), wbits=4, abits=4), tiny_model)
    block = net.blocks[1]
    src = block.input_names[0]
    quantizer = net.aq[src]
    assert quantizer in list(block.modules())  # the block owns (and learns) its input quantizer
    with torch.no_grad():
        fp = list(net.blocks[0](torch.from_numpy(calib.inputs["x"])))
    step = float(quantizer.scale.detach())
    q = [fp[0] + 0.3 * step]  # off the grid, and off the float values: every source is distinguishable
    seen: list[torch.Tensor] = []
    quantizer.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    quantizer.drop_prob, quantizer.generator = 0.5, torch.Generator().manual_seed(1)
    block.train()
    gen = torch.Generator().manual_seed(0)
    xs, kw = rec.drop_inputs(block, fp, q, 0.5, gen)
    with torch.no_grad():
        rec.block_outputs(block, xs, **kw)
    out = seen[0]
    quantizer.eval()
    with torch.no_grad():
        q_quantized = quantizer(q[0])
    is_fp = torch.isclose(out, quantizer.float_path(fp[0]))
    is_qq = torch.isclose(out, q_quantized)
    assert bool((is_fp | is_qq).all())  # nothing else: no raw quantized-model value, no quantized float value
    live = quantizer.float_path(fp[0]) != q_quantized
    share = float(is_fp[live].float().mean())
    assert 0.45 < share < 0.55


def test_activation_step_rate_is_the_recipes_or_keeps_its_travel(tiny_model, digits):
    """QDrop's 4e-5 by default; `lr_act=None` scales it so lr x iterations stays 4e-5 x 20 000, and
    the learned steps then move further from their calibrated values in the same iterations."""
    from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
    from hwopt.quant.qdq import read_quant_params
    from hwopt.quant.schemes import scheme_for

    assert ReconstructConfig(iters=100).act_lr == 4e-5
    assert ReconstructConfig(iters=100, lr_act=None).act_lr == pytest.approx(8e-3)
    assert ReconstructConfig(iters=500, lr_act=None).act_lr == pytest.approx(1.6e-3)
    calib = digits["calib"].subset(32)
    plan = plan_quantization(tiny_model, scheme_for("onnxruntime"))
    qdq = emit(plan, calibrate_plan(plan, calib, "mse"), wbits=4, abits=4)
    before = {t: float(r.scale) for t, r in read_quant_params(qdq).items() if r.kind == "activation"}

    def travel(lr_act):
        out = reconstruct(tiny_model, qdq, calib, "qdrop", iters=20, quiet=True, lr_act=lr_act)
        assert reconstruct_summary(out)["lr_act"] == ReconstructConfig(iters=20, lr_act=lr_act).act_lr
        after = read_quant_params(out)
        return sum(abs(float(after[t].scale) / s - 1) for t, s in before.items())

    assert travel(None) > 5 * travel(4e-5)
