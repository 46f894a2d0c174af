"""`compress --latency-ms` falls back to subnet search when nothing else meets the budget."""

from __future__ import annotations

import pytest

from hwopt.devices import load_device
from hwopt.graph.load import load_model
from hwopt.latency.predict import predict_latency
from hwopt.pipeline import compress
from hwopt.pipeline.guard import search_needed
from hwopt.pipeline.recipe import Candidate, Recipe, is_search, plan_recipe
from hwopt.pipeline.stages import Step


def test_plan_adds_search_last_only_with_a_latency_budget():
    dev = load_device("rpi4")
    assert not any(is_search(c) for c in plan_recipe(dev, has_calib=True).candidates)
    plan = plan_recipe(dev, latency_ms=2.0, has_calib=True)
    kinds = [is_search(c) for c in plan.candidates]
    assert any(kinds) and kinds == sorted(kinds)  # every search candidate comes after all others
    search = [c for c in plan.candidates if is_search(c)]
    assert {c.precision for c in search} == {"fp32", "int8"}
    assert all(c.steps[0].options == {"runtime": dev.preferred_runtime, "latency_ms": 2.0} for c in search)


def test_search_runs_only_when_no_candidate_meets_both_budgets():
    fast_bad = {"name": "a", "status": "ok", "accuracy_drop": 5.0, "latency_ms": 1.0}
    slow_ok = {"name": "b", "status": "ok", "accuracy_drop": 0.1, "latency_ms": 3.0}
    assert search_needed([fast_bad, slow_ok], 1.0, 2.0) is None
    fit = {"name": "c", "status": "ok", "accuracy_drop": 0.5, "latency_ms": 1.9}
    assert "c already meets both budgets" in search_needed([fast_bad, fit], 1.0, 2.0)
    failed = {"name": "s", "status": "failed", "search": True, "reason": "below range"}
    assert "already failed for s" in search_needed([slow_ok, failed], 1.0, 2.0)


def _plan(latency_ms: float) -> Recipe:
    found = Step("search", {"runtime": "onnxruntime", "latency_ms": latency_ms})
    return Recipe("rpi4", 1.0, latency_ms, False, [{"runtime": "onnxruntime", "precision": "fp32"}],
                  [Candidate("onnxruntime-fp32", "onnxruntime-fp32", "onnxruntime", "fp32"),
                   Candidate("search-fp32", "search-fp32", "onnxruntime", "fp32", [found])])


@pytest.fixture
def full_ms(small_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HWOPT_CACHE_DIR", str(tmp_path / "nas-cache"))
    return predict_latency(load_model(small_model[0]), load_device("rpi4"), "onnxruntime", {"input": (1, 3, 32, 32)}).latency_ms


def test_search_candidate_is_exported_evaluated_and_chosen_by_the_guard(small_model, tmp_path, full_ms):
    model, calib, ev = small_model
    budget = 0.9 * full_ms  # the float model misses it; the search space's smaller subnets reach it
    r = compress(model, target="rpi4", calib=calib, eval=ev, out_dir=tmp_path / "o", recipe=_plan(budget))
    recs = {c["name"]: c for c in r.report["candidates"]}
    assert recs["onnxruntime-fp32"]["latency_ms"] > budget
    s = recs["search-fp32"]
    assert s["status"] == "ok" and s["search"] and s["latency_ms"] < recs["onnxruntime-fp32"]["latency_ms"]
    assert s["verification"]["passed"] and s["accuracy_drop"] is not None
    # the guard judges it like any candidate: chosen exactly when it meets both budgets
    fits = s["accuracy_drop"] <= 1.0 and s["latency_ms"] <= budget
    assert r.budget_met == fits and s["chosen"] == fits
    stages = {st["stage"]: st for st in r.report["stages"]}
    assert stages["search"]["runs"] == 1 and stages["guard"]["budget_met"] == fits
    again = compress(model, target="rpi4", calib=calib, eval=ev, out_dir=tmp_path / "o", recipe=_plan(budget))
    assert {st["stage"]: st for st in again.report["stages"]}["search"]["cached"] == 1


def test_unreachable_budget_is_said_for_search_too(small_model, tmp_path, full_ms):
    model, calib, ev = small_model
    r = compress(model, target="rpi4", calib=calib, eval=ev, out_dir=tmp_path / "o", recipe=_plan(0.01 * full_ms))
    s = next(c for c in r.report["candidates"] if c["name"] == "search-fp32")
    assert s["status"] == "failed" and "achievable range" in s["reason"]
    assert not r.budget_met and "subnet search could not reach it either" in r.reason
