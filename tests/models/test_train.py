"""train_classifier learns a separable problem and is reproducible with a seed."""

import numpy as np
import torch
from torch import nn

from hwopt.models.train import train_classifier


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, y


def test_learns_and_is_seeded():
    x, y = _data()
    torch.manual_seed(1)
    a = train_classifier(nn.Linear(4, 2), x, y, epochs=20, lr=5e-2, seed=3)
    torch.manual_seed(1)
    b = train_classifier(nn.Linear(4, 2), x, y, epochs=20, lr=5e-2, seed=3)
    with torch.no_grad():
        pred = a(torch.from_numpy(x)).argmax(1).numpy()
    assert (pred == y).mean() > 0.95
    assert not a.training
    assert torch.equal(a.weight, b.weight)
