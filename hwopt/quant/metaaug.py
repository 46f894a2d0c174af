"""MetaAug: learn how to augment the calibration images so that reconstruction generalizes.

Reconstruction fits a few hundred calibration images; with 4-bit activations it overfits them
(its rounding works on those images, less on others). MetaAug (Pham et al. 2024) trains a small
transformation network T (a U-Net whose output is added to its input, initialized to the
identity) bi-level, alternating with the block's own fit (QDrop, `reconstruct.fit_block`):

* inner step: one differentiable update of the block's rounding variables and activation steps,
  from their values so far in the fit (theta' = theta - lr * normalized grad), on the block's
  reconstruction loss for T(x), i.e. the block reconstructed on augmented data;
* outer step: update T so that the model with that *updated* block does well on the ORIGINAL
  images x: 5 * KL(T=4) between the quantized model's and the float model's outputs, plus
  0.5 * a margin term relu(eps - mean((T(x) - x)^2)) (eps = 0.1) that keeps T from collapsing
  to the identity, plus a feature-similarity term (the float block's features of T(x) must keep
  the pairwise similarity structure of those of x; weight 30000 as in the paper's recipe);
* the block's real fit steps then use the original and the augmented images together.

The paper alternates one T step with one model step; to bound the cost (each outer step runs
the whole network, and the block inputs of T(x) must be recomputed through the quantized blocks
before it), T gets `meta_iters` steps per block in `rounds` bursts spread over the fit, and the
augmented data is renewed after each burst. Only image models (one (N, C, H, W) input) are
supported; `reconstruct` falls back to QDrop for others. Later blocks use float computation
during the outer step, as the block after the one being fit has not been quantized yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from hwopt.quant.fakequant import quant_disabled, rectified_sigmoid
from hwopt.quant.reconstruct import (
    ReconstructConfig,
    block_outputs,
    drop_inputs,
    learnable,
    reconstruction_error,
    run_block,
    run_chain,
)


class AugmentNet(nn.Module):
    """A two-level U-Net producing x + delta(x); delta starts at exactly zero (identity)."""

    def __init__(self, channels: int, width: int = 16) -> None:
        super().__init__()

        def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1))

        self.enc = conv(channels, width)
        self.down = conv(width, 2 * width, stride=2)
        self.mid = conv(2 * width, 2 * width)
        self.up = conv(2 * width, width)
        self.dec = conv(2 * width, width)
        self.out = nn.Conv2d(width, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        e = self.enc(x)
        m = self.mid(self.down(e))
        u = self.up(F.interpolate(m, size=e.shape[-2:], mode="nearest"))
        return x + self.out(self.dec(torch.cat([u, e], dim=1)))


@dataclass
class MetaAugConfig:
    """Weights and rates of the bi-level objective (defaults: the MetaAug recipe in papers.md)."""

    lr: float = 1e-3
    kl_weight: float = 5.0
    temperature: float = 4.0
    margin_weight: float = 0.5
    margin: float = 0.1
    feature_weight: float = 30000.0
    grad_clip: float = 0.1
    width: int = 16


def similarity_divergence(features: Tensor, reference: Tensor, eps: float = 1e-8) -> Tensor:
    """KL between the pairwise cosine-similarity distributions of two feature batches (PKT).

    Zero when the augmented batch's samples relate to each other as the originals do, so the
    augmentation may change images but not the structure the float model sees in them.
    """
    def distribution(f: Tensor) -> Tensor:
        f = F.normalize(f.flatten(1), dim=1)
        k = (f @ f.t() + 1) / 2
        return k / k.sum(dim=1, keepdim=True)

    p, q = distribution(reference), distribution(features)
    return (p * torch.log((p + eps) / (q + eps))).sum(dim=1).mean()


def _fp_chain(blocks: list[nn.Module], xs: list[Tensor]) -> list[Tensor]:
    for block in blocks:
        with quant_disabled(block):
            xs = list(block_outputs(block, xs))
    return xs


class MetaAugmenter:
    """Supplies each block's augmented calibration data after meta-training the augmenter on it."""

    def __init__(self, images: Tensor, cfg: ReconstructConfig, *, meta_iters: int | None = None, rounds: int = 4,
                 meta: MetaAugConfig | None = None, log: Callable[[str], None] = lambda _: None) -> None:
        self.images = images
        self.cfg = cfg
        self.meta = meta or MetaAugConfig()
        #: meta steps per block; each runs the whole network several times (forward, backward and
        #: the inner step's second-order terms). One per 8 fit steps kept MetaAug at about 3x
        #: QDrop's time on the benchmark MobileNetV2 (docs/reconstruct.md)
        self.meta_iters = meta_iters if meta_iters is not None else max(1, cfg.iters // 8)
        #: bursts of meta steps per block (the block's fit asks for new data this often)
        self.rounds = max(1, min(rounds, self.meta_iters, cfg.iters))
        self.net = AugmentNet(images.shape[1], self.meta.width)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.meta.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.log = log
        self.fp_logits: Tensor | None = None

    def augmented(self) -> Tensor:
        with torch.no_grad():
            return torch.cat([self.net(self.images[i : i + 64]) for i in range(0, len(self.images), 64)])

    def steps_at(self, it: int) -> int:
        """Meta steps of the burst at fit iteration `it`: `meta_iters` per block in all, the rest first."""
        return self.meta_iters // self.rounds + (self.meta_iters % self.rounds if it == 0 else 0)

    def block_data(self, blocks: list[nn.Module], b: int, fp_x: list[Tensor], q_x: list[Tensor],
                   it: int = 0) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Meta-train T against block `b` as fit so far (fit iteration `it`), then T's images as block data."""
        if self.fp_logits is None:
            with torch.no_grad():
                self.fp_logits = _fp_chain(blocks, [self.images])[0]
        steps = self.steps_at(it)
        outer = self.meta_train(blocks, b, fp_x, q_x, steps, it)
        self.log(f"  metaaug block {b + 1}, fit step {it}: {steps} meta steps, outer loss {outer:.4g}")
        aug = [self.augmented()]
        with torch.no_grad():
            fp_in = _fp_chain(blocks[:b], aug)
            for block in blocks[:b]:
                block.eval()
            q_in = run_chain(blocks[:b], aug)
            was_training = blocks[b].training
            with quant_disabled(blocks[b]):
                blocks[b].eval()
                targets = run_block(blocks[b], fp_in)
            blocks[b].train(was_training)
        return fp_in, q_in, targets

    def meta_train(self, blocks: list[nn.Module], b: int, fp_x: list[Tensor], q_x: list[Tensor], steps: int,
                   it: int = 0) -> float:
        """`steps` bi-level updates of the augmenter for block `b` at fit iteration `it`.

        The block's parameters, QDrop settings and train/eval mode are left as they were.
        """
        block, cfg, meta = blocks[b], self.cfg, self.meta
        w_list, a_list = learnable(block)
        learn_ids = {id(w.alpha) for w in w_list} | {id(a.scale) for a in a_list}
        theta = {name: p for name, p in block.named_parameters() if id(p) in learn_ids}
        if not theta:
            return 0.0
        step = {name: (cfg.lr_round if name.endswith("alpha") else cfg.act_lr) for name in theta}
        n_weights = sum(v.numel() for k, v in theta.items() if k.endswith("alpha"))
        rec_scale = 1.0
        saved = [(a, a.drop_prob, a.generator) for a in a_list]
        was_training = block.training
        for a in a_list:
            a.drop_prob, a.generator = cfg.drop, self.gen
        with torch.no_grad(), quant_disabled(block):
            block.eval()
            fp_feat = run_block(block, fp_x)
        n = len(self.images)
        outer = torch.zeros(())
        beta = cfg.beta(it)
        for step_no in range(steps):
            idx = torch.randint(n, (min(cfg.batch_size, n),), generator=self.gen)
            x = self.images[idx]
            x_aug = self.net(x)
            fp_in = _fp_chain(blocks[:b], [x_aug])
            q_in = run_chain(blocks[:b], [x_aug])
            with quant_disabled(block):
                target = block_outputs(block, fp_in)
            block.train()
            xs, kw = drop_inputs(block, fp_in, q_in, cfg.drop, self.gen)
            out = functional_call(block, theta, tuple(xs), kw)
            inner = reconstruction_error(out, target, range(len(target)))
            if step_no == 0:  # balance error and regularizer as `reconstruct_block` does
                rec_scale = max(float(inner.detach()), 1e-12)
            inner = inner / rec_scale
            if beta is not None and n_weights:
                inner = inner + cfg.round_weight / n_weights * sum(
                    (1 - (2 * rectified_sigmoid(v) - 1).abs().pow(beta)).sum() for k, v in theta.items() if k.endswith("alpha"))
            grads = torch.autograd.grad(inner, list(theta.values()), create_graph=True)
            updated = {k: v - step[k] * g / (g.pow(2).mean().sqrt() + 1e-12) for (k, v), g in zip(theta.items(), grads)}
            block.eval()
            q_out = list(functional_call(block, updated, tuple(t[idx] for t in q_x)))
            logits = _fp_chain(blocks[b + 1 :], q_out)[0]
            t = meta.temperature
            kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.softmax(self.fp_logits[idx] / t, dim=1), reduction="batchmean")
            margin = F.relu(meta.margin - (x_aug - x).pow(2).mean())
            feature = sum(similarity_divergence(f, r[idx]) for f, r in zip(target, fp_feat))
            outer = meta.kl_weight * kl + meta.margin_weight * margin + meta.feature_weight * feature
            self.opt.zero_grad()
            grads_t = torch.autograd.grad(outer, list(self.net.parameters()))
            for p, g in zip(self.net.parameters(), grads_t):
                p.grad = g
            nn.utils.clip_grad_norm_(self.net.parameters(), meta.grad_clip)
            self.opt.step()
        for a, drop, gen in saved:
            a.drop_prob, a.generator = drop, gen
        block.train(was_training)
        return float(outer.detach())
