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
from hwopt.latency.kernels import FAMILIES, RNN_OPS, Kernel

FEATURE_VERSION = 2


class TreeEnsemble:
    """A fitted gradient-boosted regressor as plain arrays, evaluated with numpy.

    Loading scikit-learn and unpickling its estimators took 1.5-2 s on the first `predict` call of
    a process; these arrays load in milliseconds, need no scikit-learn at prediction time, and walk
    every tree for every kernel at once (one vectorized step per tree level).
    """

    def __init__(self, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray, right: np.ndarray,
                 value: np.ndarray, base: float):
        self.feature, self.threshold, self.left, self.right, self.value = feature, threshold, left, right, value
        self.base = base
        self.depth = _max_depth(left, right)

    @classmethod
    def from_sklearn(cls, model, x_sample: np.ndarray) -> TreeEnsemble:
        """Copy the trees of a fitted GradientBoostingRegressor (its learning rate folded into the leaves)."""
        trees = [est[0].tree_ for est in model.estimators_]
        width = max(t.node_count for t in trees)

        def pad(get, fill, dtype):
            out = np.full((len(trees), width), fill, dtype=dtype)
            for i, t in enumerate(trees):
                out[i, :t.node_count] = get(t)
            return out

        value = pad(lambda t: t.value[:, 0, 0], 0.0, np.float64) * model.learning_rate
        ens = cls(pad(lambda t: np.maximum(t.feature, 0), 0, np.int64), pad(lambda t: t.threshold, 0.0, np.float64),
                  pad(lambda t: t.children_left, -1, np.int64), pad(lambda t: t.children_right, -1, np.int64),
                  value, 0.0)
        x0 = np.asarray(x_sample[:1], dtype=float)
        ens.base = float(model.predict(x0)[0] - ens.predict(x0)[0])  # the initial (median) estimate
        return ens

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)  # scikit-learn compares float32 inputs with its thresholds
        rows = np.arange(len(x))[None, :]
        trees = np.arange(len(self.feature))[:, None]
        node = np.zeros((len(self.feature), len(x)), dtype=np.int64)
        for _ in range(self.depth):
            left = self.left[trees, node]
            go_left = x[rows, self.feature[trees, node]] <= self.threshold[trees, node]
            node = np.where(left < 0, node, np.where(go_left, left, self.right[trees, node]))
        return self.value[trees, node].sum(axis=0) + self.base

    def arrays(self) -> dict:
        return {"feature": self.feature, "threshold": self.threshold, "left": self.left, "right": self.right,
                "value": self.value, "base": self.base}


def _max_depth(left: np.ndarray, right: np.ndarray) -> int:
    """Levels below the deepest root (checked at load: a malformed file must not loop)."""
    best = 0
    for lt, rt in zip(left.tolist(), right.tolist()):
        stack = [(0, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > 64 or node >= len(lt):
                raise HwoptError("latency predictor trees are malformed; re-run `hwopt profile`")
            if lt[node] < 0:
                best = max(best, depth)
            else:
                stack += [(lt[node], depth + 1), (rt[node], depth + 1)]
    return best


class KernelPredictor:
    """log-correction trees on top of a roofline; `families` says which op families it was trained on."""

    def __init__(self, model: TreeEnsemble, families: set[str]):
        self.model = model
        self.families = families

    def covers(self, kernel: Kernel) -> bool:
        """Families it was trained on. A recurrent layer as a whole is not covered: `predict` prices it
        through its GEMM parts (taken as one product, the trees' corrections tripled an LSTM's time)."""
        return kernel.family in self.families and kernel.op not in RNN_OPS

    def predict(self, kernels: Sequence[Kernel], device: DeviceProfile, roofline: Roofline) -> np.ndarray:
        base = roofline_ms(kernel_terms(kernels, device, roofline.threads), roofline)
        feats = _features(kernels, base)
        return base * np.exp(self.model.predict(feats))

    def save(self, path: str | os.PathLike) -> Path:
        import joblib

        buf = io.BytesIO()  # plain arrays only: loading needs neither scikit-learn nor unpickling its classes
        joblib.dump({"feature_version": FEATURE_VERSION, "trees": self.model.arrays(),
                     "families": sorted(self.families)}, buf)
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
        t = blob["trees"]
        return cls(TreeEnsemble(t["feature"], t["threshold"], t["left"], t["right"], t["value"], float(t["base"])),
                   set(blob["families"]))


def _features(kernels: Sequence[Kernel], base_ms: np.ndarray) -> np.ndarray:
    return np.column_stack([np.array([k.features() for k in kernels]), np.log(base_ms)])


def train_predictor(
    kernels: Sequence[Kernel], measured_ms: Sequence[float], device: DeviceProfile, roofline: Roofline, *, seed: int = 0,
    weights: Sequence[float] | None = None, trees: int = 300,
) -> KernelPredictor:
    """Fit the correction trees on profiled kernels (`weights`: e.g. how many networks each signature ran in;
    fewer `trees` for quick throw-away fits such as cross-validation folds)."""
    from sklearn.ensemble import GradientBoostingRegressor

    if len(kernels) < 10:
        raise HwoptError(f"need at least 10 profiled kernels to train a predictor, got {len(kernels)}")
    base = roofline_ms(kernel_terms(kernels, device, roofline.threads), roofline)
    y = np.log(np.asarray(measured_ms, dtype=float)) - np.log(base)
    model = GradientBoostingRegressor(
        n_estimators=trees, max_depth=4, learning_rate=0.05 * 300 / trees, subsample=0.8, loss="huber", random_state=seed
    )
    x = _features(kernels, base)
    model.fit(x, y, sample_weight=None if weights is None else np.sqrt(np.asarray(weights, float)))
    return KernelPredictor(TreeEnsemble.from_sklearn(model, x), {k.family for k in kernels} & set(FAMILIES))
