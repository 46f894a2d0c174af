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
from hwopt.latency.profiler import measure_interleaved
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


def validate_models(models: Sequence[str | os.PathLike], target: str, runtime: str, *, shapes: Shapes | None = None,
                    table: str | os.PathLike | None = None) -> dict:
    """Predict each model, and measure them all here round-robin with the table's thread count."""
    dev = load_device(target)
    if not dev.present_here:
        raise HwoptError(f"--validate measures here, but target {dev.name} is not present here")
    _, tab = resolve_table(dev, runtime, table)
    loaded = [load_model(path) for path in models]
    measured = measure_interleaved(loaded, runtime, threads=tab.threads or 1, shapes=shapes)
    rows = []
    for path, model, meas in zip(models, loaded, measured):
        pred = predict_latency(model, dev, runtime, shapes, table=table)
        rows.append({"model": str(path), "predicted_ms": pred.latency_ms, "measured_ms": meas,
                     "rel_error": pred.latency_ms / meas - 1, "sources": pred.sources})
    return {"target": dev.name, "runtime": runtime, "threads": tab.threads, "measured_on": host_device(),
            "models": rows, "summary": error_summary([r["predicted_ms"] for r in rows],
                                                      [r["measured_ms"] for r in rows])}
