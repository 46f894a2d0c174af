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
    measured = measure_interleaved(loaded, runtime, threads=tab.threads or 1, shapes=per_model)
    rows = []
    for path, model, meas, own in zip(models, loaded, measured, per_model):
        pred = predict_latency(model, dev, runtime, own, table=table)
        rows.append({"model": str(path), "predicted_ms": pred.latency_ms, "measured_ms": meas,
                     "rel_error": pred.latency_ms / meas - 1, "sources": pred.sources})
    clock = "process CPU time" if (tab.threads or 1) == 1 else "wall time"
    return {"target": dev.name, "runtime": runtime, "threads": tab.threads, "measured_on": host_device(),
            "clock": clock,
            "models": rows, "summary": error_summary([r["predicted_ms"] for r in rows],
                                                      [r["measured_ms"] for r in rows])}
