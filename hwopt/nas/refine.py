"""Measured refinement of a search's top candidates: real latency and real accuracy decide.

The evolutionary search ranks subnets with two models that are each a few percent off: the
lookup-sum latency table (it ignores cross-block fusion and cache effects, so whole subnets run
slower or faster than their summed blocks) and the accuracy predictor (RMSE of one to a few points,
more than the gap between neighbouring subnets near a budget). Picking the predictor's single
favourite therefore often lands over the budget, or on a subnet that is really worse than a
runner-up. So the best few distinct candidates of the final population are measured: their
whole-model latency on the target when the target is this machine (OFA's paper allows measuring
on the device), and their accuracy on the evaluation data; the most accurate candidate that
really meets the budget wins. Between rounds the search is rerun: with the budget scaled by the
observed measured/predicted ratio when no candidate met it (a bias correction of the table), and
with the accuracy predictor refitted on the new measurements, which are exactly the near-budget
subnets where its error decides the winner (a small active-learning loop).

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
from hwopt.nas.predictor import AccuracyPredictor, config_key

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
    rounds: int  # searches run
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
    learn: Callable[[list[Candidate]], None] | None = None,
    top_k: int = 5,
    max_rounds: int = 3,
    floor_ms: float = 0.0,
) -> Refined:
    """Measure the top `top_k` candidates and keep the most accurate one that meets `budget_ms`.

    Each round measures up to `top_k` new candidates (accuracy, and latency with `measure_ms`).
    Then, while rounds are left: if none met the budget, the search is rerun with the budget
    scaled by the median measured/predicted ratio; otherwise, with `learn`, the new measurements
    are handed to `learn` (which refits the accuracy predictor: they are exactly the near-budget
    points where its error decides the winner) and the search is rerun. Without `measure_ms`
    (a target that is not this machine) the predicted latency is trusted. `floor_ms` is the
    smallest predicted latency in the space: a corrected budget is never pushed below it.
    """
    seen: dict[str, Candidate] = {}
    rounds, search_budget = 1, budget_ms
    while True:
        rows = result.top(top_k + len(seen))
        fresh = [(r, s) for r, s in zip(rows, _scores(result, rows)) if config_key(decode(r)) not in seen][:top_k]
        cands = [Candidate(decode(r), float(latency(r[None])[0]), float(s)) for r, s in fresh]
        for c in cands:
            c.measured_ms = measure_ms(c.config) if measure_ms is not None else None
            c.accuracy = accuracy(c.config)
            seen[config_key(c.config)] = c
        if rounds >= max_rounds or not cands:
            break
        if all(not _fits(c, budget_ms) for c in cands):
            ratio = float(np.median([c.measured_ms / c.predicted_ms for c in cands]))
            search_budget = max(search_budget / max(ratio, 1.0 + 1e-3), floor_ms)
        elif learn is None:
            break
        if learn is not None:
            learn(cands)
        rounds += 1
        result = rerun(search_budget)
    measured = list(seen.values())
    fits = [c for c in measured if _fits(c, budget_ms)]
    if not fits:  # still over after the corrections: the fastest candidate measured, honestly reported
        return Refined(min(measured, key=lambda c: c.measured_ms), rounds, measured)
    best = max(fits, key=lambda c: (c.accuracy, -(c.measured_ms or c.predicted_ms)))
    return Refined(best, rounds, measured)


def _fits(c: Candidate, budget_ms: float) -> bool:
    return c.measured_ms is None or c.measured_ms <= budget_ms


def _scores(result: EvolutionResult, rows: np.ndarray) -> list[float]:
    """Predicted accuracy of `rows` as the search scored them."""
    if result.population is None:
        return [result.accuracy] * len(rows)
    index = {p.tobytes(): s for p, s in zip(result.population, result.scores)}
    return [float(index[r.tobytes()]) for r in rows]


class PredictorRefit:
    """The search's accuracy predictor, refitted whenever refinement measures new subnets."""

    def __init__(self, space, predictor: AccuracyPredictor, rows: np.ndarray, accuracy: np.ndarray, *, kind: str, seed: int):
        self.space, self.predictor, self.kind, self.seed = space, predictor, kind, seed
        self.rows, self.accuracy = np.asarray(rows), np.asarray(accuracy, dtype=np.float64)

    def predict(self, pop: np.ndarray) -> np.ndarray:
        return self.predictor.predict(self.space.features(pop))

    def learn(self, measured: list[Candidate]) -> None:
        new = np.stack([self.space.encode(c.config) for c in measured])
        self.rows = np.concatenate([self.rows, new])
        self.accuracy = np.concatenate([self.accuracy, [c.accuracy for c in measured]])
        self.predictor = AccuracyPredictor(self.kind, self.seed).fit(self.space.features(self.rows), self.accuracy)


def onnx_timer(export: Callable[[dict, Path], Path], timer) -> Callable[[dict], float]:
    """config -> whole-model ms on `timer`'s runtime (1 thread), via a temporary ONNX export."""
    import onnx

    def measure(config: dict) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            path = export(config, Path(tmp) / "candidate.onnx")
            return timer.model_ms(onnx.load(str(path)))

    return measure
