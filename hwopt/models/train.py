"""Plain supervised training for the zoo's small classifiers (tests, benchmarks, examples' peers).

One loop, so every quickly-trained model in the project is trained the same way: Adam, shuffled
mini-batches, cross-entropy. Seeding is the caller's choice (`seed=None` keeps torch's current RNG
state, so a caller that seeded before building the model gets the same run as before).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def train_classifier(
    module: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    seed: int | None = None,
) -> nn.Module:
    """Train `module` on (x, y) with Adam and cross-entropy; returns it in eval mode."""
    if seed is not None:
        torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    module.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(module(xt[idx]), yt[idx]).backward()
            opt.step()
    return module.eval()
