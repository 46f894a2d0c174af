"""The NAS latency-table cache is reused only in the environment that built it, and expires."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hwopt.nas.latency_cache as lc
from hwopt.devices import load_device
from hwopt.errors import HwoptError
from hwopt.nas.genes import AdditiveLatency, Term
from hwopt.nas.timers import MeasuredTimer


class FakeTimer:
    source = "measured"

    def __init__(self, env: dict):
        self.env = env

    def cache_key(self) -> dict:
        return {"source": self.source, **self.env}


class CountingProblem:
    """A problem whose latency model counts how often it is (re)built."""

    cache_tag = "fake-0123"

    def __init__(self):
        self.builds = 0

    def latency_model(self, device, runtime, timer) -> AdditiveLatency:
        self.builds += 1
        return AdditiveLatency(device.name, runtime, 0.01, [Term((0,), np.array([1.0, 2.0]), "t")], {"builds": self.builds})


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HWOPT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("HWOPT_NAS_CACHE_DAYS", raising=False)
    current = {"measured_on": "CPU A", "runtime_version": "1.0", "threads": 1}
    monkeypatch.setattr(lc, "make_timer", lambda device, runtime, source: FakeTimer(dict(current)))
    return current, CountingProblem(), load_device("x86-avx512")


def test_same_environment_reuses_the_table(env):
    current, problem, dev = env
    a = lc.cached_latency_model(problem, dev, "onnxruntime")
    b = lc.cached_latency_model(problem, dev, "onnxruntime")
    assert problem.builds == 1
    assert np.allclose(a(np.array([[1]])), b(np.array([[1]]))) and b.provenance == {"builds": 1}


@pytest.mark.parametrize("change", [{"runtime_version": "1.1"}, {"measured_on": "CPU B"}, {"threads": 2}])
def test_other_runtime_cpu_or_threads_rebuild(env, change):
    current, problem, dev = env
    lc.cached_latency_model(problem, dev, "onnxruntime")
    current.update(change)
    lat = lc.cached_latency_model(problem, dev, "onnxruntime")
    assert problem.builds == 2 and lat.provenance == {"builds": 2}
    current.clear()
    current.update({"measured_on": "CPU A", "runtime_version": "1.0", "threads": 1})
    lc.cached_latency_model(problem, dev, "onnxruntime")  # the first environment's entry is still there
    assert problem.builds == 2


def test_other_hwopt_version_rebuilds(env, monkeypatch):
    _, problem, dev = env
    lc.cached_latency_model(problem, dev, "onnxruntime")
    import hwopt

    monkeypatch.setattr(hwopt, "__version__", "99.0")
    lc.cached_latency_model(problem, dev, "onnxruntime")
    assert problem.builds == 2


def test_old_entries_expire(env, tmp_path, monkeypatch):
    _, problem, dev = env
    lc.cached_latency_model(problem, dev, "onnxruntime")
    (path,) = (tmp_path / "nas").glob("fake-0123-*.json")
    doc = json.loads(path.read_text())
    doc["created"] -= 3 * 86400
    path.write_text(json.dumps(doc))
    monkeypatch.setenv("HWOPT_NAS_CACHE_DAYS", "7")
    lc.cached_latency_model(problem, dev, "onnxruntime")
    assert problem.builds == 1  # 3 days old, 7 allowed
    monkeypatch.setenv("HWOPT_NAS_CACHE_DAYS", "2")
    lc.cached_latency_model(problem, dev, "onnxruntime")
    assert problem.builds == 2


def test_damaged_entry_is_rebuilt(env, tmp_path):
    _, problem, dev = env
    lc.cached_latency_model(problem, dev, "onnxruntime")
    (path,) = (tmp_path / "nas").glob("fake-0123-*.json")
    path.write_text("{not json")
    lc.cached_latency_model(problem, dev, "onnxruntime")
    assert problem.builds == 2


def test_bad_expiry_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HWOPT_NAS_CACHE_DAYS", "soon")
    with pytest.raises(HwoptError, match="HWOPT_NAS_CACHE_DAYS"):
        lc.max_age_days()


def test_measured_key_names_cpu_runtime_version_and_threads():
    import onnxruntime

    from hwopt.runtimes.base import host_device

    key = MeasuredTimer(load_device("x86-avx512"), "onnxruntime").cache_key()
    assert key["measured_on"] == host_device() and key["runtime_version"] == onnxruntime.__version__ and key["threads"] == 1


def test_accuracy_cache_of_another_hwopt_version_is_ignored(tmp_path, monkeypatch):
    import hwopt
    from hwopt.nas.predictor import measurement_cache

    monkeypatch.setenv("HWOPT_CACHE_DIR", str(tmp_path))
    cache = measurement_cache("p")
    cache.put({"a": 1}, 50.0)
    cache.save()
    assert measurement_cache("p").get({"a": 1}) == 50.0
    monkeypatch.setattr(hwopt, "__version__", "99.0")
    assert measurement_cache("p").get({"a": 1}) is None
