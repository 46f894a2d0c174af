"""scikit-learn's bundled digits as a tiny image classification task (3x32x32, 10 classes).

The data ships inside scikit-learn, so supernet training and subnet evaluation work offline and
in minutes on two cores. The split is fixed (seeded) so that the supernet's training images are
never the ones its subnets are judged on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: per-channel normalisation of the upsampled images (mean/std of the whole set, rounded)
_MEAN, _STD = 0.27, 0.38


@dataclass(frozen=True)
class DigitsSplit:
    train_x: np.ndarray  # (N, 3, size, size) float32, normalised
    train_y: np.ndarray  # (N,) int64
    val_x: np.ndarray
    val_y: np.ndarray


def load_digits_split(size: int = 32, val_fraction: float = 0.3, seed: int = 0) -> DigitsSplit:
    """Digits upsampled (bilinear) from 8x8 to `size`x`size`, replicated to 3 channels, split train/val."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    img = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
    x = ((img - _MEAN) / _STD).repeat(1, 3, 1, 1).numpy()
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = int(round(len(y) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return DigitsSplit(x[train], y[train], x[val], y[val])
