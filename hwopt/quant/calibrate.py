"""Activation ranges from calibration data, streamed batch by batch in bounded memory.

`collect_ranges` runs the float model on onnxruntime with the tensors of interest added as
outputs, one batch at a time, and hands each batch's values to one calibrator per tensor; only a
batch's activations are ever held. Calibrators share one interface (`update`, `range`):

* `MinMaxCalibrator` — exact running min/max.
* `PercentileCalibrator` — clips the outer tails (default 0.01 % each side).
* `EntropyCalibrator` — the clipping range whose b-bit histogram is closest in KL divergence to
  the observed one (TensorRT's method, applied to both ends of a signed range).
* `MSECalibrator` — the clipping range with the smallest expected quantization squared error.

The last three keep a fixed-size histogram (`bins`) over a range that doubles when new values
fall outside it (adjacent bins merge, so the counts stay exact at the coarser width).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from hwopt.data import Dataset
from hwopt.errors import HwoptError
from hwopt.graph.shapes import with_outputs
from hwopt.quant.qdq import int_range

METHODS = ("minmax", "percentile", "entropy", "mse")


class Calibrator:
    """Streaming statistics of one tensor; `range()` gives the float range to quantize."""

    def __init__(self) -> None:
        self.lo = np.inf
        self.hi = -np.inf

    def update(self, x: np.ndarray) -> None:
        if x.size:
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))

    def range(self, bits: int = 8, symmetric: bool = False) -> tuple[float, float]:
        if not np.isfinite(self.lo):
            raise HwoptError("calibrator saw no data")
        return self.lo, self.hi


class MinMaxCalibrator(Calibrator):
    """The observed range; safest at 8 bits, wasteful with outliers at low bits."""


class HistogramCalibrator(Calibrator):
    """Fixed-bin signed histogram over [-R, R]; R doubles (bins merge pairwise) as needed."""

    def __init__(self, bins: int = 4096) -> None:
        super().__init__()
        self.bins = bins
        self.radius = 0.0
        self.counts = np.zeros(bins, dtype=np.int64)

    def update(self, x: np.ndarray) -> None:
        super().update(x)
        if not x.size:
            return
        amax = float(np.abs(x).max())
        if self.radius == 0.0:
            self.radius = amax if amax > 0 else 1e-6
        while amax > self.radius:
            c = self.counts
            half = c.reshape(-1, 2).sum(axis=1)  # merge pairs, then re-centre in the wider range
            pad = self.bins // 4
            self.counts = np.concatenate([np.zeros(pad, np.int64), half, np.zeros(pad, np.int64)])
            self.radius *= 2
        hist, _ = np.histogram(x, bins=self.bins, range=(-self.radius, self.radius))
        self.counts += hist

    @property
    def centers(self) -> np.ndarray:
        edges = np.linspace(-self.radius, self.radius, self.bins + 1)
        return (edges[:-1] + edges[1:]) / 2

    def _observed_bins(self) -> tuple[int, int]:
        nz = np.nonzero(self.counts)[0]
        return int(nz[0]), int(nz[-1]) + 1


class PercentileCalibrator(HistogramCalibrator):
    def __init__(self, percentile: float = 99.99, bins: int = 4096) -> None:
        super().__init__(bins)
        self.percentile = percentile

    def range(self, bits: int = 8, symmetric: bool = False) -> tuple[float, float]:
        super().range()
        cdf = np.cumsum(self.counts) / self.counts.sum()
        tail = (100.0 - self.percentile) / 100.0
        edges = np.linspace(-self.radius, self.radius, self.bins + 1)
        lo = edges[int(np.searchsorted(cdf, tail))]
        hi = edges[min(int(np.searchsorted(cdf, 1 - tail)) + 1, self.bins)]
        return max(float(lo), self.lo), min(float(hi), self.hi)


class _SearchCalibrator(HistogramCalibrator):
    """Try shrinking clipping ranges [f*lo, f*hi] and keep the one with the lowest `loss`."""

    fractions = np.geomspace(0.02, 1.0, 100)

    def loss(self, lo: float, hi: float, bits: int, symmetric: bool) -> float:
        raise NotImplementedError

    def range(self, bits: int = 8, symmetric: bool = False) -> tuple[float, float]:
        super().range()
        lo0, hi0 = min(self.lo, 0.0), max(self.hi, 0.0)
        if symmetric:
            m = max(-lo0, hi0)
            lo0, hi0 = -m, m
        best, best_loss = (lo0, hi0), np.inf
        for f in self.fractions:
            lo, hi = lo0 * f, hi0 * f
            if hi - lo <= 0:
                continue
            val = self.loss(lo, hi, bits, symmetric)
            if val < best_loss:
                best, best_loss = (lo, hi), val
        return best


def _grid(lo: float, hi: float, bits: int, symmetric: bool) -> tuple[float, float, int, int]:
    qmin, qmax = int_range(bits, symmetric)
    if symmetric:
        scale = max(-lo, hi) / qmax
        zp = 0.0
    else:
        scale = (hi - lo) / (qmax - qmin)
        zp = np.round(qmin - lo / scale)
    return scale, zp, qmin, qmax


class MSECalibrator(_SearchCalibrator):
    def loss(self, lo: float, hi: float, bits: int, symmetric: bool) -> float:
        scale, zp, qmin, qmax = _grid(lo, hi, bits, symmetric)
        c = self.centers
        deq = (np.clip(np.round(c / scale + zp), qmin, qmax) - zp) * scale
        return float((self.counts * (deq - c) ** 2).sum())


class EntropyCalibrator(_SearchCalibrator):
    def loss(self, lo: float, hi: float, bits: int, symmetric: bool) -> float:
        """KL(P || Q): P = observed histogram with outliers folded into the edge bins, Q = the
        in-range histogram (outliers not folded) collapsed onto the b-bit levels and spread back
        uniformly over each level's non-empty bins. Ranges narrower than one bin per level are
        skipped: there Q would copy P and the divergence would say nothing."""
        scale, zp, qmin, qmax = _grid(lo, hi, bits, symmetric)
        c = self.centers
        inside = (c >= lo) & (c <= hi)
        if not inside.any():
            return np.inf
        first, last = np.nonzero(inside)[0][[0, -1]]
        if last - first + 1 < qmax - qmin + 1:
            return np.inf
        clipped = self.counts[first : last + 1].astype(np.float64)
        p = clipped.copy()
        p[0] += self.counts[:first].sum()
        p[-1] += self.counts[last + 1 :].sum()
        level = np.clip(np.round(c[first : last + 1] / scale + zp), qmin, qmax).astype(np.int64) - qmin
        mass = np.bincount(level, weights=clipped, minlength=qmax - qmin + 1)
        nonempty = np.bincount(level, weights=(clipped > 0).astype(np.float64), minlength=qmax - qmin + 1)
        q = np.where(clipped > 0, mass[level] / np.maximum(nonempty[level], 1), 0.0)
        p /= p.sum()
        q /= max(q.sum(), 1e-30)
        m = p > 0
        return float((p[m] * np.log(p[m] / np.maximum(q[m], 1e-30))).sum())


CALIBRATORS: dict[str, Callable[[], Calibrator]] = {
    "minmax": MinMaxCalibrator,
    "percentile": PercentileCalibrator,
    "entropy": EntropyCalibrator,
    "mse": MSECalibrator,
}


def make_calibrator(method: str) -> Calibrator:
    if method not in CALIBRATORS:
        raise HwoptError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    return CALIBRATORS[method]()


@dataclass
class ChannelMean:
    """Running per-channel mean (axis 1) of a tensor, for bias correction."""

    total: np.ndarray | None = None
    count: int = 0

    def update(self, x: np.ndarray) -> None:
        if x.ndim < 2:
            return
        axes = tuple(i for i in range(x.ndim) if i != 1) if x.ndim > 2 else (0,)
        s = x.astype(np.float64).sum(axis=axes)
        self.total = s if self.total is None else self.total + s
        self.count += x.size // x.shape[1]

    @property
    def mean(self) -> np.ndarray | None:
        return None if self.total is None else (self.total / max(self.count, 1)).astype(np.float32)


@dataclass
class Statistics:
    calibrators: dict[str, Calibrator]
    channel_means: dict[str, ChannelMean] = field(default_factory=dict)
    samples: int = 0


def collect_statistics(
    model: onnx.ModelProto,
    tensors: list[str],
    calib: Dataset,
    method: str = "minmax",
    *,
    mean_tensors: list[str] = (),
    batch_size: int = 16,
    limit: int | None = 512,
) -> Statistics:
    """Stream `calib` through the float model on onnxruntime and calibrate each tensor."""
    from hwopt.runtimes import get_runtime

    wanted = list(dict.fromkeys(list(tensors) + list(mean_tensors)))
    stats = Statistics({t: make_calibrator(method) for t in tensors}, {t: ChannelMean() for t in mean_tensors})
    session = get_runtime("onnxruntime").session(with_outputs(model, wanted), threads=1)
    index = {name: i for i, name in enumerate(session.output_names)}
    missing = [t for t in wanted if t not in index]
    if missing:
        raise HwoptError(f"cannot observe tensors {missing[:3]} in the model")
    for feeds in calib.batches(batch_size, limit):
        outs = session.run(feeds)
        stats.samples += len(next(iter(feeds.values())))
        for t, cal in stats.calibrators.items():
            cal.update(outs[index[t]])
        for t, cm in stats.channel_means.items():
            cm.update(outs[index[t]])
    if stats.samples == 0:
        raise HwoptError("calibration data set is empty")
    return stats
