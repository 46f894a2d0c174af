"""Learned per-kernel predictor for kernels the table does not hold.

Gradient-boosted trees cannot extrapolate, and a search will ask about layers bigger than any
profiled one. So the trees learn only the *correction* to the table's roofline estimate
(log measured / roofline) from the kernel's features; the roofline carries the scaling with
FLOPs and bytes, the trees carry what the roofline misses (layout changes, small-kernel
overheads, poorly vectorized shapes).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hwopt.devices import DeviceProfile
from hwopt.errors import HwoptError
from hwopt.graph.load import atomic_write_bytes
from hwopt.latency.analytical import Roofline, kernel_terms, roofline_ms
from hwopt.latency.kernels import FAMILIES, Kernel

FEATURE_VERSION = 1


class KernelPredictor:
    """log-correction trees on top of a roofline; `families` says which op families it was trained on."""

    def __init__(self, model, families: set[str]):
        self.model = model
        self.families = families

    def covers(self, kernel: Kernel) -> bool:
        return kernel.family in self.families

    def predict(self, kernels: Sequence[Kernel], device: DeviceProfile, roofline: Roofline) -> np.ndarray:
        base = roofline_ms(kernel_terms(kernels, device, roofline.threads), roofline)
        feats = _features(kernels, base)
        return base * np.exp(self.model.predict(feats))

    def save(self, path: str | os.PathLike) -> Path:
        import joblib

        buf = io.BytesIO()
        joblib.dump({"feature_version": FEATURE_VERSION, "model": self.model, "families": sorted(self.families)}, buf)
        return atomic_write_bytes(buf.getvalue(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> KernelPredictor:
        import joblib

        try:
            blob = joblib.load(path)
        except Exception as exc:  # joblib/pickle raise many types for a corrupt or foreign file
            raise HwoptError(f"cannot read latency predictor {path}: {type(exc).__name__}") from None
        if not isinstance(blob, dict) or blob.get("feature_version") != FEATURE_VERSION:
            raise HwoptError(f"latency predictor {path} was made by another hwopt version; re-run `hwopt profile`")
        return cls(blob["model"], set(blob["families"]))


def _features(kernels: Sequence[Kernel], base_ms: np.ndarray) -> np.ndarray:
    return np.column_stack([np.array([k.features() for k in kernels]), np.log(base_ms)])


def train_predictor(
    kernels: Sequence[Kernel], measured_ms: Sequence[float], device: DeviceProfile, roofline: Roofline, *, seed: int = 0
) -> KernelPredictor:
    """Fit the correction trees on profiled single kernels."""
    from sklearn.ensemble import GradientBoostingRegressor

    if len(kernels) < 10:
        raise HwoptError(f"need at least 10 profiled kernels to train a predictor, got {len(kernels)}")
    base = roofline_ms(kernel_terms(kernels, device, roofline.threads), roofline)
    y = np.log(np.asarray(measured_ms, dtype=float)) - np.log(base)
    model = GradientBoostingRegressor(
        n_estimators=300, max_depth=4, learning_rate=0.05, subsample=0.8, loss="huber", random_state=seed
    )
    model.fit(_features(kernels, base), y)
    return KernelPredictor(model, {k.family for k in kernels} & set(FAMILIES))
