"""Zoo models exported once per test session for the pruning tests."""

from __future__ import annotations

import pytest
import torch

from hwopt.models.export import export_onnx
from hwopt.models.zoo import build

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
