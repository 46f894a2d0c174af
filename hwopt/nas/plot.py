"""Pareto plot of a search: every measured subnet and the chosen ones, accuracy vs latency per target."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from hwopt.graph.load import atomic_write_bytes


def pareto_front(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of the subnets no other subnet beats on both latency and accuracy, by latency."""
    order = np.lexsort((-accuracy, latency))
    front, best = [], -np.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return np.asarray(front, dtype=np.int64)


def pareto_plot(sample_latency: dict[str, np.ndarray], accuracy: np.ndarray, results: list, path: Path, metric: str) -> Path:
    """Write a PNG with one panel per target (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(sample_latency)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        lat = sample_latency[name]
        ax.scatter(lat, accuracy, s=10, alpha=0.4, label="measured subnets")
        front = pareto_front(lat, accuracy)
        ax.step(lat[front], accuracy[front], where="post", color="tab:gray", lw=1, label="sampled Pareto front")
        mine = [r for r in results if r.target == name]
        ax.scatter([r.latency_ms for r in mine], [r.accuracy for r in mine], marker="*", s=140, color="tab:red", label="searched")
        for r in mine:
            ax.axvline(r.budget_ms, color="tab:red", ls=":", lw=0.8)
        ax.set_title(f"{name} ({mine[0].runtime if mine else ''})")
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(buf.getvalue(), path)
