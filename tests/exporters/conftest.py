"""A small ResNet from the zoo as ONNX, with calibration data (built once per session)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwopt.models.export import export_onnx
from hwopt.models.zoo import resnet_basic


@pytest.fixture(scope="session")
def small_cnn(tmp_path_factory):
    """(model path, calib .npz path): a 2-stage basic-block ResNet on 1x3x32x32 inputs."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("exporters")
    path = root / "small.onnx"
    export_onnx(resnet_basic(width=0.25, depths=(1, 1)), path, (1, 3, 32, 32))
    x = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
    np.savez(root / "calib.npz", input=x)
    return path, root / "calib.npz"
