"""Small trained models for the quantization tests (built here; no downloads).

A depthwise-separable CNN with a residual Add is trained for a few epochs on scikit-learn's
digits (8x8 upsampled to 16x16, 3 channels), so accuracy changes under quantization are real.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwopt.data import Dataset
from hwopt.graph.normalize import normalize_model
from hwopt.models.train import train_classifier

torch.set_num_threads(1)


class TinyNet(nn.Module):
    def __init__(self, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), act())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), act())
        self.pw = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), act())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(y + self.pw(self.dw(y)))
        y = self.down(y).mean((2, 3))
        return self.head(y)


def digits_arrays(n_train: int = 1200) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    x = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)[:, None].repeat(3, axis=1)
    x = (x - 0.3) / 0.4
    y = d.target.astype(np.int64)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def train(module: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 15) -> nn.Module:
    return train_classifier(module, x, y, epochs=epochs, lr=3e-3, seed=0)


def export(module: nn.Module, path, shape=(1, 3, 16, 16)) -> onnx.ModelProto:
    torch.onnx.export(module, torch.zeros(shape), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, opset_version=17, dynamo=False)
    return normalize_model(onnx.load(str(path)))


@pytest.fixture(scope="session")
def digits():
    xtr, ytr, xte, yte = digits_arrays()
    return {"train": (xtr, ytr), "calib": Dataset({"x": xtr[:256]}, ytr[:256], "calib"), "eval": Dataset({"x": xte}, yte, "eval")}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, digits) -> onnx.ModelProto:
    torch.manual_seed(0)
    net = train(TinyNet(), *digits["train"])
    return export(net, tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, tiny_model):
    p = tmp_path_factory.mktemp("mp") / "tiny.onnx"
    onnx.save(tiny_model, str(p))
    return p


@pytest.fixture(scope="session")
def to_onnx():
    """The export helper, for tests that build their own module."""
    return export
