"""Zoo models exported once per test session, and helpers (as fixtures) for the pruning tests."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from hwopt.models.export import export_onnx
from hwopt.models.zoo import build
from hwopt.pruning.groups import ChannelGroup

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def zoo_model(tmp_path_factory):
    """Exported zoo model by name (cached): (path, proto, input shape)."""
    cache: dict[str, tuple] = {}
    folder = tmp_path_factory.mktemp("zoo")

    def get(name: str):
        if name not in cache:
            module, shape = build(name)
            path = folder / f"{name}.onnx"
            cache[name] = (path, export_onnx(module, path, shape), shape)
        return cache[name]

    return get


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def zero_channels(model: onnx.ModelProto, group: ChannelGroup, drop: np.ndarray, roles=("out", "dw", "bias", "norm_scale", "norm_bias", "const")) -> onnx.ModelProto:
    """Copy of a prepared model with the group's `drop` channels zeroed in the given member roles."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = {n.name: n for n in out.graph.node}
    inits = {t.name: t for t in out.graph.initializer}
    for mb in group.members:
        if mb.role not in roles:
            continue
        name = nodes[mb.node].input[mb.slot]
        arr = numpy_helper.to_array(inits[name]).copy()
        index = [slice(None)] * arr.ndim
        index[mb.axis] = np.isin(mb.index, drop)
        arr[tuple(index)] = 0
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    return out


@pytest.fixture
def run_model():
    """onnxruntime runner: run_model(model, x) -> first output."""
    return run


@pytest.fixture
def zero():
    """zero(model, group, drop, roles=...) -> copy with those channels zeroed."""
    return zero_channels
