"""The accuracy guard: which candidate to keep, and why.

A candidate is eligible when its accuracy drop against the baseline stays within the budget
(and, with a latency budget, when it is also fast enough). The fastest eligible one wins. When
none is eligible the original model, exported in the best float configuration, is returned
together with the reason; a budget is never broken silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: accuracy is compared with this slack (points) so float rounding of a percentage never flips a verdict
_EPS = 1e-9


@dataclass
class Verdict:
    """The guard's decision: the chosen candidate's name, whether the budgets hold, and why."""

    chosen: str
    budget_met: bool
    reason: str
    #: set when candidates failed: a pick among the few that ran is not the comparison the user asked for
    warning: str = ""


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
                       f"accuracy budget takes {fastest['latency_ms']:.3f} ms")
    return Verdict(fastest["name"], True, f"fastest candidate within the {max_accuracy_drop:g}-point accuracy budget"
                   + (f" and the {latency_ms:g} ms latency budget" if latency_ms is not None else ""))


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
