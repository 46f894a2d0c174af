"""The accuracy guard: which candidate to keep, and why.

A candidate is eligible when its accuracy drop against the baseline stays within the budget
(and, with a latency budget, when it is also fast enough). Latencies are noisy, so "fastest"
means faster beyond the noise: a candidate beats another only when it wins most of the
interleaved timing rounds by a margin larger than the rounds' own spread. Accuracy is noisy too:
two drops that differ by fewer than MIN_SIGNIFICANT_SAMPLES eval samples are a tie (no paired
test could call such a difference significant). Among the eligible candidates that the fastest
one does not beat on speed, the smallest accuracy drop beyond that noise wins, then the simpler
deployment (fp32 before fp16/bf16 before int8, the float baseline itself), then the lower
latency. The verdict names the rule that decided.
A candidate measured slower than the float baseline is never picked over it. When none is eligible
the original model, exported in the best float configuration, is returned together with the
reason; a budget is never broken silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: accuracy is compared with this slack (points) so float rounding of a percentage never flips a verdict
_EPS = 1e-9
#: a candidate beats a slower-looking one only if it wins at least this share of the interleaved rounds...
WIN_SHARE = 0.8
#: ...and is faster by this fraction, or by the rounds' own spread when that is larger
MIN_MARGIN = 0.05
#: accuracy drops that differ by fewer eval samples than this are a tie: even with every discordant
#: sample on one side, a paired McNemar exact test gives p = 2 * 0.5**k >= 0.0625 for k < 6
MIN_SIGNIFICANT_SAMPLES = 6
#: metrics that count samples (right or wrong each), so a drop difference converts to samples
PER_SAMPLE_METRICS = frozenset({"top1", "top1_agreement"})
#: deployment simplicity: a float file needs no calibration and runs the same everywhere
PRECISION_RANK = {"fp32": 0, "fp16": 1, "bf16": 1, "int8": 2}


@dataclass
class Verdict:
    """The guard's decision: the chosen candidate's name, whether the budgets hold, and why."""

    chosen: str
    budget_met: bool
    reason: str
    #: set when candidates failed: a pick among the few that ran is not the comparison the user asked for
    warning: str = ""
    #: which rule decided: fastest, smaller-drop, simpler-precision or baseline ("" when no latency was known)
    rule: str = ""
    #: the eligible candidates within timing noise of the fastest one (the pick was made among them)
    within_noise: list[str] = field(default_factory=list)


def meets_accuracy(drop: float | None, budget: float) -> bool:
    return drop is not None and drop <= budget + _EPS


def choose(candidates: list[dict], baseline: dict, max_accuracy_drop: float, latency_ms: float | None,
           prefer: Callable[[dict], tuple] | None = None) -> Verdict:
    """Pick from evaluated `candidates` (dicts with name, accuracy_drop, latency_ms, status).

    `baseline` is the fastest float configuration's record (its name is a candidate's name).
    When no eligible candidate has a latency (no latency table for an absent target), `prefer`
    ranks them instead (e.g. the target's preferred runtime and fast precisions first) and the
    reason says so.
    """
    ok = [c for c in candidates if c.get("status") == "ok" and meets_accuracy(c.get("accuracy_drop"), max_accuracy_drop)]
    timed = [c for c in ok if c.get("latency_ms") is not None]
    if ok and not timed and prefer is not None:
        pick = max(ok, key=prefer)
        met = latency_ms is None
        return Verdict(pick["name"], met, "no latency could be measured or predicted for this target; chose by the device "
                       "profile's preferred runtime and fast precisions within the accuracy budget"
                       + ("" if met else f"; the {latency_ms:g} ms latency budget cannot be checked"))
    if not timed:
        tried = [c for c in candidates if c.get("status") == "ok"]
        best = max(tried, key=lambda c: c.get("accuracy") or 0, default=None)
        why = f"no candidate stayed within the {max_accuracy_drop:g}-point accuracy budget"
        if best is not None and best["name"] != baseline["name"]:
            why += f" (closest: {best['name']}, drop {best['accuracy_drop']:.2f})"
        return Verdict(baseline["name"], False, why + "; returning the original model in its fastest float configuration")
    fastest = min(timed, key=lambda c: c["latency_ms"])
    if latency_ms is not None and fastest["latency_ms"] > latency_ms:
        return Verdict(fastest["name"], False, f"latency budget {latency_ms:g} ms not met: the fastest candidate within the "
                       f"accuracy budget takes {fastest['latency_ms']:.3f} ms", rule="fastest")
    base_ms = baseline.get("latency_ms")
    within = [c for c in timed if not clearly_faster(fastest, c) and (latency_ms is None or c["latency_ms"] <= latency_ms)
              and (base_ms is None or c["name"] == baseline["name"] or c["latency_ms"] <= base_ms)] or [fastest]
    most_accurate = min(within, key=lambda c: c["accuracy_drop"])
    pick = min(within, key=lambda c: ((0, 0.0) if drop_within_noise(c, most_accurate) else (1, c["accuracy_drop"]))
               + (PRECISION_RANK.get(c["precision"], 3), c["name"] != baseline["name"], c["latency_ms"]))
    rule, why = _rule(pick, fastest, baseline, within)
    budgets = f"the {max_accuracy_drop:g}-point accuracy budget" + (f" and the {latency_ms:g} ms latency budget"
                                                                     if latency_ms is not None else "")
    head = "fastest candidate within " + budgets if rule == "fastest" else f"within {budgets}, {why}"
    if rule == "fastest" and why:
        head += f" ({why})"
    return Verdict(pick["name"], True, head, rule=rule, within_noise=[c["name"] for c in within])


def clearly_faster(a: dict, b: dict) -> bool:
    """Whether `a`'s latency beats `b`'s beyond the measured noise.

    With interleaved rounds (`latency_rounds_ms`, same count for both) `a` must win at least
    WIN_SHARE of the rounds and be faster by max(MIN_MARGIN, both rounds' relative spread). A
    single number (predicted, or timed alone) has no spread: MIN_MARGIN alone then decides.
    """
    la, lb = a["latency_ms"], b["latency_ms"]
    ra, rb = a.get("latency_rounds_ms"), b.get("latency_rounds_ms")
    if ra and rb and len(ra) == len(rb):
        wins = sum(x < y for x, y in zip(ra, rb))
        margin = max(MIN_MARGIN, relative_spread(ra) + relative_spread(rb))
        return wins >= WIN_SHARE * len(ra) and lb >= la * (1 + margin)
    return lb >= la * (1 + MIN_MARGIN)


def relative_spread(rounds: list[float]) -> float:
    """Median absolute deviation of per-round latencies over their median (0.02 = rounds agree within ~2 %)."""
    x = np.asarray(rounds, float)
    med = float(np.median(x))
    return float(np.median(np.abs(x - med))) / med if med > 0 else 0.0


def drop_within_noise(a: dict, b: dict) -> bool:
    """Whether `a` and `b`'s accuracy drops differ by fewer than MIN_SIGNIFICANT_SAMPLES eval samples.

    Only per-sample metrics (top-1, agreement) with a known sample count convert; for others
    (the cosine of several outputs) any difference counts, as before.
    """
    n = a.get("eval_samples") or b.get("eval_samples")
    diff = abs(a["accuracy_drop"] - b["accuracy_drop"])
    if not n or a.get("metric") not in PER_SAMPLE_METRICS or b.get("metric") not in PER_SAMPLE_METRICS:
        return diff <= _EPS
    return diff * n / 100 < MIN_SIGNIFICANT_SAMPLES - 1e-6


def _rule(pick: dict, fastest: dict, baseline: dict, within: list[dict]) -> tuple[str, str]:
    """Which tie-break made `pick` win over `fastest`, in words."""
    others = [c for c in within if c["name"] != pick["name"]]
    if pick is fastest:
        noisy = [c for c in others if c["accuracy_drop"] < pick["accuracy_drop"] - _EPS]
        why = (f"{', '.join(c['name'] for c in others)} within timing noise; none with a smaller drop beyond noise or a "
               "simpler deployment") if others else ""
        if noisy:
            why += "; " + ", ".join(f"{c['name']}'s smaller drop ({c['accuracy_drop']:.2f} vs {pick['accuracy_drop']:.2f} points) "
                                    f"is {_samples(c, pick)} of {c['eval_samples']} samples, within noise" for c in noisy)
        return "fastest", why
    vs = f"{pick['name']} ({pick['latency_ms']:.3f} ms) is within timing noise of the fastest, {fastest['name']} " \
         f"({fastest['latency_ms']:.3f} ms), and "
    if pick["accuracy_drop"] < fastest["accuracy_drop"] and not drop_within_noise(pick, fastest):
        drops = f"{pick['accuracy_drop']:.2f} vs {fastest['accuracy_drop']:.2f} points"
        return "smaller-drop", vs + f"has the smaller accuracy drop ({drops})"
    if PRECISION_RANK.get(pick["precision"], 3) < PRECISION_RANK.get(fastest["precision"], 3):
        return "simpler-precision", vs + f"is the simpler deployment ({pick['precision']} rather than {fastest['precision']})"
    if pick["name"] == baseline["name"]:
        return "baseline", vs + "is the float baseline itself"
    return "fastest", vs + "ties with it otherwise"


def _samples(a: dict, b: dict) -> int:
    """How many eval samples the drops of `a` and `b` differ by."""
    return round(abs(a["accuracy_drop"] - b["accuracy_drop"]) * a["eval_samples"] / 100)


def meets_budgets(rec: dict, max_accuracy_drop: float, latency_ms: float) -> bool:
    """Whether an evaluated record already satisfies both the accuracy and the latency budget."""
    return (rec.get("status") == "ok" and meets_accuracy(rec.get("accuracy_drop"), max_accuracy_drop)
            and rec.get("latency_ms") is not None and rec["latency_ms"] <= latency_ms)


def search_needed(records: list[dict], max_accuracy_drop: float, latency_ms: float | None) -> str | None:
    """None when the subnet-search fallback should run, else why it is skipped.

    It is skipped once an earlier candidate (precision, int8, pruning) met the latency budget
    within the accuracy budget: search costs far more than the other stages.
    """
    failed = next((r for r in records if r.get("search") and r.get("status") == "failed"), None)
    if failed is not None:  # the same search would fail the same way (failures are not cached)
        return f"not rerun: it already failed for {failed['name']}"
    if latency_ms is None:  # only an edited recipe gets here; it asked for the search explicitly
        return None
    done = next((r for r in records if meets_budgets(r, max_accuracy_drop, latency_ms)), None)
    if done is None:
        return None
    return f"not needed: {done['name']} already meets both budgets ({done['latency_ms']:.3f} ms <= {latency_ms:g} ms)"


def search_outcome(records: list[dict], max_accuracy_drop: float, latency_ms: float) -> str:
    """What the subnet-search fallback achieved, for a verdict whose budgets were not met."""
    ran = [r for r in records if r.get("search") and r.get("status") != "skipped"]
    if not ran:
        return ""
    failed = next((r for r in ran if r["status"] != "ok"), None)
    if failed is not None and all(r["status"] != "ok" for r in ran):
        return f"; subnet search could not reach it either ({failed['reason']})"
    best = min((r for r in ran if r["status"] == "ok"), key=lambda r: r.get("latency_ms") or float("inf"))
    lat = "unknown latency" if best.get("latency_ms") is None else f"{best['latency_ms']:.3f} ms"
    return f"; subnet search could not meet both either (best: {best['name']}, {lat}, drop {best['accuracy_drop']:.2f})"


def failure_warning(records: list[dict]) -> str:
    """A loud one-line note when candidates failed ("" when none did).

    "fastest candidate within the budget" reads as if every configuration was compared; when
    most exports failed (say every LiteRT and int8 one) the result is only the best of the
    survivors, and the reader must be told which ones are missing and why.
    """
    failed = [r for r in records if r.get("status") == "failed"]
    if not failed:
        return ""
    judged = sum(r.get("status") == "ok" for r in records)
    tried = sum(r.get("status") in ("ok", "failed") for r in records)
    names = ", ".join(r["name"] for r in failed)
    first = " ".join(str(failed[0].get("reason", "")).split())[:200]
    return (f"WARNING: {len(failed)} of {tried} candidates tried failed, only {judged} could be judged "
            f"(failed: {names}; first error: {first})")
