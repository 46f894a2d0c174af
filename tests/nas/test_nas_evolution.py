"""Evolutionary search on a synthetic additive problem whose optimum is known."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hwopt.errors import HwoptError
from hwopt.nas.evolution import EvolutionSettings, check_budget, evolve, latency_range
from hwopt.nas.genes import AdditiveLatency, Gene, Term


def _problem(seed: int = 0, n_genes: int = 30, choices: int = 3):
    rng = np.random.default_rng(seed)
    genes = [Gene(f"g{i}", tuple(range(choices))) for i in range(n_genes)]
    cost = np.sort(rng.random((n_genes, choices)), axis=1)  # bigger choice costs more ...
    gain = np.sort(rng.random((n_genes, choices)), axis=1)  # ... and is more accurate
    lat = AdditiveLatency("t", "rt", 1.0, [Term((i,), cost[i], f"g{i}") for i in range(n_genes)])

    def acc(pop):
        return gain[np.arange(n_genes), pop].sum(1)

    return genes, lat, acc


def test_meets_budget_and_beats_random_search():
    genes, lat, acc = _problem()
    lo, hi = latency_range(genes, lat)
    budget = lo + 0.4 * (hi - lo)
    res = evolve(genes, acc, lat, budget, EvolutionSettings(generations=100, seed=1))
    assert res.latency_ms <= budget + 1e-9
    rng = np.random.default_rng(0)
    rand = rng.integers(0, 3, (20000, len(genes)))
    feasible = rand[lat(rand) <= budget]
    assert len(feasible) and res.accuracy > acc(feasible).max()


def test_same_seed_same_result_and_other_seed_may_differ():
    genes, lat, acc = _problem()
    lo, hi = latency_range(genes, lat)
    s = EvolutionSettings(generations=50, seed=3)
    a = evolve(genes, acc, lat, (lo + hi) / 2, s)
    b = evolve(genes, acc, lat, (lo + hi) / 2, s)
    assert np.array_equal(a.best, b.best) and a.history == b.history


def test_500_generations_of_100_under_10_seconds():
    genes, lat, acc = _problem(n_genes=46)
    lo, hi = latency_range(genes, lat)
    t0 = time.perf_counter()
    res = evolve(genes, acc, lat, lo + 0.5 * (hi - lo), EvolutionSettings())
    assert time.perf_counter() - t0 < 10
    assert len(res.history) == 500 and res.evaluated >= 500 * 70
    assert res.history[-1] >= res.history[0]  # elitist: the best never gets worse


@pytest.mark.parametrize("where", ["below", "above"])
def test_budget_outside_range_names_it(where):
    genes, lat, acc = _problem()
    lo, hi = latency_range(genes, lat)
    budget = lo * 0.5 if where == "below" else hi * 2
    with pytest.raises(HwoptError, match=rf"{where} the .*achievable range is {lo:.3f} \.\. {hi:.3f} ms"):
        check_budget(genes, lat, budget)


def test_tight_budget_still_returns_a_fitting_subnet():
    genes, lat, acc = _problem()
    lo, _ = latency_range(genes, lat)
    res = evolve(genes, acc, lat, lo * 1.001, EvolutionSettings(generations=20))
    assert res.latency_ms <= lo * 1.001


def test_bad_settings_are_refused():
    genes, lat, acc = _problem()
    with pytest.raises(HwoptError):
        evolve(genes, acc, lat, 5.0, EvolutionSettings(parent_ratio=1.5))


def test_log_space_latency_multiplies_savings():
    # two genes each halving the time alone: together a quarter, never negative
    half = np.log(np.array([0.5, 1.0]))
    lat = AdditiveLatency("t", "rt", 0.1, [Term((0,), half), Term((1,), half)], log_space=True)
    np.testing.assert_allclose(lat(np.array([[1, 1], [0, 1], [0, 0]])), [1.1, 0.6, 0.35])
