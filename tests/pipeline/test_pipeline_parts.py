"""Recipe planning, the accuracy guard, the stage cache and the Pareto plot, each on its own."""

from __future__ import annotations

import pytest

from hwopt.devices import load_device
from hwopt.errors import HwoptError
from hwopt.pipeline import StageCache, choose, compress, load_recipe, plan_recipe
from hwopt.pipeline.cache import cache_key
from hwopt.pipeline.report import pareto_svg


def test_plan_follows_what_the_target_accelerates():
    x86 = plan_recipe(load_device("x86-avx512"))
    pairs = {(c.runtime, c.precision) for c in x86.candidates}
    assert {("openvino", "bf16"), ("openvino", "int8"), ("onnxruntime", "int8"), ("onnxruntime", "fp32")} <= pairs
    assert not any(s.stage == "prune" for c in x86.candidates for s in c.steps)  # no latency budget, no pruning
    assert any("no sparsity" in n for n in x86.notes)
    levels = [c.name for c in x86.candidates if c.group == "openvino-int8"]
    assert levels == ["openvino-int8-minmax", "openvino-int8-percentile", "openvino-int8-adaround", "openvino-int8-mixed"]
    rpi = plan_recipe(load_device("rpi4"))
    assert rpi.candidates[0].runtime == "litert" and not rpi.measure
    assert ("litert", "int8") in {(c.runtime, c.precision) for c in rpi.candidates}
    assert ("litert", "fp16") not in {(c.runtime, c.precision) for c in rpi.candidates}  # A72 has no fast fp16
    pruned = plan_recipe(load_device("x86-avx512"), latency_ms=1.0)
    assert any(s.stage == "prune" for c in pruned.candidates for s in c.steps)
    no_data = plan_recipe(load_device("x86-avx512"), has_calib=False)
    assert all(c.precision != "int8" for c in no_data.candidates) and any("--calib" in n for n in no_data.notes)


def test_recipe_round_trip_and_validation(tmp_path):
    plan = plan_recipe(load_device("x86-avx512"), max_accuracy_drop=0.5)
    path = plan.save(tmp_path / "r.yaml")
    back = load_recipe(path)
    assert back.to_dict() == plan.to_dict()
    bad = tmp_path / "bad.yaml"
    for text, msg in [
        ("target: x86-avx512\ncandidates:\n- {name: a, runtime: openvino, precision: fp32, steps: [{stage: sharpen}]}\n",
         "unknown stage"),
        ("target: x86-avx512\ncandidates:\n- {name: a, runtime: litert, precision: fp32}\n", "not an exportable runtime"),
        ("target: x86-avx512\ncandidates:\n- {name: a, runtime: onnxruntime, precision: bf16}\n", "cannot run bf16"),
        ("target: x86-avx512\ncandidates:\n- {name: a, runtime: openvino, steps: [{stage: quantize, color: red}]}\n",
         "bad options"),
        ("target: nowhere\ncandidates: []\n", "unknown target"),
        ("target: [unclosed\n", "not valid YAML"),
    ]:
        bad.write_text(text)
        with pytest.raises(HwoptError, match=msg):
            load_recipe(bad)


def _rec(name, acc_drop, ms, precision="int8", status="ok"):
    return {"name": name, "accuracy": 90 - acc_drop, "accuracy_drop": acc_drop, "latency_ms": ms, "status": status,
            "runtime": "openvino", "precision": precision}


def test_guard_keeps_fastest_within_budget_and_never_breaks_it():
    base = _rec("ov-fp32", 0.0, 10.0, "fp32")
    cands = [base, _rec("int8-a", 3.0, 2.0), _rec("int8-b", 0.8, 5.0), _rec("bf16", 0.1, 6.0, "bf16")]
    v = choose(cands, base, 1.0, None)
    assert v.chosen == "int8-b" and v.budget_met
    v = choose(cands, base, 0.05, None)  # only the baseline itself has drop 0
    assert v.chosen == "ov-fp32" and v.budget_met
    v = choose([_rec("int8-a", 3.0, 2.0)], base, 1.0, None)
    assert v.chosen == "ov-fp32" and not v.budget_met and "original model" in v.reason and "int8-a" in v.reason
    v = choose(cands, base, 1.0, 1.0)
    assert v.chosen == "int8-b" and not v.budget_met and "latency budget" in v.reason


def test_cache_reuses_complete_entries_only(tmp_path):
    cache = StageCache(tmp_path)
    calls = []

    def run(work):
        calls.append(work)
        (work / "f.txt").write_text("x")
        return {"file": "f.txt"}

    key = cache_key("s", ["abc"], {"a": 1})
    assert key != cache_key("s", ["abc"], {"a": 2}) and key != cache_key("s", ["abd"], {"a": 1})
    r1, e1 = cache.get_or_run("s", key, run)
    r2, e2 = cache.get_or_run("s", key, run)
    assert r1 == r2 and e1 == e2 and len(calls) == 1 and (e1 / "f.txt").read_text() == "x"

    def crash(work):
        (work / "half").write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.get_or_run("s", "other", crash)
    assert not cache.entry("s", "other").exists()


def test_pareto_marks_the_chosen_candidate():
    cands = [_rec("a", 0.0, 4.0) | {"chosen": False}, _rec("b", 0.5, 2.0) | {"chosen": True},
             _rec("c", 5.0, 1.0, status="ok") | {"chosen": False}, _rec("d", 0, None, status="failed")]
    svg = pareto_svg(cands)
    assert svg.startswith("<svg") and svg.count("(chosen)") == 1 and ">b<" in svg and ">d<" not in svg


def test_dry_run_writes_only_the_recipe(small_model, tmp_path):
    model, calib, _ = small_model
    r = compress(model, target="x86-avx512", calib=calib, out_dir=tmp_path / "o", dry_run=True)
    assert r.dry_run and (tmp_path / "o" / "recipe.yaml").is_file() and not (tmp_path / "o" / "report.json").exists()
    ort_fp32 = next(c for c in load_recipe(r.recipe_path).candidates if c.name == "onnxruntime-fp32")
    if ort_fp32.predicted_ms is not None:  # a latency table for x86 onnxruntime is bundled
        assert ort_fp32.predicted_ms > 0


def test_first_int8_level_uses_empirical_bias_correction_on_light_models():
    from hwopt.pipeline.recipe import HEAVY_MACS

    def modes(r):
        return {c.name: next(s.options.get("bias_correction", False) for s in c.steps if s.stage == "quantize")
                for c in r.candidates if c.precision == "int8" and c.runtime == "openvino"}

    dev = load_device("x86-avx512")
    assert modes(plan_recipe(dev, model_macs=HEAVY_MACS // 10)) == {
        "openvino-int8-minmax": "empirical", "openvino-int8-percentile": True,
        "openvino-int8-adaround": False, "openvino-int8-mixed": True}
    assert modes(plan_recipe(dev)) == modes(plan_recipe(dev, model_macs=HEAVY_MACS // 10))  # MACs unknown: light
    assert modes(plan_recipe(dev, model_macs=HEAVY_MACS * 2)) == {"openvino-int8-minmax": False, "openvino-int8-percentile": True}
    pruned = plan_recipe(dev, latency_ms=1.0, model_macs=HEAVY_MACS // 10)
    assert [s.options["bias_correction"] for c in pruned.candidates if c.group.startswith("prune")
            for s in c.steps if s.stage == "quantize"] == ["empirical", "empirical"]
