"""MetaAug: identity-initialized augmenter, feature similarity, bi-level training, fallback."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwopt.data import Dataset
from hwopt.graph.normalize import normalize_model
from hwopt.quant.fakequant import AdaRoundQuantizer
from hwopt.quant.metaaug import AugmentNet, MetaAugmenter, similarity_divergence
from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
from hwopt.quant.reconstruct import QdqNet, ReconstructConfig, reconstruct, reconstruct_block, reconstruct_summary
from hwopt.quant.reconstruct import learnable as rec_learnable
from hwopt.quant.schemes import scheme_for
from hwopt.runtimes import get_runtime

torch.set_num_threads(1)


def _qdq(model: onnx.ModelProto, calib: Dataset, bits: int = 4) -> onnx.ModelProto:
    plan = plan_quantization(model, scheme_for("onnxruntime"))
    return emit(plan, calibrate_plan(plan, calib, "mse"), wbits=bits, abits=bits)


@pytest.mark.parametrize("size", [16, 15])
def test_augmenter_starts_as_identity(size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    assert torch.equal(AugmentNet(3)(x), x)


def test_similarity_divergence_sees_structure_not_scale():
    torch.manual_seed(0)
    f = torch.randn(16, 40)
    assert float(similarity_divergence(3 * f, f)) == pytest.approx(0.0, abs=1e-6)
    assert float(similarity_divergence(torch.randn(16, 40), f)) > 1e-3


def test_meta_training_changes_the_augmenter_and_supplies_block_data(tiny_model, digits):
    calib = digits["calib"].subset(32)
    net = QdqNet(_qdq(tiny_model, calib), tiny_model)
    images = torch.from_numpy(calib.inputs["x"])
    aug = MetaAugmenter(images, ReconstructConfig(method="metaaug", iters=8, batch_size=8), meta_iters=4)
    start = [p.detach().clone() for p in aug.net.parameters()]
    b = 1
    with torch.no_grad():
        fp_x = [images]
        for block in net.blocks[:b]:
            fp_x = list(block(*fp_x))
    block = net.blocks[b]
    block.train()
    alphas = [w.alpha.detach().clone() for w in rec_learnable(block)[0]]
    fp_in, q_in, targets = aug.block_data(net.blocks, b, fp_x, fp_x, it=0)
    assert any(not torch.equal(p, s) for p, s in zip(aug.net.parameters(), start))
    assert block.training and all(torch.equal(w.alpha, a) for w, a in zip(rec_learnable(block)[0], alphas))
    assert [t.shape for t in fp_in] == [t.shape for t in fp_x] == [t.shape for t in q_in]
    assert len(targets) == len(net.blocks[b].output_names)
    assert not torch.equal(aug.augmented(), images)


def test_meta_steps_are_spread_over_the_fit_and_see_the_rounding_learned_so_far():
    """The augmenter is updated in bursts during the block's fit, each against the current rounding."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    w = torch.randn(4, 8, generator=g)
    s = w.abs().amax(1, keepdim=True) / 7
    q = AdaRoundQuantizer(w, s, torch.zeros_like(s), -7, 7)

    class Lin(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = q

        def forward(self, v):
            return v @ self.q().t()

    block = Lin()
    calls: list[tuple[int, torch.Tensor]] = []

    def source(it: int):
        calls.append((it, q.alpha.detach().clone()))
        return [x[:8] * 2], [x[:8] * 2], [(x[:8] * 2) @ w.t()]

    cfg = ReconstructConfig(method="metaaug", iters=40, batch_size=16)
    reconstruct_block(block, [x], [x], [x @ w.t()], cfg, torch.Generator().manual_seed(0), augment=(source, 4))
    assert [it for it, _ in calls] == [0, 10, 20, 30]
    assert not torch.equal(calls[0][1], calls[-1][1])  # later bursts see the rounding as fit so far


def test_metaaug_reconstruction_runs_on_both_runtimes(tiny_model, digits):
    calib = digits["calib"].subset(48)
    qdq = _qdq(tiny_model, calib)
    out = reconstruct(tiny_model, qdq, calib, "metaaug", iters=16, batch_size=16, meta_iters=4, quiet=True)
    summary = reconstruct_summary(out)
    assert summary["method"] == "metaaug"
    assert summary["held_out"] == 0 and all(b["error_learned"] >= 0 for b in summary["blocks"] if b["iters"])
    x = digits["eval"].inputs["x"][:16]
    for runtime in ("onnxruntime", "openvino"):
        rt = get_runtime(runtime)
        if rt.available():
            assert np.isfinite(rt.session(out).run({"x": x})[0]).all()


def test_non_image_model_falls_back_to_qdrop(tmp_path, capsys):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(mlp, torch.zeros(1, 12), str(path), input_names=["v"], output_names=["y"],
                      dynamic_axes={"v": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    model = normalize_model(onnx.load(str(path)))
    calib = Dataset({"v": np.random.default_rng(0).normal(size=(32, 12)).astype(np.float32)})
    out = reconstruct(model, _qdq(model, calib, bits=8), calib, "metaaug", iters=5)
    summary = reconstruct_summary(out)
    assert summary["requested"] == "metaaug" and summary["method"] == "qdrop"
    assert "qdrop is used instead" in capsys.readouterr().err
