"""Measured refinement of a search's top candidates: real latency and real accuracy decide.

The evolutionary search ranks subnets with two models that are each a few percent off: the
lookup-sum latency table (it ignores cross-block fusion and cache effects, so whole subnets run
slower or faster than their summed blocks) and the accuracy predictor (RMSE of one to a few points,
more than the gap between neighbouring subnets near a budget). Picking the predictor's single
favourite therefore often lands over the budget, or on a subnet that is really worse than a
runner-up. So the best few distinct candidates of the final population are measured: their
whole-model latency on the target when the target is this machine (OFA's paper allows measuring
on the device), and their accuracy on the evaluation data; the most accurate candidate that
really meets the budget wins. When none meets it, the search is rerun once or twice with the
budget scaled by the observed measured/predicted ratio (a bias correction of the table).

Caveat: choosing among candidates by accuracy on the evaluation data makes that reported
accuracy slightly optimistic (best of k); the accuracy predictor is fitted on the same data anyway.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwopt.nas.evolution import EvolutionResult

Rerun = Callable[[float], EvolutionResult]  # budget in ms -> a fresh search result


@dataclass
class Candidate:
    config: dict
    predicted_ms: float
    predicted_accuracy: float
    measured_ms: float | None = None
    accuracy: float | None = None

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class Refined:
    chosen: Candidate
    rounds: int  # searches run (1 = no bias correction was needed)
    candidates: list[Candidate] = field(default_factory=list)  # every candidate measured


def refine(
    result: EvolutionResult,
    *,
    decode: Callable[[np.ndarray], dict],
    latency: Callable[[np.ndarray], np.ndarray],
    budget_ms: float,
    accuracy: Callable[[dict], float],
    measure_ms: Callable[[dict], float] | None,
    rerun: Rerun,
    top_k: int = 5,
    max_rounds: int = 3,
    floor_ms: float = 0.0,
) -> Refined:
    """Measure the top `top_k` candidates and keep the most accurate one that meets `budget_ms`.

    Without `measure_ms` (a target that is not this machine) the predicted latency is trusted and
    only accuracy is measured. `floor_ms` is the smallest predicted latency in the space: a
    corrected budget is never pushed below it.
    """
    seen: list[Candidate] = []
    rounds, search_budget = 1, budget_ms
    while True:
        rows = result.top(top_k)
        cands = [Candidate(decode(r), float(latency(r[None])[0]), float(s)) for r, s in zip(rows, _scores(result, rows))]
        if measure_ms is not None:
            for c in cands:
                c.measured_ms = measure_ms(c.config)
        seen += cands
        fits = [c for c in cands if c.measured_ms is None or c.measured_ms <= budget_ms]
        if fits or rounds >= max_rounds:
            break
        ratio = float(np.median([c.measured_ms / c.predicted_ms for c in cands]))
        search_budget = max(search_budget / max(ratio, 1.0 + 1e-3), floor_ms)
        rounds += 1
        result = rerun(search_budget)
    if not fits:  # still over after the corrections: the fastest candidate measured, honestly reported
        best = min(seen, key=lambda c: c.measured_ms)
        best.accuracy = accuracy(best.config)
        return Refined(best, rounds, seen)
    for c in fits:
        c.accuracy = accuracy(c.config)
    best = max(fits, key=lambda c: (c.accuracy, -(c.measured_ms or c.predicted_ms)))
    return Refined(best, rounds, seen)


def _scores(result: EvolutionResult, rows: np.ndarray) -> list[float]:
    """Predicted accuracy of `rows` as the search scored them."""
    if result.population is None:
        return [result.accuracy] * len(rows)
    index = {p.tobytes(): s for p, s in zip(result.population, result.scores)}
    return [float(index[r.tobytes()]) for r in rows]


def onnx_timer(export: Callable[[dict, Path], Path], timer) -> Callable[[dict], float]:
    """config -> whole-model ms on `timer`'s runtime (1 thread), via a temporary ONNX export."""
    import onnx

    def measure(config: dict) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            path = export(config, Path(tmp) / "candidate.onnx")
            return timer.model_ms(onnx.load(str(path)))

    return measure
