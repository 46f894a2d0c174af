"""Predicted vs measured on this machine, for `hwopt predict --validate` and the benchmark."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from hwopt.devices import load_device
from hwopt.errors import HwoptError
from hwopt.graph.load import load_model
from hwopt.graph.shapes import Shapes
from hwopt.latency.predict import predict_latency, resolve_table
from hwopt.latency.probe import drift, probe_model, table_probe_ms
from hwopt.latency.profiler import measure_interleaved
from hwopt.latency.table import LatencyTable
from hwopt.runtimes.base import host_device


def error_summary(predicted: Sequence[float], measured: Sequence[float]) -> dict:
    """Share within ±10%, mean |relative error| and Spearman rank correlation (None for < 3 models)."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = p / m - 1
    out = {"models": len(p), "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
           "mean_abs_rel_error": float(np.mean(np.abs(rel))), "spearman": None}
    if len(p) >= 3:
        from scipy.stats import spearmanr

        out["spearman"] = float(spearmanr(p, m).statistic)
    return out


def drift_normalized(table: LatencyTable, probe_now_ms: float, predicted: Sequence[float],
                     measured: Sequence[float]) -> dict:
    """The speed probe's reading and, when the table recorded the probe, the errors *drift-normalized*:
    each prediction x probe now / probe when the table was timed (`hwopt.latency.probe`). This takes
    out a machine-wide speed change between the table's timing and this measurement; it is reported
    beside the raw errors, never instead of them."""
    then = table_probe_ms(table)
    factor = drift(table, probe_now_ms)
    out = {"probe_ms_now": round(float(probe_now_ms), 6), "probe_ms_at_table": then,
           "drift": None if factor is None else round(factor, 4)}
    if factor is None:
        return {**out, "note": "the table recorded no speed probe (re-time it: hwopt profile --retime)"}
    normalized = np.asarray(predicted, float) * factor
    return {**out, "predicted_ms": [round(float(x), 6) for x in normalized],
            "summary": error_summary(normalized, measured)}


def _shapes_per_model(models: Sequence, shapes: Shapes) -> list[Shapes]:
    """Each model gets the --shape entries naming its own inputs (models in one run differ: `x`, `images`...);
    a name no model has is a typo and a clear error."""
    names = [{i.name for i in m.graph.input} for m in models]
    stray = set(shapes) - set().union(*names)
    if stray:
        raise HwoptError(f"--shape names input(s) {sorted(stray)} that none of the models has")
    return [{k: v for k, v in shapes.items() if k in own} for own in names]


def validate_models(models: Sequence[str | os.PathLike], target: str, runtime: str, *,
                    shapes: Shapes | list[Shapes] | None = None, table: str | os.PathLike | None = None) -> dict:
    """Predict each model, and measure them all here round-robin with the table's thread count.

    `shapes`: one mapping whose entries go to the models having those inputs, or one per model."""
    dev = load_device(target)
    if not dev.present_here:
        raise HwoptError(f"--validate measures here, but target {dev.name} is not present here")
    _, tab = resolve_table(dev, runtime, table)
    loaded = [load_model(path) for path in models]
    per_model = shapes if isinstance(shapes, list) else _shapes_per_model(loaded, shapes or {})
    # the speed probe runs in the same round-robin (last), so it sees the same machine state
    *measured, probe_now = measure_interleaved(loaded + [probe_model()], runtime, threads=tab.threads or 1,
                                               shapes=per_model + [None])
    rows = []
    for path, model, meas, own in zip(models, loaded, measured, per_model):
        pred = predict_latency(model, dev, runtime, own, table=table)
        rows.append({"model": str(path), "predicted_ms": pred.latency_ms, "measured_ms": meas,
                     "rel_error": pred.latency_ms / meas - 1, "sources": pred.sources})
    clock = "process CPU time" if (tab.threads or 1) == 1 else "wall time"
    predicted, meas_ms = [r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows]
    return {"target": dev.name, "runtime": runtime, "threads": tab.threads, "measured_on": host_device(),
            "clock": clock, "models": rows, "summary": error_summary(predicted, meas_ms),
            "drift_normalized": drift_normalized(tab, probe_now, predicted, meas_ms)}
