"""Knowledge-distillation fine-tuning of an ONNX model against a teacher ONNX model.

Pruning recovery and KD-QAT share this loop: the teacher's outputs are computed once with
onnxruntime (the teacher never changes, so running it in torch every step would only cost
time), the student is trained as an `OnnxModule`, and its weights are written back into the
student's own ONNX graph at the end.

Loss per output: classifier scores (N, C) use T^2 * KL(softmax(s/T) || softmax(t/T)) (Hinton
et al.; the T^2 keeps gradient size independent of T); any other output (boxes, masks,
features) uses the mean squared error to the teacher. With labels, cross-entropy on the first
output is added: loss = kd_weight * KD + ce_weight * CE. Without labels it is pure KD.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn

from hwopt.data import Dataset, check_dataset, is_classifier_output, run_outputs
from hwopt.errors import HwoptError
from hwopt.graph.normalize import normalize_model
from hwopt.graph.to_torch import onnx_to_torch, write_back
from hwopt.runtimes import get_runtime


def teacher_outputs(teacher: onnx.ModelProto, data: Dataset, batch_size: int = 32) -> list[np.ndarray]:
    """The teacher's outputs on every sample, from onnxruntime (one pass, 1 thread)."""
    session = get_runtime("onnxruntime").session(teacher, threads=1)
    return run_outputs(session, data, batch_size=batch_size)


def distillation_loss(student: list[Tensor], teacher: list[Tensor], labels: Tensor | None, *,
                      temperature: float, kd_weight: float, ce_weight: float) -> Tensor:
    """kd_weight * sum over outputs of the KD term + ce_weight * CE(first output, labels).

    Without labels only the KD term counts, at full weight (there is nothing to balance it).
    """
    kd = student[0].new_zeros(())
    for s, t in zip(student, teacher):
        if is_classifier_output(t):
            log_p = F.log_softmax(s / temperature, dim=1)
            log_q = F.log_softmax(t / temperature, dim=1)
            kd = kd + F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * temperature**2
        else:
            kd = kd + F.mse_loss(s, t)
    if labels is None or not is_classifier_output(student[0]):
        return kd
    return kd_weight * kd + ce_weight * F.cross_entropy(student[0], labels)


def check_training_options(*, epochs: int, lr: float, temperature: float, batch_size: int, weights: Iterable[float]) -> None:
    """One clear error for options that cannot train."""
    if epochs < 0:
        raise HwoptError(f"epochs must be >= 0, got {epochs}")
    if not lr > 0:
        raise HwoptError(f"learning rate must be > 0, got {lr}")
    if not temperature > 0:
        raise HwoptError(f"temperature must be > 0, got {temperature}")
    if batch_size < 1:
        raise HwoptError(f"batch size must be >= 1, got {batch_size}")
    if any(not (0 <= w <= 1) for w in weights):
        raise HwoptError(f"loss weights must lie in [0, 1], got {list(weights)}")


def _as_outputs(y: Tensor | tuple[Tensor, ...]) -> list[Tensor]:
    return list(y) if isinstance(y, tuple) else [y]


def train_kd(
    module: nn.Module,
    data: Dataset,
    targets: list[np.ndarray],
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    *,
    epochs: int,
    batch_size: int = 32,
    temperature: float = 2.0,
    kd_weight: float = 0.5,
    ce_weight: float = 0.5,
    seed: int = 0,
    quiet: bool = False,
    description: str = "KD fine-tune",
    after_step: Callable[[], None] | None = None,
) -> list[float]:
    """Train `module` (inputs in `data`'s key order) towards `targets`; returns mean loss per epoch.

    The learning rate follows a cosine decay over all steps (small data, few epochs: a late
    low rate settles the weights instead of leaving them mid-jump). `after_step` runs after
    every optimizer step (e.g. to keep quantization scales positive). Several optimizers may
    share the work (e.g. Adam for weights, SGD for LSQ step sizes).
    """
    if len(targets[0]) != len(data):
        raise HwoptError(f"teacher outputs cover {len(targets[0])} samples, data has {len(data)}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    names = list(getattr(module, "input_names", data.inputs))
    inputs = {k: torch.from_numpy(np.ascontiguousarray(data.inputs[k])) for k in names}
    outs = [torch.from_numpy(np.ascontiguousarray(t)).float() for t in targets]
    labels = None if data.labels is None else torch.from_numpy(np.asarray(data.labels)).long()
    n = len(data)
    steps_per_epoch = math.ceil(n / batch_size)
    optimizers = [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer)
    schedules = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=max(1, epochs * steps_per_epoch)) for o in optimizers]
    history: list[float] = []
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                        TimeRemainingColumn(), console=Console(stderr=True), transient=True, disable=quiet)
    module.train()
    with progress:
        task = progress.add_task(description, total=epochs * steps_per_epoch, loss=float("nan"))
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            total = 0.0
            for i in range(0, n, batch_size):
                idx = perm[i : i + batch_size]
                pred = _as_outputs(module(*(inputs[k][idx] for k in names)))
                loss = distillation_loss(pred, [o[idx] for o in outs], None if labels is None else labels[idx],
                                         temperature=temperature, kd_weight=kd_weight, ce_weight=ce_weight)
                if not torch.isfinite(loss):
                    raise HwoptError("fine-tuning diverged (loss is not finite); lower the learning rate")
                for o in optimizers:
                    o.zero_grad(set_to_none=True)
                loss.backward()
                for o, sched in zip(optimizers, schedules):
                    o.step()
                    sched.step()
                if after_step is not None:
                    after_step()
                value = float(loss.detach())
                total += value * len(idx)
                progress.update(task, advance=1, loss=value)
            history.append(total / n)
    module.eval()
    return history


def kd_finetune(
    student: onnx.ModelProto,
    teacher: onnx.ModelProto,
    data: Dataset,
    epochs: int = 3,
    lr: float = 1e-3,
    temperature: float = 2.0,
    alpha: float = 0.5,
    labels_weight: float = 0.5,
    batch_size: int = 32,
    *,
    seed: int = 0,
    quiet: bool = False,
) -> onnx.ModelProto:
    """Fine-tune `student` to match `teacher` on `data`; returns the (normalized) student with
    its trained weights written back into the same graph.

    Loss = alpha * T^2 * KL + labels_weight * CE with labels, T^2 * KL (pure KD) without; outputs
    that are not class scores are matched with MSE instead of KL. Adam, cosine-decayed `lr`.
    Deterministic for a given `seed`.
    """
    check_training_options(epochs=epochs, lr=lr, temperature=temperature, batch_size=batch_size,
                           weights=(alpha, labels_weight))
    model = normalize_model(student)
    check_dataset(data, model)
    targets = teacher_outputs(teacher, data, batch_size)
    if len(targets) != len(model.graph.output):
        raise HwoptError(f"teacher has {len(targets)} outputs, student has {len(model.graph.output)}")
    torch.manual_seed(seed)
    module = onnx_to_torch(model)
    params = list(module.parameters())
    if not params:
        raise HwoptError("the student has no trainable weights (no float Conv/Gemm/MatMul/norm initializers)")
    optimizer = torch.optim.Adam(params, lr=lr)
    train_kd(module, data, targets, optimizer, epochs=epochs, batch_size=batch_size, temperature=temperature,
             kd_weight=alpha, ce_weight=labels_weight, seed=seed, quiet=quiet)
    return write_back(model, module)
