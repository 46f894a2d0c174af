"""Paired comparisons of hwopt against a peer on the same images and the same timing rounds.

Shared by the benchmarks that state a goal against a peer (compress_x86.py, quant_ptq.py): an
accuracy difference counts only if a paired exact test calls it beyond noise, a speed difference
only if it is also larger than what memory placement alone produces between identical graphs.
"""

from __future__ import annotations

from math import comb

import numpy as np


def fair_coin_p(heads: int, tails: int) -> float:
    """Exact two-sided p-value of `heads` vs `tails` under a fair coin (1.0 with no tosses)."""
    n = heads + tails
    return min(1.0, 2 * sum(comb(n, k) for k in range(min(heads, tails) + 1)) / 2**n) if n else 1.0


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """Paired exact McNemar test of two classifiers on the same images: only the discordant
    pairs count (b: a right and b wrong, c: the reverse); under "equally accurate" each
    discordant image is a fair coin, so p = P(Binomial(b + c, 1/2) at least as lopsided)."""
    b = int((a_correct & ~b_correct).sum())
    c = int((~a_correct & b_correct).sum())
    p = fair_coin_p(b, c)
    return {"hwopt_only_right": b, "peer_only_right": c, "p_value": round(p, 4), "beyond_noise": p < 0.05}


#: per-round latency differences smaller than this are not the model's: two files with the same
#: onnxruntime kernels (hwopt's and quantize_static's mobilenet_digits) differed consistently by
#: 0.4-0.6 % (15 of 15 rounds), one way with four sessions loaded and the other way with three,
#: while two copies of one file tied; memory placement, not the graph, decides at that scale
PRACTICAL_MARGIN = 0.02


def speed_vs_peer(hwopt_rounds: list[float], peer_rounds: list[float]) -> dict:
    """hwopt's latency against the peer's, round by round: who won how many of the interleaved
    rounds, an exact two-sided sign test on those wins, and the median per-round ratio. One side
    is faster beyond noise when the sign test says so (p < 0.05) *and* its per-round lead exceeds
    PRACTICAL_MARGIN; `consistent` alone reports a significant lead of any size."""
    wins = int(sum(a < b for a, b in zip(hwopt_rounds, peer_rounds)))
    losses = int(sum(a > b for a, b in zip(hwopt_rounds, peer_rounds)))
    p = fair_coin_p(wins, losses)
    ratio = float(np.median(np.asarray(peer_rounds) / np.asarray(hwopt_rounds)))
    return {"median_round_ratio_peer_over_hwopt": round(ratio, 4), "hwopt_won_rounds": wins, "rounds": len(hwopt_rounds),
            "sign_test_p": round(p, 4), "consistent": p < 0.05, "practical_margin": PRACTICAL_MARGIN,
            "peer_faster_beyond_noise": p < 0.05 and losses > wins and ratio < 1 - PRACTICAL_MARGIN,
            "hwopt_faster_beyond_noise": p < 0.05 and wins > losses and ratio > 1 + PRACTICAL_MARGIN}
