"""Accuracy predictor: measure sampled subnets, fit a small regressor on their encoding.

Measuring one subnet costs an extraction, a BatchNorm recalibration and an evaluation pass, so
measurements are cached in a JSON file keyed by a hash of the canonical subnet config, and a
second search (another device, another budget) reuses them. The regressor is an MLP (OFA uses
3x400) or gradient-boosted trees; its quality is reported as Spearman rank correlation and RMSE on
held-out subnets, because the search only needs the ranking to be right.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from hwopt.errors import HwoptError
from hwopt.graph.load import atomic_write_text


def config_key(config: dict) -> str:
    """Stable short hash of a subnet config (key order and whitespace do not matter)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


class MeasurementCache:
    """{config hash: {"config": ..., "accuracy": ...}} persisted atomically as JSON."""

    def __init__(self, path: str | os.PathLike | None = None, tag: str = ""):
        self.path = Path(path) if path else None
        self.tag = tag  # e.g. supernet name + weights hash: a cache for other weights is ignored
        self.items: dict[str, dict] = {}
        if self.path and self.path.is_file():
            try:
                doc = json.loads(self.path.read_text())
            except json.JSONDecodeError as exc:
                raise HwoptError(f"measurement cache {self.path} is not valid JSON ({exc}); delete it") from None
            if doc.get("tag") == tag:
                self.items = doc.get("items", {})

    def get(self, config: dict) -> float | None:
        hit = self.items.get(config_key(config))
        return None if hit is None else float(hit["accuracy"])

    def put(self, config: dict, accuracy: float) -> None:
        self.items[config_key(config)] = {"config": config, "accuracy": accuracy}

    def get_or_measure(self, config: dict, measure: Callable[[dict], float]) -> float:
        """The cached accuracy of `config`, measuring (and caching) it on a miss."""
        hit = self.get(config)
        if hit is None:
            hit = measure(config)
            self.put(config, hit)
        return hit

    def save(self) -> None:
        if self.path:
            atomic_write_text(json.dumps({"tag": self.tag, "items": self.items}, sort_keys=True), self.path)


def measurement_cache(problem_tag: str) -> MeasurementCache:
    """The on-disk accuracy cache of one problem (weights + eval data), for this hwopt version.

    Measured accuracy depends on hwopt's own extraction and BatchNorm recalibration code, so a
    cache written by another version is ignored rather than trusted.
    """
    import hwopt
    from hwopt.nas.latency_cache import cache_dir

    return MeasurementCache(cache_dir() / f"measurements-{problem_tag}.json", tag=f"{problem_tag}@hwopt-{hwopt.__version__}")


def measure_subnets(
    configs: list[dict], measure: Callable[[dict], float], cache: MeasurementCache, progress: Callable[[int, int], None] | None = None
) -> np.ndarray:
    """Accuracy of each config, from the cache when known; new results are cached and saved."""
    out = np.empty(len(configs))
    for i, cfg in enumerate(configs):
        out[i] = cache.get_or_measure(cfg, measure)
        if (i + 1) % 20 == 0:
            cache.save()
        if progress:
            progress(i + 1, len(configs))
    cache.save()
    return out


@dataclass
class PredictorQuality:
    spearman: float
    rmse: float
    n_train: int
    n_test: int
    kind: str

    def to_dict(self) -> dict:
        return dict(vars(self))


class AccuracyPredictor:
    """Regressor from subnet features to accuracy (%); `predict` is plain numpy for the MLP."""

    def __init__(self, kind: str = "mlp", seed: int = 0):
        if kind not in ("mlp", "gbt"):
            raise HwoptError(f"predictor kind must be mlp or gbt, not {kind!r}")
        self.kind, self.seed = kind, seed
        self._mean = 0.0
        self._std = 1.0
        self._layers: list[tuple[np.ndarray, np.ndarray]] = []
        self._gbt = None

    def fit(self, features: np.ndarray, accuracy: np.ndarray) -> AccuracyPredictor:
        """Fit with BLAS on one thread: the matrices are tiny, and on a busy 2-core machine a
        multi-threaded fit of the 3x400 MLP was measured 10x slower (29 s vs 2.7 s on 100 subnets)."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return self._fit(features, accuracy)

    def _fit(self, features: np.ndarray, accuracy: np.ndarray) -> AccuracyPredictor:
        # standardise the target: accuracies cluster within a few points, which a raw-% MLP fits poorly
        self._mean, self._std = float(accuracy.mean()), float(accuracy.std() or 1.0)
        y = (accuracy - self._mean) / self._std
        if self.kind == "mlp":
            from sklearn.neural_network import MLPRegressor

            mlp = MLPRegressor(hidden_layer_sizes=(400, 400, 400), alpha=1e-2, learning_rate_init=1e-3, max_iter=800,
                               early_stopping=False, random_state=self.seed)
            mlp.fit(features, y)
            self._layers = [(w.astype(np.float32), b.astype(np.float32)) for w, b in zip(mlp.coefs_, mlp.intercepts_)]
        else:
            from sklearn.ensemble import GradientBoostingRegressor

            self._gbt = GradientBoostingRegressor(n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8,
                                                  random_state=self.seed).fit(features, y)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.kind == "gbt":
            y = self._gbt.predict(features)
        else:
            h = features.astype(np.float32)
            for i, (w, b) in enumerate(self._layers):
                h = h @ w + b
                if i < len(self._layers) - 1:
                    h = np.maximum(h, 0.0)
            y = h[:, 0]
        return y * self._std + self._mean


def evaluate_predictor(pred: AccuracyPredictor, features: np.ndarray, accuracy: np.ndarray) -> tuple[float, float]:
    """(Spearman rank correlation, RMSE in accuracy points) on held-out subnets."""
    p = pred.predict(features)
    rho = float(spearmanr(p, accuracy).statistic) if np.ptp(accuracy) > 0 else float("nan")
    return rho, float(np.sqrt(np.mean((p - accuracy) ** 2)))


def fit_predictor(
    features: np.ndarray, accuracy: np.ndarray, *, kind: str = "mlp", test_fraction: float = 0.2, seed: int = 0
) -> tuple[AccuracyPredictor, PredictorQuality]:
    """Fit on a random split, report held-out quality, then refit on everything for the search."""
    if len(accuracy) < 10:
        raise HwoptError(f"need at least 10 measured subnets to fit an accuracy predictor, got {len(accuracy)}")
    order = np.random.default_rng(seed).permutation(len(accuracy))
    n_test = max(2, int(round(len(accuracy) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    held = AccuracyPredictor(kind, seed).fit(features[train], accuracy[train])
    rho, rmse = evaluate_predictor(held, features[test], accuracy[test])
    full = AccuracyPredictor(kind, seed).fit(features, accuracy)
    return full, PredictorQuality(rho, rmse, len(train), len(test), kind)
