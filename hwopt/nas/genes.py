"""Integer gene encoding shared by every search space, and the additive latency model over it.

A subnet is a row of small integers, one per gene (a kernel size, an expand ratio, a stage depth,
a group width, a resolution...), with choice 0 always the cheapest. Populations are (N, G) int
arrays, so the evolutionary search mutates, crosses over and scores a whole generation with a
handful of numpy operations instead of a Python loop per subnet.

Latency is a lookup-sum, as in Once-for-All's latency table: each term reads one table cell
indexed by a few genes (e.g. a block's (resolution, stage depth, kernel, expand)), and the subnet's
latency is a fixed base plus the sum of its terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Gene:
    name: str
    choices: tuple  # ordered cheapest first

    @property
    def n(self) -> int:
        return len(self.choices)


class SearchSpace(Protocol):
    """What the search needs from a space: genes, and the two-way mapping to readable configs."""

    genes: list[Gene]

    def decode(self, row: np.ndarray) -> dict: ...

    def encode(self, config: dict) -> np.ndarray: ...

    def features(self, pop: np.ndarray) -> np.ndarray:
        """(N, F) float encoding for the accuracy predictor (inactive parts zeroed)."""
        ...

    def canonical(self, pop: np.ndarray) -> np.ndarray:
        """Same subnets with genes that have no effect set to 0, so equal subnets compare equal."""
        ...


class LatencyModel(Protocol):
    """Subnet rows -> predicted milliseconds on one target/runtime."""

    target: str
    runtime: str

    def __call__(self, pop: np.ndarray) -> np.ndarray: ...


def sizes(genes: list[Gene]) -> np.ndarray:
    return np.array([g.n for g in genes], dtype=np.int64)


@dataclass
class Term:
    """One lookup-table contribution: `table[pop[:, genes[0]], pop[:, genes[1]], ...]` in ms."""

    genes: tuple[int, ...]
    table: np.ndarray
    label: str = ""


@dataclass
class AdditiveLatency:
    """Latency = base_ms + sum of table terms, vectorised over a population.

    With `log_space` the terms are log-factors and latency = base_ms + exp(sum): savings multiply
    instead of adding, which suits channel widths (a conv shrunk on both sides costs a*b, not
    a+b-1) and can never go negative.
    """

    target: str
    runtime: str
    base_ms: float
    terms: list[Term]
    provenance: dict = field(default_factory=dict)
    log_space: bool = False

    def __call__(self, pop: np.ndarray) -> np.ndarray:
        pop = np.atleast_2d(pop)
        total = np.zeros(len(pop))
        for t in self.terms:
            total += t.table[tuple(pop[:, g] for g in t.genes)]
        return self.base_ms + (np.exp(total) if self.log_space else total)
