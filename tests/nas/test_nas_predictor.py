"""Accuracy predictor: fit quality on a learnable target, cache behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwopt.errors import HwoptError
from hwopt.nas.predictor import MeasurementCache, config_key, fit_predictor, measure_subnets


def _data(n=160, d=24, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((n, d)) < 0.5).astype(np.float32)
    w = rng.standard_normal(d)
    y = 90 + x @ w + 0.3 * (x[:, 0] * x[:, 1])
    return x, y


@pytest.mark.parametrize("kind", ["mlp", "gbt"])
def test_predictor_ranks_held_out_subnets(kind):
    x, y = _data()
    pred, q = fit_predictor(x, y, kind=kind)
    assert q.n_test == 32 and q.spearman > 0.85, q
    assert q.rmse < np.std(y)  # better than predicting the mean
    assert pred.predict(x[:5]).shape == (5,)


def test_too_few_subnets_is_a_clear_error():
    x, y = _data(n=5)
    with pytest.raises(HwoptError, match="at least 10"):
        fit_predictor(x, y)


def test_cache_reuses_measurements_and_ignores_other_tags(tmp_path):
    calls = []

    def measure(cfg):
        calls.append(cfg)
        return float(cfg["a"])

    cfgs = [{"a": i, "b": [1, 2]} for i in range(4)]
    cache = MeasurementCache(tmp_path / "m.json", tag="w1")
    assert list(measure_subnets(cfgs, measure, cache)) == [0, 1, 2, 3]
    again = MeasurementCache(tmp_path / "m.json", tag="w1")
    assert list(measure_subnets(cfgs, measure, again)) == [0, 1, 2, 3] and len(calls) == 4
    other = MeasurementCache(tmp_path / "m.json", tag="w2")
    assert other.get(cfgs[0]) is None
    assert json.loads((tmp_path / "m.json").read_text())["tag"] == "w1"


def test_config_key_ignores_key_order():
    assert config_key({"a": 1, "b": [2]}) == config_key({"b": [2], "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})
