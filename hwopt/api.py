"""The public Python API (re-exported from `hwopt`): the same operations as the CLI, typed results."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from hwopt.data import load_dataset
from hwopt.devices import DeviceProfile, list_devices, load_device
from hwopt.errors import HwoptError
from hwopt.graph.census import Census, census
from hwopt.graph.load import custom_ops, load_model
from hwopt.graph.shapes import Shapes, fix_input_shapes, random_inputs, resolve_input_shapes
from hwopt.runtimes import BenchResult, get_runtime, summarize, time_session

PathLike = str | os.PathLike


def inspect(model: PathLike | onnx.ModelProto, *, shapes: Shapes | None = None, groups: bool = True) -> Census:
    """Census of a model: opset, op histogram, params, MACs, bytes, and prunable channel groups."""
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    result = census(proto, shapes)
    if groups:
        from hwopt.pruning.groups import describe_groups, prepare_model

        # groups are found on the form pruning works on (Constant weights as initializers, opset >= 13),
        # so `inspect` lists the groups `prune` would cut; a model that form cannot be made of has none
        try:
            result.groups = describe_groups(prepare_model(proto), {k: tuple(v) for k, v in result.inputs.items()})
        except HwoptError:
            result.groups = []
    return result


def bench(
    model: PathLike,
    runtime: str = "onnxruntime",
    *,
    threads: int = 1,
    warmup: int = 5,
    runs: int = 50,
    precision: str = "fp32",
    shapes: Shapes | None = None,
    data: PathLike | None = None,
) -> BenchResult:
    """Measured latency of `model` on `runtime` here (p50/p90/p99/mean in ms).

    Inputs come from `data` (first sample) or are generated from the model's input shapes.
    ONNX models are run with their dynamic dims fixed, so runtimes compile static kernels.
    """
    if runs < 1 or warmup < 0 or threads < 1:
        raise HwoptError("--runs and --threads must be >= 1 and --warmup >= 0")
    rt = get_runtime(runtime)
    if not rt.available():
        raise HwoptError(f"runtime {runtime} is not available here")
    path = Path(model)
    if path.suffix == ".onnx" or not path.suffix:
        proto = load_model(path)
        bad = custom_ops(proto)
        if bad:
            raise HwoptError(f"model uses custom ops no runtime here implements: {', '.join(bad)}")
        if data is not None:
            ds = load_dataset(data, proto)
            feeds = next(ds.batches(1))
            concrete = {k: v.shape for k, v in feeds.items()}
        else:
            concrete = resolve_input_shapes(proto, shapes)
            feeds = random_inputs(proto, concrete)
        session = rt.session(fix_input_shapes(proto, concrete), threads=threads, precision=precision)
    else:
        if not path.is_file():
            raise HwoptError(f"model file not found: {path}")
        session = rt.session(path, threads=threads, precision=precision)
        feeds = _feeds_for_session(session, shapes, data)
    times = time_session(session, feeds, warmup=warmup, runs=runs)
    return summarize(times, session, warmup=warmup, version=rt.version())


def _feeds_for_session(session, shapes: Shapes | None, data: PathLike | None) -> dict[str, np.ndarray]:
    """Inputs for non-ONNX artifacts (.tflite, .xml): from data, or random from the session's shapes."""
    if data is not None:
        ds = load_dataset(data)
        return next(ds.batches(1))
    known = shapes or getattr(session, "input_shapes", None)
    if not known:
        raise HwoptError("give --shape NAME=DxD.. or --data for this model format")
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(v).astype(np.float32) for k, v in known.items()}


__all__ = ["DeviceProfile", "bench", "inspect", "list_devices", "load_device"]
