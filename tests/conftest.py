"""Shared fixtures: the bundled example models and data, and single-threaded torch.

The machine running the tests is small and shared, so torch runs on one thread everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.graph.load import save_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_MODELS = ("resnet_digits", "mobilenet_digits")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # torch is an extra; tests that need it importorskip it
    pass


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The committed examples/ folder (models, calib.npz, eval.npz); skips if not generated yet."""
    if not (EXAMPLES / "eval.npz").is_file():
        pytest.skip("examples/ has no generated models; run python examples/train_examples.py")
    return EXAMPLES


@pytest.fixture(params=EXAMPLE_MODELS)
def example_model(request, examples_dir: Path) -> Path:
    """Each example ONNX model in turn."""
    return examples_dir / f"{request.param}.onnx"


def conv_model(dims: tuple = ("batch", 3, 8, 8), opset: int = 17) -> onnx.ModelProto:
    """A tiny Conv(4 out channels)-Relu-GlobalAveragePool-Flatten model built with onnx.helper (no torch)."""
    cout = 4
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((cout, dims[1], 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], cout])], [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def make_conv_model():
    """The `conv_model` builder, for tests that need variants (dynamic dims, old opsets)."""
    return conv_model


@pytest.fixture
def tiny_model_path(tmp_path: Path) -> Path:
    """A valid tiny ONNX model file (dynamic batch, 1x3x8x8 otherwise)."""
    return save_model(conv_model(), tmp_path / "tiny.onnx")
