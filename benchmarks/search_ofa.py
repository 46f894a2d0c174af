"""Benchmark hwopt's Once-for-All search on the ofa-mbv3-digits supernet (x86-avx512 = this machine).

Measures: (1) search time of 500 generations x 100 population (OFA's reference implementation
reports about 22 s on a CPU; goal < 10 s); (2) the searched subnet's measured latency here vs the
budget (goal within 10%); (3) accuracy of searched subnets vs uniform baselines at the same
latency -- uniform OFA subnets of the same supernet (one kernel/expand/depth everywhere), the fair
baseline; (4) the accuracy predictor's held-out rank correlation (goal >= 0.9). The search is the
one `hwopt search` runs: evolution, then measured refinement of the top 5 candidates
(hwopt.nas.refine); each seed changes the evolution's seed. Writes benchmarks/results/search_ofa.json.

    python benchmarks/search_ofa.py [--quick] [--subnets N] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hwopt.devices import load_device
from hwopt.graph.load import atomic_write_text
from hwopt.nas.api import sample_subnets
from hwopt.nas.evolution import EvolutionSettings, evolve, latency_range
from hwopt.nas.ofa_space import export_subnet
from hwopt.nas.genes import sizes
from hwopt.nas.latency_cache import cached_latency_model
from hwopt.nas.predictor import fit_predictor, measure_subnets, measurement_cache
from hwopt.nas.refine import PredictorRefit, onnx_timer, refine
from hwopt.nas.subnets import SupernetProblem
from hwopt.nas.timers import MeasuredTimer, make_timer

OUT = Path(__file__).resolve().parent / "results" / "search_ofa.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer measured subnets and timing runs")
    ap.add_argument("--subnets", type=int, help="subnets measured for the predictor (default 60 quick, 200 full)")
    ap.add_argument("--seeds", default="0", help="evolution seeds, comma-separated")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n_subnets, runs = (60, 200) if args.quick else (200, 500)
    n_subnets = args.subnets or n_subnets
    seeds = [int(v) for v in args.seeds.split(",")]
    dev = load_device("x86-avx512")
    problem = SupernetProblem("ofa-mbv3-digits")
    space, genes = problem.space, problem.space.genes
    tmp = Path(tempfile.mkdtemp())
    # the final check times whole subnets like the search's refinement (fastest of 5 burst medians), with more calls
    final_timer = MeasuredTimer(dev, "onnxruntime", runs=runs)
    cache = measurement_cache(problem.cache_tag)

    t0 = time.perf_counter()
    lat = cached_latency_model(problem, dev, "onnxruntime", "measured")
    table_s = time.perf_counter() - t0
    lo, hi = latency_range(genes, lat)
    print(f"latency table (measured, onnxruntime 1 thread): {table_s:.1f} s; range {lo:.3f} .. {hi:.3f} ms")

    # accuracy predictor: held-out quality of both regressors
    n = sizes(genes)
    sample = sample_subnets(space, n_subnets, seed=0)
    t0 = time.perf_counter()
    acc = measure_subnets([space.decode(r) for r in sample], problem.accuracy, cache)
    measure_s = time.perf_counter() - t0
    feats = space.features(sample)
    quality = {}
    for kind in ("mlp", "gbt"):
        _, q = fit_predictor(feats, acc, kind=kind, seed=0)
        quality[kind] = q.to_dict()
        print(f"predictor {kind}: held-out Spearman {q.spearman:.3f}, RMSE {q.rmse:.3f} ({q.n_train} train / {q.n_test} test)")
    best_kind = max(quality, key=lambda k: quality[k]["spearman"])
    pred, _ = fit_predictor(feats, acc, kind=best_kind, seed=0)

    # baselines: uniform subnets and uniformly pruned largest subnet
    uniform = []
    for k, e, d, r in itertools.product(space.kernels, space.expands, space.depths, space.res):
        cfg = {"resolution": r, "stages": [{"kernel": [k] * d, "expand": [e] * d} for _ in space.spec.widths]}
        uniform.append((cfg, float(lat(space.encode(cfg)[None])[0])))
    largest = space.decode(n - 1)
    big_model = export_subnet(problem.loaded.subnet(largest), largest["resolution"], tmp / "largest.onnx")
    largest_row = {"latency_ms": final_timer.model_ms(big_model), "accuracy": problem.accuracy(largest)}
    # An earlier baseline L1-pruned every channel group of the largest subnet by one ratio without
    # fine-tuning: that cuts the 12..60-channel residual trunks and SE squeezes too and lands at chance
    # accuracy (no pruning bug: each group alone still works, see docs/search.md), so it is not used.

    # searched subnets at budgets spread over the range
    def accuracy_of(cfg: dict) -> float:
        return cache.get_or_measure(cfg, problem.accuracy)

    timer = make_timer(dev, "onnxruntime", "measured")
    measure = onnx_timer(problem.export, timer)
    budgets = [round(lo + f * (hi - lo), 4) for f in (0.15, 0.35, 0.6, 0.85)]
    rows = []
    for b in budgets:
        fits = [(c, ms) for c, ms in uniform if ms <= b]
        u_cfg, u_ms = max(fits, key=lambda cm: cm[1]) if fits else min(uniform, key=lambda cm: cm[1])
        u_model = export_subnet(problem.loaded.subnet(u_cfg), u_cfg["resolution"], tmp / "u.onnx")
        u_meas, u_acc = final_timer.model_ms(u_model), problem.accuracy(u_cfg)
        for seed in seeds:
            learner = PredictorRefit(space, pred, sample, acc, kind=best_kind, seed=0)  # fresh per search

            def run(budget: float, seed=seed, learner=learner):
                return evolve(genes, learner.predict, lat, budget, EvolutionSettings(seed=seed), space.canonical)

            res = run(b)
            t0 = time.perf_counter()
            ref = refine(res, decode=space.decode, latency=lat, budget_ms=b, accuracy=accuracy_of, measure_ms=measure,
                         rerun=run, learn=learner.learn, floor_ms=lo)
            refine_s = time.perf_counter() - t0
            cfg = ref.chosen.config
            onnx_model = export_subnet(problem.loaded.subnet(cfg), cfg["resolution"], tmp / "s.onnx")
            m_ms = final_timer.model_ms(onnx_model)
            s_acc = ref.chosen.accuracy
            favourite = space.decode(res.best)  # the first search's pick, before any refinement
            rows.append({
                "budget_ms": b, "seed": seed, "search_seconds": res.seconds, "refine_seconds": refine_s,
                "search_rounds": ref.rounds, "predicted_latency_ms": ref.chosen.predicted_ms,
                "measured_latency_ms": m_ms, "measured_over_budget": m_ms / b, "searched_accuracy": s_acc,
                "predicted_accuracy": ref.chosen.predicted_accuracy,
                "unrefined_accuracy": accuracy_of(favourite), "unrefined_predicted_ms": res.latency_ms,
                "uniform_subnet_accuracy": u_acc, "uniform_subnet_measured_ms": u_meas, "uniform_subnet_config": u_cfg,
                "config": cfg, "candidates": [c.to_dict() for c in ref.candidates],
            })
            print(f"budget {b:.3f} ms seed {seed}: search {res.seconds:.2f} s + refine {refine_s:.1f} s ({ref.rounds} round(s)), "
                  f"measured {m_ms:.3f} ms ({m_ms / b:.2f}x budget), searched {s_acc:.2f}% "
                  f"(unrefined {rows[-1]['unrefined_accuracy']:.2f}%) vs uniform subnet {u_acc:.2f}% ({u_meas:.3f} ms)")
    cache.save()

    print()
    print(f"{'budget ms':>10} {'seed':>5} {'measured ms':>12} {'meas/budget':>12} {'search s':>9} {'searched %':>11} {'uniform OFA %':>14} {'uniform ms':>11}")
    for r in rows:
        print(f"{r['budget_ms']:>10.3f} {r['seed']:>5} {r['measured_latency_ms']:>12.3f} {r['measured_over_budget']:>12.2f} "
              f"{r['search_seconds']:>9.2f} {r['searched_accuracy']:>11.2f} {r['uniform_subnet_accuracy']:>14.2f} "
              f"{r['uniform_subnet_measured_ms']:>11.3f}")
    print(f"largest subnet: {largest_row['latency_ms']:.3f} ms, {largest_row['accuracy']:.2f}%")
    print(f"search time 500 gen x 100 pop: hwopt {np.mean([r['search_seconds'] for r in rows]):.2f} s "
          f"vs OFA reference ~22 s (published, not measured here)")
    doc = {
        "quick": args.quick, "device": dev.name, "runtime": "onnxruntime", "threads": 1, "latency_table_seconds": table_s,
        "latency_range_ms": [lo, hi], "seeds": seeds, "n_measured_subnets": int(len(sample)), "measure_seconds": measure_s,
        "predictor": quality, "predictor_used": best_kind, "largest_subnet": largest_row, "budgets": rows,
        "searched_wins_vs_uniform_subnet": all(r["searched_accuracy"] >= r["uniform_subnet_accuracy"] for r in rows),
        "within_10pct": all(r["measured_over_budget"] <= 1.10 for r in rows),
        "peer": {"tool": "once-for-all reference implementation", "search_seconds_reported": 22.0, "source": "OFA paper/repo (CPU)"},
    }
    atomic_write_text(json.dumps(doc, indent=2) + "\n", OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
