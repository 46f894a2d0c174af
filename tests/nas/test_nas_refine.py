"""Measured refinement: a biased latency table is corrected, and real accuracy picks the winner."""

from __future__ import annotations

import numpy as np

from hwopt.nas.evolution import EvolutionSettings, evolve, latency_range
from hwopt.nas.genes import AdditiveLatency, Gene, Term
from hwopt.nas.refine import refine

N = 12


def _setup():
    rng = np.random.default_rng(0)
    genes = [Gene(f"g{i}", (0, 1, 2)) for i in range(N)]
    cost = np.sort(rng.random((N, 3)), axis=1)
    gain = np.sort(rng.random((N, 3)), axis=1)
    lat = AdditiveLatency("t", "rt", 0.5, [Term((i,), cost[i], f"g{i}") for i in range(N)])

    def decode(row):
        return {"genes": [int(v) for v in row]}

    def true_acc(cfg):
        return float(gain[np.arange(N), cfg["genes"]].sum())

    return genes, lat, decode, true_acc


def test_over_budget_candidates_trigger_a_bias_corrected_search():
    genes, lat, decode, true_acc = _setup()
    lo, hi = latency_range(genes, lat)
    budget = lo + 0.5 * (hi - lo)
    settings = EvolutionSettings(generations=60, seed=0)

    def rerun(b):
        return evolve(genes, lambda p: gain_of(p), lat, b, settings)

    def gain_of(pop):
        return np.array([true_acc(decode(r)) for r in pop])

    def measure_ms(cfg):  # the whole subnet really runs 15% slower than its summed blocks
        return 1.15 * float(lat(np.array([cfg["genes"]]))[0])

    first = rerun(budget)
    ref = refine(first, decode=decode, latency=lat, budget_ms=budget, accuracy=true_acc, measure_ms=measure_ms,
                 rerun=rerun, top_k=4, floor_ms=lo)
    assert 1.15 * first.latency_ms > budget  # the unrefined pick is over budget when measured
    assert ref.rounds >= 2 and ref.chosen.measured_ms <= budget
    assert ref.chosen.accuracy == max(c.accuracy for c in ref.candidates if c.measured_ms <= budget)


def test_learn_gets_the_measured_candidates_and_the_best_measured_wins():
    genes, lat, decode, true_acc = _setup()
    lo, hi = latency_range(genes, lat)
    budget = lo + 0.4 * (hi - lo)
    noisy = np.random.default_rng(3)
    bias = noisy.normal(0, 0.5, (N, 3))  # a poor predictor: the true gain plus a large fixed error

    def predict(pop):
        return np.array([true_acc(decode(r)) for r in pop]) + bias[np.arange(N), pop].sum(1)

    def rerun(b):
        return evolve(genes, predict, lat, b, EvolutionSettings(generations=40, seed=1))

    learned = []
    ref = refine(rerun(budget), decode=decode, latency=lat, budget_ms=budget, accuracy=true_acc, measure_ms=None,
                 rerun=rerun, learn=learned.append, top_k=3, max_rounds=3)
    assert ref.rounds == 3 and len(learned) == 2 and all(len(batch) <= 3 for batch in learned)
    keys = [str(c.config) for c in ref.candidates]
    assert len(keys) == len(set(keys))  # each round measures new subnets only
    assert ref.chosen.accuracy == max(c.accuracy for c in ref.candidates)
    assert ref.chosen.predicted_ms <= budget + 1e-9
