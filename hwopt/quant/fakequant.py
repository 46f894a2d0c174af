"""Torch fake-quantizers whose parameters block reconstruction learns.

Two quantizers cover the whole of AdaRound / BRECQ / QDrop:

* `AdaRoundQuantizer` holds one float weight tensor and its fixed (per-channel) grid and learns,
  per element, whether to round down or up: W_q = s * (clip(floor(W/s) + h(V) + z, qmin, qmax) - z)
  with the rectified sigmoid h(V) = clip(sigmoid(V) * 1.2 - 0.1, 0, 1). The regularizer
  sum(1 - |2h - 1|^beta) pushes h to 0 or 1 as beta is annealed from 20 to 2, so that switching
  to hard rounding at the end changes (almost) nothing.
* `LsqActQuantizer` quantizes an activation with a learned step size (LSQ): its gradient is
  scaled by 1/sqrt(N * Qp) so that the step learns at the same pace as the weights whatever the
  tensor size. With `drop_prob` > 0 in training mode it keeps each element's float value with
  that probability (QDrop), which flattens the loss landscape the weights are fit on; for a
  block's input the float value is the float model's (`float_ref`).

Both quantizers can be disabled (`set_quant_enabled`) so that one module computes either the
quantized or the float block; the reconstruction needs both and must not keep two copies.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

ZETA = 1.1
GAMMA = -0.1


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward (straight-through estimator)."""
    return (x.round() - x).detach() + x


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x forward, gradient multiplied by `scale` backward (LSQ's step-size gradient scaling)."""
    return (x - x * scale).detach() + x * scale


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """AdaRound's h(V): a sigmoid stretched to (-0.1, 1.1) and clipped, so 0 and 1 are reachable."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


class AdaRoundQuantizer(nn.Module):
    """Learned rounding of one weight tensor on a fixed integer grid.

    `scale` and `zero_point` must broadcast against `weight` (e.g. shape (C, 1, 1, 1) for a
    per-output-channel conv weight). V starts where h(V) equals the fractional part of W/s, so
    the soft-quantized weight starts exactly at the float weight (clipping aside).
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> None:
        super().__init__()
        weight = weight.detach().float()
        scale = scale.detach().float()
        self.qmin, self.qmax = int(qmin), int(qmax)
        self.register_buffer("weight", weight.clone())
        self.register_buffer("scale", scale.clone())
        self.register_buffer("zero_point", zero_point.detach().float().clone())
        floor = torch.floor(weight / scale)
        self.register_buffer("floor", floor)
        rest = (weight / scale - floor).clamp(0.0, 1.0)
        # inverse of h on its open range: sigmoid(V) = (rest - gamma) / (zeta - gamma)
        p = ((rest - GAMMA) / (ZETA - GAMMA)).clamp(1e-4, 1 - 1e-4)
        self.alpha = nn.Parameter(torch.log(p / (1 - p)))
        self.hard = False
        self.enabled = True

    def h(self) -> torch.Tensor:
        """Rounding decision in [0, 1] per element (exactly 0/1 once `hard`)."""
        if self.hard:
            return (self.alpha >= 0).to(self.weight.dtype)
        return rectified_sigmoid(self.alpha)

    def integers(self) -> torch.Tensor:
        """Grid integers floor(W/s) + h(V) + z clipped to [qmin, qmax] (float dtype, differentiable)."""
        return torch.clamp(self.floor + self.h() + self.zero_point, self.qmin, self.qmax)

    def forward(self) -> torch.Tensor:
        if not self.enabled:
            return self.weight
        return (self.integers() - self.zero_point) * self.scale

    def regularizer(self, beta: float) -> torch.Tensor:
        """sum(1 - |2h - 1|^beta): zero only when every h is exactly 0 or 1."""
        return (1 - (2 * rectified_sigmoid(self.alpha) - 1).abs().pow(beta)).sum()

    def nearest_integers(self) -> torch.Tensor:
        """Round-to-nearest baseline on the same grid (what AdaRound must beat)."""
        return torch.clamp(torch.round(self.weight / self.scale) + self.zero_point, self.qmin, self.qmax)


class LsqActQuantizer(nn.Module):
    """Per-tensor activation fake-quant with a learned step (LSQ) and optional QDrop.

    The zero point stays fixed (the emitted QDQ's); only the step size learns. The gradient
    scale uses N = elements per sample and Qp = qmax, as in the LSQ paper.

    When the zero point sits at qmin the grid starts at 0.0, so quantizing already applies a
    ReLU; hwopt's PTQ relies on that and folds such ReLUs away. The float path (disabled, or
    an element QDrop keeps in float) therefore keeps that floor at zero, or it would compute a
    different function than the float model.
    """

    def __init__(self, scale: float, zero_point: int, qmin: int, qmax: int) -> None:
        super().__init__()
        self.qmin, self.qmax = int(qmin), int(qmax)
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.register_buffer("zero_point", torch.tensor(float(zero_point)))
        self.drop_prob = 0.0
        self.enabled = True
        self.generator: torch.Generator | None = None
        self.floor_at_zero = int(zero_point) == self.qmin
        #: set when the step came from another bit-width: the first batch seen picks a better start
        self.init_pending = False

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Start the step at the MSE-best fraction (0.2..1.2) of the current one for data `x`."""
        ref = self.float_path(x)
        best, best_err = float(self.scale), math.inf
        for frac in torch.linspace(0.2, 1.2, 21).tolist():
            s = float(self.scale) * frac
            q = torch.clamp(torch.round(x / s) + self.zero_point, self.qmin, self.qmax)
            err = float(((q - self.zero_point) * s - ref).pow(2).mean())
            if err < best_err:
                best, best_err = s, err
        self.scale.fill_(best)
        self.init_pending = False

    def float_path(self, x: torch.Tensor) -> torch.Tensor:
        """What the tensor is in the float model (the folded ReLU restored)."""
        return x.clamp_min(0.0) if self.floor_at_zero else x

    def forward(self, x: torch.Tensor, float_ref: torch.Tensor | None = None) -> torch.Tensor:
        """Quantize `x`; in training with `drop_prob` > 0 each element stays float with that probability.

        `float_ref` is the float model's value of the same tensor (QDrop's block input): a dropped
        element then takes it, so the block sees the float model's input or the quantized model's
        input quantized, never a mix of the two inside one element.
        """
        if not self.enabled:
            return self.float_path(x)
        if self.init_pending:
            self.init_from(x)
        n = x[0].numel() if x.dim() > 1 else x.numel()
        s = grad_scale(self.scale, 1.0 / math.sqrt(max(n, 1) * max(self.qmax, 1))).abs().clamp_min(1e-8)
        q = torch.clamp(round_ste(x / s) + self.zero_point, self.qmin, self.qmax)
        xq = (q - self.zero_point) * s
        if self.training and self.drop_prob > 0:
            keep_float = torch.rand(x.shape, generator=self.generator, device=x.device) < self.drop_prob
            return torch.where(keep_float, self.float_path(x if float_ref is None else float_ref), xq)
        return xq


def weight_quantizers(module: nn.Module) -> Iterator[AdaRoundQuantizer]:
    return (m for m in module.modules() if isinstance(m, AdaRoundQuantizer))


def act_quantizers(module: nn.Module) -> Iterator[LsqActQuantizer]:
    return (m for m in module.modules() if isinstance(m, LsqActQuantizer))


def set_quant_enabled(module: nn.Module, weights: bool, activations: bool) -> None:
    """Switch every quantizer inside `module` on or off (off = the float computation)."""
    for w in weight_quantizers(module):
        w.enabled = weights
    for a in act_quantizers(module):
        a.enabled = activations


@contextmanager
def quant_disabled(module: nn.Module) -> Iterator[nn.Module]:
    """Run `module` as float inside the block, then restore each quantizer's previous state."""
    saved = [(m, m.enabled) for m in module.modules() if isinstance(m, (AdaRoundQuantizer, LsqActQuantizer))]
    set_quant_enabled(module, False, False)
    try:
        yield module
    finally:
        for m, was in saved:
            m.enabled = was
