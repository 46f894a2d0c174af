"""Per-(problem, target, runtime) latency lookup tables, cached on disk and invalidated on purpose.

Timing every block signature takes tens of seconds (measured) or a few (predicted), and the same
table serves every later search on that target, so it is kept under $HWOPT_CACHE_DIR (default
~/.cache/hwopt/nas). A table is only as good as the conditions it was measured under: a new
onnxruntime, another CPU model, another thread count or another hwopt (whose block export or
latency predictor may have changed) give different milliseconds. So each entry records the
environment it was built in (`environment_key`), and an entry whose environment differs from the
current one, or that is older than $HWOPT_NAS_CACHE_DAYS (default 14; measured timings also drift
with kernel and firmware updates nobody versions), is rebuilt instead of silently reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from hwopt.devices import DeviceProfile
from hwopt.errors import HwoptError
from hwopt.graph.load import atomic_write_text
from hwopt.nas.genes import AdditiveLatency, Term
from hwopt.nas.timers import make_timer

FORMAT = 3  # bump when the file layout or the meaning of a table changes
DEFAULT_MAX_AGE_DAYS = 14.0


def cache_dir() -> Path:
    return Path(os.environ.get("HWOPT_CACHE_DIR") or Path.home() / ".cache" / "hwopt") / "nas"


def max_age_days() -> float:
    raw = os.environ.get("HWOPT_NAS_CACHE_DAYS")
    if raw is None or raw == "":
        return DEFAULT_MAX_AGE_DAYS
    try:
        days = float(raw)
    except ValueError:
        raise HwoptError(f"HWOPT_NAS_CACHE_DAYS must be a number of days, got {raw!r}") from None
    if days < 0:
        raise HwoptError(f"HWOPT_NAS_CACHE_DAYS must be >= 0, got {raw!r}")
    return days


def environment_key(problem, device: DeviceProfile, runtime: str, timer) -> dict:
    """Everything a cached table's numbers depend on besides the problem's own weights."""
    import hwopt

    return {"format": FORMAT, "hwopt": hwopt.__version__, "problem": problem.cache_tag, "target": device.name,
            "runtime": runtime, **timer.cache_key()}


def _digest(key: dict) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _to_json(lat: AdditiveLatency, key: dict) -> str:
    return json.dumps({
        "key": key, "created": time.time(),
        "target": lat.target, "runtime": lat.runtime, "base_ms": lat.base_ms, "provenance": lat.provenance, "log_space": lat.log_space,
        "terms": [{"genes": list(t.genes), "label": t.label, "shape": list(t.table.shape), "ms": t.table.ravel().tolist()} for t in lat.terms],
    })


def _from_json(text: str, key: dict, max_age_s: float) -> AdditiveLatency | None:
    """The cached model, or None when it was built elsewhere / with other versions, or is too old."""
    d = json.loads(text)
    if d.get("key") != key or time.time() - float(d.get("created", 0.0)) > max_age_s:
        return None
    terms = [Term(tuple(t["genes"]), np.asarray(t["ms"], dtype=np.float64).reshape(t["shape"]), t["label"]) for t in d["terms"]]
    return AdditiveLatency(d["target"], d["runtime"], float(d["base_ms"]), terms, d["provenance"], bool(d.get("log_space")))


def cached_latency_model(problem, device: DeviceProfile, runtime: str, source: str = "auto") -> AdditiveLatency:
    """The problem's latency model on `device`/`runtime`: read from the cache when it was built in
    this same environment less than `max_age_days()` ago, otherwise built (timed) and cached."""
    timer = make_timer(device, runtime, source)
    key = environment_key(problem, device, runtime, timer)
    path = cache_dir() / f"{problem.cache_tag}-{device.name}-{runtime}-{timer.source}-{_digest(key)}.json"
    if path.is_file():
        try:
            hit = _from_json(path.read_text(), key, max_age_days() * 86400.0)
        except (json.JSONDecodeError, KeyError, ValueError, TypeError):
            hit = None  # a damaged cache entry is rebuilt below
        if hit is not None:
            return hit
    lat = problem.latency_model(device, runtime, timer)
    atomic_write_text(_to_json(lat, key), path)
    return lat
