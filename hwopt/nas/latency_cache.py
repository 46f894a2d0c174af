"""Per-(problem, target, runtime) latency lookup tables, cached on disk.

Timing every block signature takes tens of seconds (measured) or a few (predicted), and the same
table serves every later search on that target, so it is kept under $HWOPT_CACHE_DIR (default
~/.cache/hwopt/nas) keyed by the problem's weights/data tag.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hwopt.devices import DeviceProfile
from hwopt.graph.load import atomic_write_text
from hwopt.nas.genes import AdditiveLatency, Term
from hwopt.nas.timers import make_timer


def cache_dir() -> Path:
    return Path(os.environ.get("HWOPT_CACHE_DIR") or Path.home() / ".cache" / "hwopt") / "nas"


def _to_json(lat: AdditiveLatency) -> str:
    return json.dumps({
        "target": lat.target, "runtime": lat.runtime, "base_ms": lat.base_ms, "provenance": lat.provenance, "log_space": lat.log_space,
        "terms": [{"genes": list(t.genes), "label": t.label, "shape": list(t.table.shape), "ms": t.table.ravel().tolist()} for t in lat.terms],
    })


def _from_json(text: str) -> AdditiveLatency:
    d = json.loads(text)
    terms = [Term(tuple(t["genes"]), np.asarray(t["ms"], dtype=np.float64).reshape(t["shape"]), t["label"]) for t in d["terms"]]
    return AdditiveLatency(d["target"], d["runtime"], float(d["base_ms"]), terms, d["provenance"], bool(d.get("log_space")))


def cached_latency_model(problem, device: DeviceProfile, runtime: str, source: str = "auto") -> AdditiveLatency:
    """The problem's latency model on `device`/`runtime`, built once and then read from the cache."""
    path = cache_dir() / f"{problem.cache_tag}-{device.name}-{runtime}-{source}.json"
    if path.is_file():
        try:
            return _from_json(path.read_text())
        except (json.JSONDecodeError, KeyError, ValueError):
            pass  # a damaged cache entry is rebuilt below
    lat = problem.latency_model(device, runtime, make_timer(device, runtime, source))
    atomic_write_text(_to_json(lat), path)
    return lat
