"""Latency-constrained evolutionary search over integer-encoded subnets (Once-for-All's recipe).

Each generation keeps the best `parent_ratio` of the population by predicted accuracy, then
refills it with mutants (each gene resampled with `mutation_prob`) and uniform crossovers of two
parents; children over the latency budget are rejected and redrawn. Everything is vectorised
over the population with numpy and seeded, so 500 generations x 100 subnets take seconds and the
same seed gives the same answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hwopt.errors import HwoptError
from hwopt.nas.genes import Gene, sizes

Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EvolutionSettings:
    population: int = 100
    generations: int = 500
    parent_ratio: float = 0.25
    mutation_prob: float = 0.1
    mutation_ratio: float = 0.5  # share of the children made by mutation; the rest by crossover
    seed: int = 0

    def check(self) -> None:
        if self.population < 4 or self.generations < 1:
            raise HwoptError("population must be >= 4 and generations >= 1")
        if not (0 < self.parent_ratio < 1 and 0 <= self.mutation_prob <= 1 and 0 <= self.mutation_ratio <= 1):
            raise HwoptError("parent_ratio must be in (0, 1); mutation_prob and mutation_ratio in [0, 1]")


@dataclass
class EvolutionResult:
    best: np.ndarray  # gene row
    accuracy: float  # predicted
    latency_ms: float  # predicted by the latency model
    budget_ms: float
    seconds: float
    history: list[float] = field(default_factory=list)  # best predicted accuracy per generation
    evaluated: int = 0  # subnets scored by the predictor
    population: np.ndarray | None = None  # final population (all within budget), for refinement
    scores: np.ndarray | None = None  # its predicted accuracy

    def top(self, k: int) -> np.ndarray:
        """The `k` best distinct rows of the final population, best predicted accuracy first."""
        if self.population is None:
            return self.best[None]
        order = np.argsort(-self.scores, kind="stable")
        rows, seen = [], set()
        for i in order:
            key = self.population[i].tobytes()
            if key not in seen:
                seen.add(key)
                rows.append(self.population[i])
            if len(rows) == k:
                break
        return np.stack(rows)


def latency_range(genes: list[Gene], latency: Scorer, seed: int = 0) -> tuple[float, float]:
    """Smallest and largest predicted latency in the space.

    Taken over the all-cheapest and all-largest subnets plus a spread sample, because a latency
    predictor need not be monotone in every choice.
    """
    n = sizes(genes)
    rows = np.concatenate([np.zeros((1, len(n)), np.int64), (n - 1)[None], spread_sample(np.random.default_rng(seed), n, 2000)])
    ms = latency(rows)
    return float(ms.min()), float(ms.max())


def check_budget(genes: list[Gene], latency: Scorer, budget_ms: float, where: str = "") -> None:
    """Refuse budgets no subnet can meet, or that the largest subnet already meets, naming the range."""
    lo, hi = latency_range(genes, latency)
    if not (lo <= budget_ms <= hi):
        side = "below the smallest" if budget_ms < lo else "above the largest"
        raise HwoptError(
            f"latency budget {budget_ms:g} ms is {side} subnet's predicted latency{where}; "
            f"achievable range is {lo:.3f} .. {hi:.3f} ms"
        )


def spread_sample(rng: np.random.Generator, n: np.ndarray, count: int) -> np.ndarray:
    """Random subnets spread from small to large: each row draws its own size level.

    Uniform sampling concentrates around medium subnets, so tight budgets would reject almost every
    draw; a per-row level (choice index ~ level x choices, jittered) covers the whole range.
    """
    level = rng.random((count, 1))
    jitter = rng.random((count, len(n)))
    idx = np.floor((0.6 * level + 0.4 * jitter) * n).astype(np.int64)
    return np.minimum(idx, n - 1)


def _fill(make: Callable[[int], np.ndarray], latency: Scorer, budget: float, count: int, tries: int = 20) -> np.ndarray:
    """`count` rows from `make` that meet the budget (oversampling, then rejection)."""
    out: list[np.ndarray] = []
    have = 0
    for _ in range(tries):
        cand = make(max(2 * (count - have), 8))
        ok = cand[latency(cand) <= budget]
        out.append(ok)
        have += len(ok)
        if have >= count:
            break
    rows = np.concatenate(out) if out else np.empty((0,))
    return rows[:count]


def evolve(
    genes: list[Gene],
    accuracy: Scorer,
    latency: Scorer,
    budget_ms: float,
    settings: EvolutionSettings = EvolutionSettings(),
    canonical: Callable[[np.ndarray], np.ndarray] | None = None,
) -> EvolutionResult:
    """Maximise `accuracy(pop)` subject to `latency(pop) <= budget_ms`.

    BLAS runs single-threaded here: the matrices are tiny, and on a shared 2-core machine a
    multi-threaded matmul per generation was measured 7x slower than one thread.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _evolve(genes, accuracy, latency, budget_ms, settings, canonical)


