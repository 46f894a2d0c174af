"""Export torch modules to ONNX that onnx.checker accepts and onnxruntime runs.

torch 2.13 defaults to the torch.export-based (dynamo) exporter, which needs onnxscript and is
still picky about data-dependent shapes; the TorchScript exporter (`dynamo=False`) handles every
zoo model offline, folds BatchNorm into the preceding Conv in eval mode, and writes one file with
the weights inline. Its deprecation warnings are silenced here because callers cannot act on them.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from hwopt.graph.load import check_model, save_model


def export_onnx(
    module: nn.Module,
    path: str | os.PathLike,
    input_shape: tuple[int, ...],
    opset: int = 17,
    dynamic_batch: bool = True,
    input_name: str = "input",
    output_name: str = "output",
) -> onnx.ModelProto:
    """Export `module` (in eval mode) for one float input of `input_shape`; write `path` atomically.

    The module itself is left untouched (a copy is switched to eval mode). With `dynamic_batch`,
    the first dim of the input and output is named `batch`; all other dims stay static.
    Returns the checked ONNX model that was written.
    """
    model = copy.deepcopy(module).eval()
    example = torch.randn(*input_shape)
    dynamic_axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    proto = onnx.load_model_from_string(buf.getvalue())
    check_model(proto, name=Path(path).name, full=True)
    save_model(proto, path)
    return proto
