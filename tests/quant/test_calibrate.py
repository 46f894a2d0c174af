"""Calibrators: streamed statistics match one-shot ones; clipping methods clip outliers."""

import numpy as np
import pytest

from hwopt.errors import HwoptError
from hwopt.quant.calibrate import METHODS, HistogramCalibrator, collect_statistics, make_calibrator


def _data():
    x = np.random.default_rng(0).standard_normal(200_000).astype(np.float32)
    x[:2] = [40.0, -25.0]
    return x


def test_streaming_histogram_equals_one_shot_counts():
    x = _data()
    streamed, whole = HistogramCalibrator(bins=1024), HistogramCalibrator(bins=1024)
    for chunk in np.array_split(x[::-1], 50):  # small values first: the range must grow (bins merge)
        streamed.update(chunk)
    whole.update(x)
    assert streamed.counts.sum() == whole.counts.sum() == x.size
    assert streamed.radius >= 40.0 and streamed.range() == whole.range() == (-25.0, 40.0)
    assert streamed.counts.nbytes == 1024 * 8  # bounded memory whatever the data size


@pytest.mark.parametrize("method", METHODS)
def test_methods_give_sane_ranges(method):
    x = _data()
    cal = make_calibrator(method)
    for chunk in np.array_split(x, 20):
        cal.update(chunk)
    lo, hi = cal.range(8)
    assert -25.0 <= lo < 0 < hi <= 40.0
    if method == "minmax":
        assert (lo, hi) == (-25.0, 40.0)
    else:  # outliers are clipped away
        assert hi < 30.0
    lo4, hi4 = cal.range(4)
    if method == "mse":
        assert hi4 < hi  # fewer levels -> tighter optimal clipping


def test_unknown_method_and_empty_calibrator():
    with pytest.raises(HwoptError, match="unknown calibration method"):
        make_calibrator("kl")
    with pytest.raises(HwoptError, match="no data"):
        make_calibrator("minmax").range()


def test_collect_statistics_streams_intermediates(tiny_model, digits):
    relu = next(n.output[0] for n in tiny_model.graph.node if n.op_type == "Relu")
    stats = collect_statistics(tiny_model, [relu, "x"], digits["calib"], "minmax", batch_size=16, limit=64)
    assert stats.samples == 64
    lo, hi = stats.calibrators[relu].range()
    assert lo == 0.0 and hi > 0
    x = digits["calib"].inputs["x"][:64]
    assert stats.calibrators["x"].range() == (float(x.min()), float(x.max()))
