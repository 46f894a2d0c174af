"""Block reconstruction of a QDQ model: AdaRound, QDrop and (with `hwopt.quant.metaaug`) MetaAug.

Plain PTQ rounds every weight to the nearest grid point and fixes activation steps from
statistics; both choices minimise each tensor's own error, not the error of what the network
computes. Reconstruction instead fits, block by block, the quantized block's output to the float
block's output on calibration data; each block is fit on inputs produced by the already-quantized
blocks before it, so later blocks learn to absorb earlier errors. The three methods differ in
what the block computes while its rounding is fit (`ReconstructConfig`):

* adaround (Nagel et al. 2020, QDrop's "case 1"): weights learn *which way to round*
  (`AdaRoundQuantizer`) with the block's activations in float; the activation quantizers keep
  their calibrated steps and are switched back on when the block is finalized;
* qdrop (Wei et al. 2022): activation quantizers are on and their steps learned (LSQ,
  `LsqActQuantizer`), and each activation element (block input included) stays float with
  p = 0.5 during the fit, which makes the learned rounding hold up on data it was not fit on;
* metaaug: qdrop, fit on the calibration images plus images from a meta-learned augmenter.

After each block is fit, its learned rounding is kept only if its error (final hard rounding,
activations quantized) is lower than round-to-nearest's on held-out calibration samples (the
fit samples when there are too few); otherwise the block goes back to its PTQ state.

The QDQ model (see `hwopt.quant.qdq`) is run in torch with the converter's ops
(`hwopt.graph.to_torch`): its weight DequantizeLinear and activation Clip/Q/DQ chains are
replaced by the learnable quantizers, the graph is cut into blocks at single-tensor boundaries
(after residual joins, or every few weighted layers), and the learned integers and steps are
written back into the same initializers (`write_quant_params`) — node and tensor names unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import onnx
import torch
from rich.console import Console
from torch import Tensor, nn

from hwopt.data import Dataset
from hwopt.errors import HwoptError
from hwopt.graph.load import check_model
from hwopt.graph.normalize import normalize_model
from hwopt.graph.to_torch import OnnxModule, onnx_to_torch
from hwopt.graph.torch_ops import OPS
from hwopt.quant.fakequant import (
    AdaRoundQuantizer,
    LsqActQuantizer,
    act_quantizers,
    quant_disabled,
    weight_quantizers,
)
from hwopt.quant.qdq import QuantRecord, activation_record, check_bits, read_quant_params, weight_record, write_quant_params

METHODS = ("adaround", "qdrop", "metaaug")
META_KEY = "hwopt.reconstruct"
#: how far (in total Adam travel, lr x iterations) an LSQ activation step may move during one
#: block's fit: QDrop's 4e-5 learning rate over its 20 000 iterations
ACT_STEP_TRAVEL = 4e-5 * 20_000
#: ops after which a block may end even if it has fewer than `block_layers` weighted layers
JOIN_OPS = frozenset({"Add", "Sum", "Concat", "Mul"})

_stderr = Console(stderr=True, highlight=False)


@dataclass
class ReconstructConfig:
    """Hyper-parameters of one reconstruction run (defaults sized for CPU and small models)."""

    method: str = "qdrop"
    iters: int = 500
    batch_size: int = 32
    lr_round: float = 3e-2
    lr_act: float | None = 4e-5  # QDrop's rate; None: ACT_STEP_TRAVEL / iters (see `act_lr`)
    round_weight: float = 1.0
    warmup: float = 0.2
    beta_range: tuple[float, float] = (20.0, 2.0)
    drop_prob: float = 0.5
    seed: int = 0

    @property
    def drop(self) -> float:
        """Probability of keeping an activation element in float (0 for plain AdaRound)."""
        return self.drop_prob if self.method in ("qdrop", "metaaug") else 0.0

    @property
    def act_lr(self) -> float:
        """Adam learning rate of the LSQ activation steps.

        Adam moves a parameter by about its learning rate per step whatever the gradient's scale,
        so how far a step can travel is lr x iterations. QDrop's recipe (4e-5 over 20 000
        iterations) allows 0.8; at the few hundred iterations a CPU affords, the same 4e-5 leaves
        the steps near where calibration put them (0.004 of travel at 100 iterations). `lr_act=None`
        keeps the recipe's travel instead. It is not the default: it helped QDrop on the W4A4
        MobileNetV2 benchmark (+3.3 points with 32 images) but hurt QDrop and MetaAug on the small
        test CNN (logit error 3.9 -> 4.3 and 3.2 -> 4.5), see docs/reconstruct.md.
        """
        return self.lr_act if self.lr_act is not None else ACT_STEP_TRAVEL / max(self.iters, 1)

    @property
    def quantized_activations(self) -> bool:
        """Whether the block's activations are quantized (and their steps learned) during the fit.

        AdaRound fits the rounding with float activations; BRECQ-style QDrop and MetaAug fit it
        with the activation quantizers on, which is what QDrop's paper shows to matter at A4.
        """
        return self.method != "adaround"

    def beta(self, it: int, iters: int | None = None) -> float | None:
        """Annealed exponent of the rounding regularizer; None during the warm-up (no regularizer)."""
        total = iters or self.iters
        start = self.warmup * total
        if it < start:
            return None
        hi, lo = self.beta_range
        return lo + (hi - lo) * max(0.0, 1 - (it - start) / max(total - start, 1))


# ---- the reconstruction of one block ----------------------------------------------------------


def block_outputs(block: nn.Module, xs: Sequence[Tensor], **kwargs: list[Tensor]) -> tuple[Tensor, ...]:
    out = block(*xs, **kwargs)
    return out if isinstance(out, tuple) else (out,)


def run_block(block: nn.Module, xs: Sequence[Tensor], batch_size: int = 64) -> list[Tensor]:
    """Outputs of `block` over all samples, computed in batches without gradients."""
    chunks: list[tuple[Tensor, ...]] = []
    n = len(xs[0])
    with torch.no_grad():
        for i in range(0, n, batch_size):
            chunks.append(block_outputs(block, [x[i : i + batch_size] for x in xs]))
    return [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def reconstruction_error(outs: Sequence[Tensor], targets: Sequence[Tensor], loss_outputs: Sequence[int]) -> Tensor:
    """Squared error summed over each sample's features, averaged over samples (BRECQ's loss)."""
    total = outs[0].new_zeros(())
    for k in loss_outputs:
        total = total + (outs[k] - targets[k]).pow(2).reshape(len(outs[k]), -1).sum(1).mean()
    return total


def mix_inputs(fp: Sequence[Tensor], q: Sequence[Tensor], p: float, gen: torch.Generator) -> list[Tensor]:
    """QDrop's block input: each element float with probability p, else the quantized model's value."""
    if p <= 0:
        return list(q)
    return [torch.where(torch.rand(f.shape, generator=gen) < p, f, qq) if f.is_floating_point() else qq for f, qq in zip(fp, q)]


def drop_inputs(block: nn.Module, fp: Sequence[Tensor], q: Sequence[Tensor], p: float,
                gen: torch.Generator) -> tuple[list[Tensor], dict[str, list[Tensor]]]:
    """(args, kwargs) of QDrop's training call of `block` on float inputs `fp` and quantized `q`.

    A `QdqBlock` quantizes its own inputs: there the drop happens in that quantizer, so that each
    input element is the float model's value (probability p) or the quantized model's value
    quantized, as in QDrop. Mixing the raw tensors first and then dropping again in the
    quantizer (the earlier code) gave the block the quantized input, as deployed, for only a
    quarter of the elements and fed it quantized float values for another quarter. An input
    that a QdqBlock reads raw, or through a quantizer an earlier block owns (final, no drop),
    gets the quantized model's value only. Other modules get the element-wise mix of `mix_inputs`.
    """
    if p > 0 and isinstance(block, QdqBlock):
        return list(q), {"float_inputs": list(fp)}
    return mix_inputs(fp, q, p, gen), {}


def evaluate_block(block: nn.Module, xs: Sequence[Tensor], targets: Sequence[Tensor], loss_outputs: Sequence[int]) -> float:
    """Mean reconstruction error of `block` (eval mode, no QDrop) over all samples."""
    was = block.training
    block.eval()
    outs = run_block(block, xs)
    block.train(was)
    return float(reconstruction_error(outs, targets, loss_outputs))


def learnable(block: nn.Module) -> tuple[list[AdaRoundQuantizer], list[LsqActQuantizer]]:
    """Quantizers of `block` still to be learned (earlier blocks' shared ones are final)."""
    return [w for w in weight_quantizers(block) if not w.hard], [a for a in act_quantizers(block) if a.scale.requires_grad]


def finalize(block: nn.Module) -> None:
    """Hard rounding, no QDrop, frozen steps: the block now computes what the ONNX model will."""
    w_list, a_list = learnable(block)
    for w in w_list:
        w.hard = True
    for a in a_list:
        a.drop_prob = 0.0
        a.scale.requires_grad_(False)
    block.eval()


@contextmanager
def float_activations(a_list: Sequence[LsqActQuantizer], on: bool) -> Iterator[None]:
    """While `on`, the given activation quantizers pass their input through in float (AdaRound's fit)."""
    saved = [a.enabled for a in a_list]
    if on:
        for a in a_list:
            a.enabled = False
    try:
        yield
    finally:
        for a, was in zip(a_list, saved):
            a.enabled = was


def reconstruct_block(
    block: nn.Module,
    fp_inputs: Sequence[Tensor],
    q_inputs: Sequence[Tensor],
    targets: Sequence[Tensor],
    cfg: ReconstructConfig,
    gen: torch.Generator,
    loss_outputs: Sequence[int] | None = None,
    check: tuple[Sequence[Tensor], Sequence[Tensor]] | None = None,
    augment: tuple[AugmentFn, int] | None = None,
) -> dict:
    """Fit the block's rounding (and, but for AdaRound, activation steps) so that block(q_inputs) ~ targets.

    `fp_inputs` are the float model's block inputs (QDrop mixes them in); `loss_outputs` picks
    the outputs that count (a block's pass-through outputs carry no error of its own). `check`
    = (quantized inputs, targets) decides whether the learned rounding is kept: if the finalized
    block's error there is higher than with round-to-nearest (the fit can overfit, or end before
    the rounding settles), the block is put back to its starting state (nearest rounding,
    calibrated steps) and "reverted" is True. Without `check` the fit samples decide.
    `augment` = (source, rounds): extra fit data, renewed `rounds` times during the fit (MetaAug).
    """
    loss_outputs = list(range(len(targets))) if loss_outputs is None else list(loss_outputs)
    w_list, a_list = learnable(block)
    if not (w_list or a_list) or not loss_outputs:
        finalize(block)
        return {"weights": 0, "activations": 0, "iters": 0}
    check_x, check_t = check if check is not None else (q_inputs, targets)
    n = len(q_inputs[0])
    with torch.no_grad():  # LSQ steps of changed bit-widths start at their MSE-best value
        block.eval()
        block_outputs(block, [x[: min(n, 256)] for x in q_inputs])
    start = [w.alpha.detach().clone() for w in w_list], [a.scale.detach().clone() for a in a_list]
    for w in w_list:
        w.hard = True
    nearest = evaluate_block(block, check_x, check_t, loss_outputs)
    for a in a_list:
        a.drop_prob, a.generator = cfg.drop, gen
    with float_activations(a_list, not cfg.quantized_activations):
        # the error is measured relative to round-to-nearest and the regularizer per weight, so
        # that one `round_weight` balances them for any block size and output magnitude
        scale = max(evaluate_block(block, q_inputs, targets, loss_outputs), 1e-12)
        for w in w_list:
            w.hard = False
        fit_block(block, w_list, a_list if cfg.quantized_activations else [], (fp_inputs, q_inputs, targets),
                  loss_outputs, scale, cfg, gen, augment)
    finalize(block)
    learned = evaluate_block(block, check_x, check_t, loss_outputs)
    reverted = learned > nearest
    if reverted:
        with torch.no_grad():
            for w, alpha in zip(w_list, start[0]):
                w.alpha.copy_(alpha)
            for a, step in zip(a_list, start[1]):
                a.scale.copy_(step)
    return {"weights": len(w_list), "activations": len(a_list), "iters": cfg.iters,
            "error_nearest": nearest, "error_learned": learned, "reverted": reverted}


def fit_block(block: nn.Module, w_list: Sequence[AdaRoundQuantizer], a_list: Sequence[LsqActQuantizer],
              data: tuple[Sequence[Tensor], Sequence[Tensor], Sequence[Tensor]], loss_outputs: Sequence[int],
              scale: float, cfg: ReconstructConfig, gen: torch.Generator, augment: tuple[AugmentFn, int] | None = None) -> None:
    """`cfg.iters` Adam steps on the rounding variables of `w_list` and the steps of `a_list`.

    `data` = (float inputs, quantized inputs, float targets). With `augment` = (source, rounds),
    the fit data is `data` plus the source's, asked again every iters/rounds steps, so that the
    augmenter is meta-trained against the block as it is being fit (MetaAug's alternation).
    """
    n_weights = sum(w.alpha.numel() for w in w_list)
    for w in w_list:
        w.alpha.requires_grad_(True)
    opt_w = torch.optim.Adam([w.alpha for w in w_list], lr=cfg.lr_round) if w_list else None
    opt_a = torch.optim.Adam([a.scale for a in a_list], lr=cfg.act_lr) if a_list else None
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_a, T_max=max(cfg.iters, 1)) if opt_a else None
    every = math.ceil(cfg.iters / augment[1]) if augment else 0
    fp_inputs, q_inputs, targets = data
    n = len(q_inputs[0])
    for it in range(cfg.iters):
        if augment and it % every == 0:
            extra = augment[0](it)
            fp_inputs, q_inputs, targets = ([torch.cat([u, v]) for u, v in zip(x, y)] for x, y in zip(data, extra))
            n = len(q_inputs[0])
        block.train()
        idx = torch.randint(n, (min(cfg.batch_size, n),), generator=gen)
        xs, kw = drop_inputs(block, [f[idx] for f in fp_inputs], [q[idx] for q in q_inputs], cfg.drop, gen)
        loss = reconstruction_error(block_outputs(block, xs, **kw), [t[idx] for t in targets], loss_outputs) / scale
        beta = cfg.beta(it)
        if beta is not None and w_list:
            loss = loss + cfg.round_weight * sum(w.regularizer(beta) for w in w_list) / n_weights
        for opt in (opt_w, opt_a):
            if opt:
                opt.zero_grad()
        loss.backward()
        for opt in (opt_w, opt_a):
            if opt:
                opt.step()
        if sched:
            sched.step()


