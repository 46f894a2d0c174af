"""A small ResNet from the zoo as ONNX with calibration and labelled evaluation data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwopt.models.export import export_onnx
from hwopt.models.zoo import resnet_basic


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """(model, calib, eval) paths; labels are the float model's own top-1 on the eval inputs."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pipeline")
    net = resnet_basic(width=0.25, depths=(1, 1)).eval()
    export_onnx(net, root / "small.onnx", (1, 3, 32, 32))
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, 3, 32, 32)).astype(np.float32)
    ev = rng.standard_normal((48, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        labels = net(torch.from_numpy(ev)).argmax(1).numpy()
    np.savez(root / "calib.npz", input=calib)
    np.savez(root / "eval.npz", input=ev, labels=labels)
    return root / "small.onnx", root / "calib.npz", root / "eval.npz"
