"""Weight-sharing fine-tune of an ONNX model's elastic space (sandwich rule + KD).

An `OnnxSpace` subnet is a sliced copy of the model, so trained alone its weights would drift
away from every other subnet. Here all subnets read their weights out of one set of shared
full-size tensors: each step trains the largest subnet, the smallest one and `n_random` random
ones (the sandwich rule of BigNAS/OFA) against the original model's outputs (KD) and sums their
gradients into the shared tensors. The result is the original graph with new weights, so
`OnnxSpace.extract` keeps working unchanged (with its original channel order).

Which full-tensor element each subnet weight comes from is read off by extracting the subnet
from a copy of the model whose trainable weights hold their own flat indices: pruning only
slices, so the sliced "weights" are the gather indices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import Tensor

from hwopt.data import Dataset
from hwopt.errors import HwoptError
from hwopt.graph.finetune import check_training_options, distillation_loss, teacher_outputs
from hwopt.graph.to_torch import OnnxModule, onnx_to_torch, weight_initializers
from hwopt.nas.genes import sizes
from hwopt.nas.space import OnnxSpace

_MAX_EXACT = 2**24  # float32 holds every integer index below this exactly


@dataclass
class FinetuneStats:
    epochs: int
    steps: int
    subnets_per_step: int
    seconds: float
    loss_first: float  # mean sandwich loss of the first epoch
    loss_last: float  # ... and of the last one

    def to_dict(self) -> dict:
        return dict(vars(self))


class _SharedSubnet:
    """One subnet run with weights gathered from the shared tensors (autograd flows back)."""

    def __init__(self, module: OnnxModule, sources: dict[str, tuple[str, Tensor]], resolution: tuple[int, int]):
        self.module = module
        self.sources = sources  # subnet initializer -> (full initializer, flat indices)
        self.resolution = resolution

    def __call__(self, shared: dict[str, Tensor], x: Tensor) -> list[Tensor]:
        env: dict[str, Tensor | None] = {self.module.input_names[0]: x, "": None}
        for name, attr in self.module.buffer_names.items():
            env[name] = getattr(self.module, attr)
        for name, (src, idx) in self.sources.items():
            env[name] = shared[src].reshape(-1)[idx].reshape(self.module.tensor(name).shape)
        out = self.module.run_env(env)
        return list(out) if isinstance(out, tuple) else [out]


class SharedWeights:
    """The shared full-size weights of a space, and subnets that read from them."""

    def __init__(self, space: OnnxSpace):
        self.space = space
        self.names = sorted(weight_initializers(space.model))
        inits = {t.name: t for t in space.model.graph.initializer}
        self.tensors = {n: torch.from_numpy(numpy_helper.to_array(inits[n]).astype(np.float32)).requires_grad_(True)
                        for n in self.names}
        too_big = [n for n in self.names if self.tensors[n].numel() >= _MAX_EXACT]
        if too_big:
            raise HwoptError(f"weight {too_big[0]!r} has 2^24 or more elements; weight-sharing fine-tune cannot index it")
        self._index_model = onnx.ModelProto()
        self._index_model.CopyFrom(space.model)
        for t in self._index_model.graph.initializer:
            if t.name in self.tensors:
                t.CopyFrom(numpy_helper.from_array(np.arange(self.tensors[t.name].numel(), dtype=np.float32)
                                                   .reshape(tuple(t.dims)), t.name))
        self._source = {(n.name, slot): name for n in space.model.graph.node for slot, name in enumerate(n.input)
                        if name in self.tensors}
        self._cache: dict[str, _SharedSubnet] = {}

    def subnet(self, config: dict) -> _SharedSubnet:
        key = repr(sorted(config.items()))
        if key in self._cache:
            return self._cache[key]
        index_model = self.space.extract_from(self._index_model, config)
        module = onnx_to_torch(index_model)
        sources: dict[str, tuple[str, Tensor]] = {}
        for node in index_model.graph.node:
            for slot, name in enumerate(node.input):
                src = self._source.get((node.name, slot))
                if name in module.param_names and src is not None and name not in sources:
                    idx = module.tensor(name).detach().reshape(-1).round().long()
                    sources[name] = (src, idx)
        missing = sorted(set(module.param_names) - set(sources))
        if missing:
            raise HwoptError(f"cannot trace subnet weight {missing[0]!r} back to the full model")
        sub = _SharedSubnet(module, sources, tuple(config["resolution"]))
        if len(self._cache) < 4:  # the largest and smallest recur every step; random ones rarely do
            self._cache[key] = sub
        return sub

    def model(self) -> onnx.ModelProto:
        """The space's model with the shared tensors' current values."""
        out = onnx.ModelProto()
        out.CopyFrom(self.space.model)
        for t in out.graph.initializer:
            if t.name in self.tensors:
                dtype = numpy_helper.to_array(t).dtype
                t.CopyFrom(numpy_helper.from_array(self.tensors[t.name].detach().numpy().astype(dtype), t.name))
        return out


def _resize(x: Tensor, hw: tuple[int, int]) -> Tensor:
    return x if tuple(x.shape[2:]) == hw else F.interpolate(x, size=hw, mode="bilinear", align_corners=False)


def finetune_space(space: OnnxSpace, data: Dataset, teacher: onnx.ModelProto, *, epochs: int, lr: float = 1e-3,
                   batch_size: int = 32, n_random: int = 2, temperature: float = 2.0, seed: int = 0,
                   progress: Callable[[str], None] | None = None) -> tuple[onnx.ModelProto, FinetuneStats]:
    """Sandwich-rule KD fine-tune of every subnet of `space` at once; returns the new full model.

    Loss per subnet = 0.5 * T^2 KL to the teacher + 0.5 * CE (labels, when `data` has them); the
    subnets' losses are summed before one Adam step (cosine-decayed `lr`) on the shared weights.
    Deterministic for a given `seed`.
    """
    import time

    check_training_options(epochs=epochs, lr=lr, temperature=temperature, batch_size=batch_size, weights=(0.5,))
    if n_random < 0:
        raise HwoptError(f"n_random must be >= 0, got {n_random}")
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    shared = SharedWeights(space)
    n = sizes(space.genes)
    largest, smallest = space.decode(n - 1), space.decode(np.zeros(len(n), np.int64))
    x_all = torch.from_numpy(np.ascontiguousarray(data.inputs[space.input], dtype=np.float32))
    targets = [torch.from_numpy(np.ascontiguousarray(t)).float() for t in teacher_outputs(teacher, data, batch_size)]
    labels = None if data.labels is None else torch.from_numpy(np.asarray(data.labels)).long()
    steps_per_epoch = -(-len(data) // batch_size)
    opt = torch.optim.Adam(list(shared.tensors.values()), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    history: list[float] = []
    for epoch in range(epochs):
        perm = torch.randperm(len(data), generator=gen)
        total = 0.0
        for i in range(0, len(data), batch_size):
            idx = perm[i : i + batch_size]
            configs = [largest, smallest] + [space.decode(rng.integers(0, n)) for _ in range(n_random)]
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for cfg in configs:
                sub = shared.subnet(cfg)
                pred = sub(shared.tensors, _resize(x_all[idx], sub.resolution))
                loss = distillation_loss(pred, [t[idx] for t in targets], None if labels is None else labels[idx],
                                         temperature=temperature, kd_weight=0.5, ce_weight=0.5)
                if not torch.isfinite(loss):
                    raise HwoptError("weight-sharing fine-tune diverged (loss is not finite); lower the learning rate")
                loss.backward()
                step_loss += float(loss.detach())
            opt.step()
            sched.step()
            total += step_loss / len(configs) * len(idx)
        history.append(total / len(data))
        say(f"weight-sharing fine-tune epoch {epoch + 1}/{epochs}: sandwich loss {history[-1]:.4f}")
    stats = FinetuneStats(epochs, epochs * steps_per_epoch, 2 + n_random, time.perf_counter() - t0,
                          history[0] if history else float("nan"), history[-1] if history else float("nan"))
    return shared.model(), stats
