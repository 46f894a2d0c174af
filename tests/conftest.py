"""Shared fixtures: the bundled example models and data, and single-threaded torch.

The machine running the tests is small and shared, so torch runs on one thread everywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