def _evolve(
    genes: list[Gene],
    accuracy: Scorer,
    latency: Scorer,
    budget_ms: float,
    settings: EvolutionSettings,
    canonical: Callable[[np.ndarray], np.ndarray] | None,
) -> EvolutionResult:
    settings.check()
    check_budget(genes, latency, budget_ms)
    t0 = time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    n = sizes(genes)
    canon = canonical or (lambda p: p)
    n_par = max(2, int(round(settings.population * settings.parent_ratio)))
    n_mut = int(round((settings.population - n_par) * settings.mutation_ratio))
    n_cross = settings.population - n_par - n_mut

    cheapest = np.zeros((1, len(n)), dtype=np.int64)
    pop = _fill(lambda c: spread_sample(rng, n, c), latency, budget_ms, settings.population)
    if len(pop) < settings.population:  # budget so tight that random draws rarely fit: pad with the cheapest
        pop = np.concatenate([pop.reshape(-1, len(n)), np.repeat(cheapest, settings.population - len(pop), 0)])
    pop = canon(pop)
    acc = accuracy(pop)
    evaluated = len(pop)
    history = []

    def mutate(count: int, parents: np.ndarray) -> np.ndarray:
        base = parents[rng.integers(0, len(parents), count)]
        flip = rng.random(base.shape) < settings.mutation_prob
        fresh = np.floor(rng.random(base.shape) * n).astype(np.int64)
        return np.where(flip, fresh, base)

    def cross(count: int, parents: np.ndarray) -> np.ndarray:
        a = parents[rng.integers(0, len(parents), count)]
        b = parents[rng.integers(0, len(parents), count)]
        return np.where(rng.random(a.shape) < 0.5, a, b)

    for _ in range(settings.generations):
        order = np.argsort(-acc, kind="stable")[:n_par]
        parents, parent_acc = pop[order], acc[order]
        history.append(float(parent_acc[0]))
        children = [
            _fill(lambda c: mutate(c, parents), latency, budget_ms, n_mut),
            _fill(lambda c: cross(c, parents), latency, budget_ms, n_cross),
        ]
        kids = canon(np.concatenate([k.reshape(-1, len(n)) for k in children]))
        if len(kids):
            kid_acc = accuracy(kids)
            evaluated += len(kids)
            pop, acc = np.concatenate([parents, kids]), np.concatenate([parent_acc, kid_acc])
        else:
            pop, acc = parents, parent_acc
    best = int(np.argmax(acc))
    return EvolutionResult(
        best=pop[best].copy(),
        accuracy=float(acc[best]),
        latency_ms=float(latency(pop[best : best + 1])[0]),
        budget_ms=budget_ms,
        seconds=time.perf_counter() - t0,
        history=history,
        evaluated=evaluated,
        population=pop,
        scores=acc,
    )
