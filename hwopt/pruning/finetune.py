"""Recovery fine-tuning: knowledge distillation from the original model on calibration data.

The pruned ONNX graph is run as a torch module (`hwopt.graph.to_torch`), so only weight values
change and the graph we validated is the graph we ship. The teacher's outputs are computed once
with onnxruntime. Loss: T²·KL(softmax(z_s/T) ‖ softmax(z_t/T)) for class scores, MSE otherwise.
"""

from __future__ import annotations

import numpy as np
import onnx

from hwopt.data import Dataset, is_classifier_output
from hwopt.errors import HwoptError


def teacher_outputs(model: onnx.ModelProto, data: Dataset, batch_size: int = 32) -> np.ndarray:
    """First output of `model` on every sample, from onnxruntime (1 thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, feeds)[0] for feeds in data.batches(batch_size)])


def kd_finetune(
    student: onnx.ModelProto,
    teacher: onnx.ModelProto,
    data: Dataset,
    *,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 32,
    temperature: float = 2.0,
    seed: int = 0,
) -> onnx.ModelProto:
    """Fine-tuned copy of `student` (a pruned, normalized model) distilled from `teacher`."""
    import torch
    import torch.nn.functional as F

    from hwopt.graph.to_torch import onnx_to_torch, write_back

    if len(student.graph.input) != 1:
        raise HwoptError("fine-tuning supports single-input models")
    name = student.graph.input[0].name
    x_all = torch.from_numpy(np.ascontiguousarray(data.inputs[name], dtype=np.float32))
    t_all = torch.from_numpy(teacher_outputs(teacher, data, batch_size).astype(np.float32))
    classify = is_classifier_output(t_all.numpy())
    module = onnx_to_torch(student).train()
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise HwoptError("the pruned model has no trainable weights")
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * max(1, -(-len(x_all) // batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(epochs):
        for idx in torch.randperm(len(x_all), generator=gen).split(batch_size):
            out = module(x_all[idx])
            out = out[0] if isinstance(out, tuple) else out
            if classify:
                loss = F.kl_div(
                    F.log_softmax(out / temperature, 1), F.softmax(t_all[idx] / temperature, 1), reduction="batchmean"
                ) * temperature**2
            else:
                loss = F.mse_loss(out, t_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    module.eval()
    return write_back(student, module)