# ---- the sequence of blocks -------------------------------------------------------------------


class BlockData(Protocol):
    """Extra (augmented) block data for reconstruction: MetaAug implements it."""

    #: how many times during one block's fit the augmenter is updated and its data renewed
    rounds: int

    def block_data(self, blocks: list[nn.Module], b: int, fp_x: list[Tensor], q_x: list[Tensor],
                   it: int) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """(fp inputs, quantized inputs, float targets) of block `b` to add to the fit data, at fit
        iteration `it` (the block's rounding as learned so far)."""


#: a source of extra fit data for one block, called with the fit iteration
AugmentFn = Callable[[int], tuple[list[Tensor], list[Tensor], list[Tensor]]]


def run_chain(blocks: Sequence[nn.Module], xs: Sequence[Tensor]) -> list[Tensor]:
    """Feed `xs` through consecutive blocks (each block's outputs are the next one's inputs)."""
    for block in blocks:
        xs = list(block_outputs(block, xs))
    return list(xs)


def held_out(n: int) -> int:
    """Calibration samples kept out of the fit to decide learned vs nearest rounding per block.

    One in eight once there are 64 or more (at most 64); below that every sample is needed for
    the fit, and the fit samples decide.
    """
    return min(n // 8, 64) if n >= 64 else 0


def reconstruct_chain(
    blocks: list[nn.Module],
    inputs: list[Tensor],
    cfg: ReconstructConfig,
    *,
    loss_outputs: list[list[int]] | None = None,
    augment: BlockData | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> list[dict]:
    """Reconstruct `blocks` in order (BRECQ): block b learns on the quantized blocks' outputs.

    The last `held_out(n)` samples are not fit; they decide whether each block keeps its learned
    rounding (`reconstruct_block`). Block inputs and targets of all samples are held in memory
    (callers cap the sample count).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    fp_x, q_x = list(inputs), list(inputs)
    n_fit = len(inputs[0]) - held_out(len(inputs[0]))
    stats = []
    for b, block in enumerate(blocks):
        with quant_disabled(block):
            block.eval()
            targets = run_block(block, fp_x)
        fit_fp, fit_q, fit_t = ([t[:n_fit] for t in ts] for ts in (fp_x, q_x, targets))
        check = ([t[n_fit:] for t in q_x], [t[n_fit:] for t in targets]) if n_fit < len(inputs[0]) else None
        source = None
        if augment is not None and learnable(block)[0]:
            source = (lambda it, b=b, fp=fit_fp, q=fit_q: augment.block_data(blocks, b, fp, q, it)), augment.rounds
        st = reconstruct_block(block, fit_fp, fit_q, fit_t, cfg, gen, None if loss_outputs is None else loss_outputs[b],
                               check=check, augment=source)
        q_x = run_block(block, q_x)
        fp_x = targets
        st["block"] = b
        stats.append(st)
        if st["iters"]:
            kept = (" -> kept round-to-nearest: the learned rounding was worse on the "
                    f"{'held-out' if check else 'fit'} samples") if st["reverted"] else ""
            log(f"block {b + 1}/{len(blocks)}: {st['weights']} weights, {st['activations']} activations, "
                f"error {st['error_nearest']:.4g} (nearest) -> {st['error_learned']:.4g} (learned){kept}")
    return stats


# ---- the QDQ ONNX model as torch blocks -------------------------------------------------------


def _key(i: int, prefix: str) -> str:
    return f"{prefix}{i}"


class QdqBlock(nn.Module):
    """A run of the QDQ graph's nodes from one set of tensors to the next, with learnable quantizers.

    The quantizers a block uses first are registered in it (so `functional_call` and optimizers
    see them); quantizers owned by earlier blocks are reached through the net, already final.
    """

    def __init__(self, net: QdqNet, steps: list, inputs: list[str], outputs: list[str], owned_w: list[str], owned_a: list[str]):
        super().__init__()
        self.net = [net]  # a list, so that the shared net is not registered as a child
        self.steps = steps
        self.input_names, self.output_names = inputs, outputs
        self.wq = nn.ModuleDict({net.w_keys[t]: net.wq[t] for t in owned_w})
        self.aq = nn.ModuleDict({net.a_keys[t]: net.aq[t] for t in owned_a})

    def forward(self, *xs: Tensor, float_inputs: Sequence[Tensor] | None = None) -> tuple[Tensor, ...]:
        """The block on inputs `xs`; `float_inputs` (QDrop's fit, see `drop_inputs`) are the float
        model's values of the same inputs, taken by the elements the input quantizers drop."""
        net = self.net[0]
        env: dict[str, Tensor | None] = net.constants()
        env.update(zip(self.input_names, xs))
        ref = dict(zip(self.input_names, float_inputs)) if float_inputs is not None else {}
        for node in self.steps:
            args = [net.value(name, env, ref) for name in node.inputs]
            result = OPS[node.op_type](args, node.attrs)
            if isinstance(result, tuple):
                env.update((o, r) for o, r in zip(node.outputs, result) if o)
            else:
                env[node.outputs[0]] = result
        return tuple(env[o] for o in self.output_names)


class QdqNet:
    """A hwopt QDQ model prepared for reconstruction: converter module, quantizers, blocks."""

    def __init__(self, qdq_model: onnx.ModelProto, float_model: onnx.ModelProto | None, *, wbits: int | None = None,
                 abits: int | None = None, block_layers: int = 3) -> None:
        self.records = read_quant_params(qdq_model)
        if not self.records:
            raise HwoptError("the model has no hwopt QDQ metadata: quantize it first (hwopt quantize / hwopt.quant.ptq)")
        self.module: OnnxModule = onnx_to_torch(qdq_model)
        self.module.requires_grad_(False)
        self.notes: list[str] = []
        chain = {name for r in self.records.values() for name in (r.dq, r.q, r.clip) if name}
        dq_out = {n.name: n.outputs[0] for n in self.module.nodes if n.name in chain}
        self.weight_src = {dq_out[r.dq]: t for t, r in self.records.items() if r.kind == "weight"}
        self.act_src = {dq_out[r.dq]: t for t, r in self.records.items() if r.kind == "activation"}
        steps = [n for n in self.module.nodes if n.name not in chain]
        self.folded = fold_constants(steps, self._module_constants())
        self.steps = [n for n in steps if n.outputs[0] not in self.folded]
        floats = {t.name: onnx.numpy_helper.to_array(t) for t in float_model.graph.initializer} if float_model is not None else {}
        self.wq: dict[str, AdaRoundQuantizer] = {}
        self.aq: dict[str, LsqActQuantizer] = {}
        for t, rec in sorted(self.records.items()):
            if rec.kind == "weight":
                w = self._float_weight(rec, floats.get(t))
                if wbits is not None and wbits != rec.bits:
                    rec = weight_record(t, w, wbits, rec.axis, scheme=rec.scheme)
                self.records[t] = rec
                self.wq[t] = _adaround_for(rec, w)
            else:
                if abits is not None and abits != rec.bits:
                    lo, hi = rec.float_range()
                    rec = replace(activation_record(t, float(lo), float(hi), abits, rec.symmetric, scheme=rec.scheme),
                                       dq=rec.dq, q=rec.q, clip=rec.clip)
                    self.records[t] = rec
                    self.aq[t] = _lsq_for(rec, init_from_data=True)
                else:
                    self.aq[t] = _lsq_for(rec, init_from_data=False)
        self.w_keys = {t: _key(i, "w") for i, t in enumerate(self.wq)}
        self.a_keys = {t: _key(i, "a") for i, t in enumerate(self.aq)}
        self.input_names = list(self.module.input_names)
        self.output_names = list(self.module.output_names)
        self.blocks = self._make_blocks(block_layers)

    def _float_weight(self, rec: QuantRecord, w: np.ndarray | None) -> np.ndarray:
        """The float weight to round: the float model's, unless it is not the one this QDQ rounded.

        A float model whose weights were changed before quantization (e.g. cross-layer
        equalization) would give the wrong function; then the dequantized weight is used.
        """
        deq = rec.dequantized()
        if w is None or w.shape != deq.shape:
            self.notes.append(f"{rec.tensor}: no matching float weight; learning from the dequantized weight")
            return deq
        s = _along_axis(rec, rec.scale, w.ndim)
        q = rec.int_weight.astype(np.float32)
        inside = (q > rec.qmin) & (q < rec.qmax)
        far = np.abs(w / s - q) > 0.51
        if (far & inside).mean() > 0.01:
            self.notes.append(f"{rec.tensor}: float model weight does not match the QDQ grid; learning from the dequantized weight")
            return deq
        return w.astype(np.float32)

    def _module_constants(self) -> dict[str, Tensor | None]:
        m = self.module
        env: dict[str, Tensor | None] = {"": None}
        env.update((name, getattr(m, attr)) for name, attr in m.param_names.items())
        env.update((name, getattr(m, attr)) for name, attr in m.buffer_names.items())
        return env

    def constants(self) -> dict[str, Tensor | None]:
        """Initializers and the values of constant-only subgraphs (see `fold_constants`)."""
        env = self._module_constants()
        env.update(self.folded)
        return env

    def value(self, name: str, env: dict[str, Tensor | None], float_ref: dict[str, Tensor] | None = None) -> Tensor | None:
        """A node input: a learned weight, a fake-quantized activation, or a plain value.

        `float_ref` holds float-model values of block inputs, for the elements QDrop keeps float.
        """
        if name in self.weight_src:
            return self.wq[self.weight_src[name]]()
        if name in self.act_src:
            if name not in env:
                src = self.act_src[name]
                env[name] = self.aq[src](env[src], (float_ref or {}).get(src))
            return env[name]
        return env[name]

    def _make_blocks(self, block_layers: int) -> list[QdqBlock]:
        spans = partition(self.steps, self.input_names, self.output_names, self.act_src, self.weight_src, block_layers,
                          shape_values=shape_derived(self.steps, self.constants().keys()))
        blocks: list[QdqBlock] = []
        seen_w: set[str] = set()
        seen_a: set[str] = set()
        for start, end, ins, outs in spans:
            used = {name for node in self.steps[start:end] for name in node.inputs}
            ws = [self.weight_src[n] for n in sorted(used) if n in self.weight_src and self.weight_src[n] not in seen_w]
            acts = [self.act_src[n] for n in sorted(used) if n in self.act_src and self.act_src[n] not in seen_a]
            seen_w.update(ws)
            seen_a.update(acts)
            blocks.append(QdqBlock(self, self.steps[start:end], ins, outs, ws, acts))
        return blocks

    def loss_outputs(self) -> list[list[int]]:
        """Per block, the outputs computed inside it (pass-through outputs carry no error)."""
        return [[k for k, o in enumerate(b.output_names) if o not in b.input_names] for b in self.blocks]

    def learned_records(self) -> list[QuantRecord]:
        """Records with the learned integer weights and activation steps, ready to write back."""
        out = []
        for t, rec in self.records.items():
            if rec.kind == "weight":
                ints = self.wq[t].integers().detach().round().numpy().astype(np.int8)
                out.append(replace(rec, int_weight=ints))
            else:
                step = abs(float(self.aq[t].scale.detach()))
                if not np.isfinite(step):  # a diverged step (seen once in MetaAug): keep the calibrated one
                    step = float(np.asarray(rec.scale).reshape(-1)[0])
                out.append(replace(rec, scale=np.asarray(max(step, 1e-8), np.float32).reshape(np.shape(rec.scale))))
        return out


def _along_axis(rec: QuantRecord, a: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel parameter shaped to broadcast against the weight (scalars stay scalars)."""
    a = np.asarray(a, np.float32)
    if rec.axis is None or a.ndim == 0:
        return a
    shape = [1] * ndim
    shape[rec.axis] = -1
    return a.reshape(shape)


def _adaround_for(rec: QuantRecord, w: np.ndarray) -> AdaRoundQuantizer:
    scale = _along_axis(rec, rec.scale, w.ndim)
    zp = _along_axis(rec, rec.zero_point, w.ndim)
    return AdaRoundQuantizer(torch.from_numpy(np.ascontiguousarray(w)), torch.from_numpy(np.array(scale)),
                             torch.from_numpy(np.array(zp)), rec.qmin, rec.qmax)


def _lsq_for(rec: QuantRecord, *, init_from_data: bool) -> LsqActQuantizer:
    q = LsqActQuantizer(float(rec.scale), int(rec.zero_point), rec.qmin, rec.qmax)
    q.init_pending = init_from_data
    return q


def fold_constants(steps: list, constants: dict[str, Tensor | None]) -> dict[str, Tensor]:
    """Values of the nodes that read only initializers (and each other), computed once.

    Exporters (Paddle especially) leave constant subgraphs in the graph: a bias reshaped to
    (1, C, 1, 1), a Cast of a filled constant feeding a shape Concat. Such a value has no sample
    axis, so it must not become a block input or output (blocks are run, batched and sliced
    along the sample axis); folding them makes them constants of every block.
    """
    env = dict(constants)
    folded: dict[str, Tensor] = {}
    with torch.no_grad():
        for node in steps:
            if not all(name in env for name in node.inputs):
                continue
            result = OPS[node.op_type]([env[name] for name in node.inputs], node.attrs)
            values = result if isinstance(result, tuple) else (result,)
            for o, v in zip(node.outputs, values):
                if o:
                    env[o] = folded[o] = v
    return folded


def shape_derived(steps: list, constants: Collection[str]) -> set[str]:
    """Tensors computed from tensor shapes only: Shape/Size outputs, and what nodes compute from
    them and `constants` alone (e.g. Gather -> Unsqueeze -> Concat into a Reshape target).

    They have no sample axis, so a block cut must not pass them from one block to the next.
    """
    shaped: set[str] = set()
    for node in steps:
        ins = [n for n in node.inputs if n]
        if node.op_type in ("Shape", "Size") or (
                any(n in shaped for n in ins) and all(n in shaped or n in constants for n in ins)):
            shaped.update(o for o in node.outputs if o)
    return shaped


def partition(steps: list, graph_inputs: list[str], graph_outputs: list[str], act_src: dict[str, str],
              weight_src: dict[str, str], block_layers: int = 3, *,
              shape_values: set[str] = frozenset()) -> list[tuple[int, int, list[str], list[str]]]:
    """Cut the node sequence into blocks: (start, end, input tensors, output tensors).

    A cut is allowed where the next node reads a quantized activation or a weight (so each
    block starts at quantization points) and at least one weighted layer lies on each side.
    It is taken where a single tensor crosses it and the block has `block_layers` weighted
    layers or has passed a join (residual Add / Concat); a block that reaches 3 x block_layers
    layers is cut at the next allowed place whatever crosses it (e.g. U-Net skips).
    """
    def dep(name: str) -> str:
        return act_src.get(name, name)

    produced = {t: -1 for t in graph_inputs}
    for i, node in enumerate(steps):
        for o in node.outputs:
            if o:
                produced[o] = i
    last_use: dict[str, float] = {}
    for i, node in enumerate(steps):
        for name in node.inputs:
            t = dep(name)
            if t in produced:
                last_use[t] = max(last_use.get(t, -1), i)
    for o in graph_outputs:
        last_use[o] = math.inf
    is_layer = [any(n in weight_src for n in node.inputs) for node in steps]
    starts_q = [any(n in act_src or n in weight_src for n in node.inputs) for node in steps]
    layers_after = np.cumsum(is_layer[::-1])[::-1].tolist() + [0]
    order = sorted(produced, key=lambda t: produced[t])

    def live(i: int) -> list[str]:
        return [t for t in order if produced[t] <= i and last_use.get(t, -1) > i]

    spans: list[tuple[int, int, list[str], list[str]]] = []
    start, layers, joined = 0, 0, False
    ins = [t for t in graph_inputs if t in last_use]
    for i, node in enumerate(steps[:-1]):
        layers += is_layer[i]
        joined = joined or (node.op_type in JOIN_OPS and sum(dep(n) in produced for n in node.inputs) >= 2)
        if not layers or not layers_after[i + 1] or not starts_q[i + 1]:
            continue
        crossing = live(i)
        if any(t in shape_values for t in crossing):
            continue
        if (len(crossing) == 1 and (layers >= block_layers or joined)) or layers >= 3 * block_layers:
            spans.append((start, i + 1, ins, crossing))
            start, layers, joined, ins = i + 1, 0, False, crossing
    spans.append((start, len(steps), ins, list(graph_outputs)))
    return spans


# ---- public entry -----------------------------------------------------------------------------


def _calib_tensors(calib: Dataset, names: list[str], n: int) -> list[Tensor]:
    missing = [k for k in names if k not in calib.inputs]
    if missing:
        raise HwoptError(f"calibration data lacks model input(s) {missing}; it has {sorted(calib.inputs)}")
    out = []
    for k in names:
        arr = np.asarray(calib.inputs[k][:n])
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all():
                raise HwoptError(f"calibration data {k!r} contains NaN or inf values")
            arr = arr.astype(np.float32)
        out.append(torch.from_numpy(np.ascontiguousarray(arr)))
    return out


def sample_budget(net: QdqNet, probe: list[Tensor], memory_mb: float, copies: int) -> int:
    """Samples whose block activations (inputs + outputs, `copies` sets) fit in `memory_mb`."""
    per_sample = 0
    xs = [x[:1] for x in probe]
    with torch.no_grad():
        for block in net.blocks:
            with quant_disabled(block):
                block.eval()
                outs = block_outputs(block, xs)
            per_sample = max(per_sample, sum(t.numel() * t.element_size() for t in (*xs, *outs)))
            xs = list(outs)
    return max(1, int(memory_mb * 2**20 // max(copies * per_sample, 1)))


def image_input(net: QdqNet, inputs: list[Tensor]) -> bool:
    """MetaAug's augmenter is convolutional: one float input shaped (N, C, H, W)."""
    return len(inputs) == 1 and inputs[0].dim() == 4 and inputs[0].is_floating_point()


def reconstruct(
    float_model: onnx.ModelProto,
    qdq_model: onnx.ModelProto,
    calib: Dataset,
    method: str = "qdrop",
    wbits: int | None = None,
    abits: int | None = None,
    iters: int = 500,
    batch_size: int = 32,
    seed: int = 0,
    quiet: bool = False,
    *,
    max_samples: int = 512,
    block_layers: int = 3,
    memory_mb: float = 1024,
    meta_iters: int | None = None,
    lr_act: float | None = 4e-5,
) -> onnx.ModelProto:
    """Learned rounding (AdaRound), QDrop or MetaAug reconstruction of a hwopt QDQ model.

    `float_model` supplies the float weights that are rounded (and the reference the blocks
    are fit to); `qdq_model` the grid and graph. `wbits`/`abits` re-quantize to other bits
    first (None: keep the model's). At most `max_samples` calibration samples are used, fewer
    if their block activations would exceed `memory_mb`. Returns a copy of `qdq_model` with
    the learned integers and steps, the same nodes and names, and a "hwopt.reconstruct"
    metadata entry (method actually used, per-block errors, "reverted_blocks": 0-based blocks that
    kept round-to-nearest because their learned rounding was worse on held-out samples).
    `lr_act`: Adam rate of the activation steps (None: scaled to `iters`, `ReconstructConfig.act_lr`).
    """
    if method not in METHODS:
        raise HwoptError(f"unknown reconstruction method {method!r}; choose one of {', '.join(METHODS)}")
    for bits, what in ((wbits, "weight bits"), (abits, "activation bits")):
        if bits is not None:
            check_bits(bits, what)
    if iters < 1 or batch_size < 1 or max_samples < 1:
        raise HwoptError("iters, batch_size and max_samples must be positive")
    if len(calib) == 0:
        raise HwoptError("calibration data set is empty")
    log: Callable[[str], None] = (lambda _: None) if quiet else (lambda m: _stderr.print(m, soft_wrap=True))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = QdqNet(qdq_model, normalize_model(float_model), wbits=wbits, abits=abits, block_layers=block_layers)
        for note in net.notes:
            log(f"note: {note}")
        probe = _calib_tensors(calib, net.input_names, 1)
        used = method
        if method == "metaaug" and not image_input(net, probe):
            log("metaaug needs one image input (N, C, H, W); this model has other inputs, so qdrop is used instead")
            used = "qdrop"
        copies = 4 if used == "metaaug" else 3  # fp inputs, quantized inputs, targets (+ augmented share)
        n = min(len(calib), max_samples, sample_budget(net, probe, memory_mb, copies))
        if n < min(len(calib), max_samples):
            log(f"using {n} calibration samples so that block activations stay under {memory_mb:.0f} MB")
        inputs = _calib_tensors(calib, net.input_names, n)
        cfg = ReconstructConfig(method=used, iters=iters, batch_size=batch_size, seed=seed, lr_act=lr_act)
        augment = None
        if used == "metaaug":
            from hwopt.quant.metaaug import MetaAugmenter  # metaaug builds on this module's block helpers

            augment = MetaAugmenter(inputs[0][: n - held_out(n)], cfg, meta_iters=meta_iters, log=log)
        log(f"{used} reconstruction: {len(net.blocks)} blocks, {n} samples ({held_out(n)} held out to check "
            f"each block against round-to-nearest), {iters} iterations per block")
        stats = reconstruct_chain(net.blocks, inputs, cfg, loss_outputs=net.loss_outputs(), augment=augment, log=log)
    out = write_quant_params(qdq_model, net.learned_records())
    reverted = [st["block"] for st in stats if st.get("reverted")]
    if reverted:
        log(f"{len(reverted)} of {sum(1 for st in stats if st['iters'])} blocks kept round-to-nearest "
            f"(learned rounding was worse): blocks {', '.join(str(b + 1) for b in reverted)}")
    summary = {"method": used, "requested": method, "samples": n, "held_out": held_out(n), "iters": iters, "seed": seed,
               "lr_act": cfg.act_lr,
               "blocks": stats, "reverted_blocks": reverted, "notes": net.notes}
    keep = [p for p in out.metadata_props if p.key != META_KEY]
    del out.metadata_props[:]
    out.metadata_props.extend(keep)
    out.metadata_props.add(key=META_KEY, value=json.dumps(summary))
    check_model(out, name="reconstructed model")
    return out


def reconstruct_summary(model: onnx.ModelProto) -> dict:
    """The "hwopt.reconstruct" metadata of a reconstructed model ({} if none)."""
    for p in model.metadata_props:
        if p.key == META_KEY:
            return json.loads(p.value)
    return {}
