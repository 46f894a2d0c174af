"""Benchmark hwopt's Once-for-All search on the ofa-mbv3-digits supernet (x86-avx512 = this machine).

Measures: (1) search time of 500 generations x 100 population (OFA's reference implementation
reports about 22 s on a CPU; goal < 10 s); (2) the searched subnet's measured latency here vs the
budget (goal within 10%); (3) accuracy of searched subnets vs uniform baselines at the same
latency -- uniform OFA subnets of the same supernet (one kernel/expand/depth everywhere), the fair
baseline; (4) the accuracy predictor's held-out rank
correlation (goal >= 0.9). Writes benchmarks/results/search_ofa.json.

    python benchmarks/search_ofa.py [--quick]
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

from hwopt.data import Dataset, run_outputs
from hwopt.devices import load_device
from hwopt.graph.load import atomic_write_text
from hwopt.graph.shapes import random_inputs, resolve_input_shapes
from hwopt.nas.api import sample_subnets
from hwopt.nas.evolution import EvolutionSettings, evolve, latency_range
from hwopt.nas.ofa_space import export_subnet
from hwopt.nas.predictor import MeasurementCache, fit_predictor, measure_subnets
from hwopt.nas.genes import sizes
from hwopt.nas.latency_cache import cache_dir, cached_latency_model
from hwopt.nas.subnets import SupernetProblem
from hwopt.runtimes import get_runtime, time_session

OUT = Path(__file__).resolve().parent / "results" / "search_ofa.json"


def measured_ms(model, runs: int) -> float:
    """Median ms of `runs` 1-thread onnxruntime calls (the table's runtime and settings)."""
    session = get_runtime("onnxruntime").session(model, threads=1)
    feeds = random_inputs(model, resolve_input_shapes(model))
    return float(np.median(time_session(session, feeds, warmup=30, runs=runs)))


def onnx_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    session = get_runtime("onnxruntime").session(model, threads=1)
    out = run_outputs(session, Dataset({session.input_names[0]: x}), batch_size=1)[0]
    return float((out.argmax(1) == y).mean() * 100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer measured subnets and timing runs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n_subnets, runs = (60, 200) if args.quick else (200, 500)
    dev = load_device("x86-avx512")
    problem = SupernetProblem("ofa-mbv3-digits")
    space, genes = problem.space, problem.space.genes
    tmp = Path(tempfile.mkdtemp())
    cache = MeasurementCache(cache_dir() / f"measurements-{problem.cache_tag}.json", problem.cache_tag)

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

    def predict(pop):
        return pred.predict(space.features(pop))

    # baselines: uniform subnets and uniformly pruned largest subnet
    uniform = []
    for k, e, d, r in itertools.product(space.kernels, space.expands, space.depths, space.res):
        cfg = {"resolution": r, "stages": [{"kernel": [k] * d, "expand": [e] * d} for _ in space.spec.widths]}
        uniform.append((cfg, float(lat(space.encode(cfg)[None])[0])))
    largest = space.decode(n - 1)
    big_model = export_subnet(problem.loaded.subnet(largest), largest["resolution"], tmp / "largest.onnx")
    largest_row = {"latency_ms": measured_ms(big_model, runs), "accuracy": problem.accuracy(largest)}
    # An earlier baseline L1-pruned every channel group of the largest subnet by one ratio without
    # fine-tuning: that cuts the 12..60-channel residual trunks and SE squeezes too and lands at chance
    # accuracy (no pruning bug: each group alone still works, see docs/search.md), so it is not used.

    # searched subnets at budgets spread over the range
    budgets = [round(lo + f * (hi - lo), 4) for f in (0.15, 0.35, 0.6, 0.85)]
    rows = []
    for b in budgets:
        res = evolve(genes, predict, lat, b, EvolutionSettings(seed=0), space.canonical)
        cfg = space.decode(res.best)
        onnx_model = export_subnet(problem.loaded.subnet(cfg), cfg["resolution"], tmp / "s.onnx")
        m_ms = measured_ms(onnx_model, runs)
        s_acc = problem.accuracy(cfg)
        fits = [(c, ms) for c, ms in uniform if ms <= b]
        u_cfg, u_ms = max(fits, key=lambda cm: cm[1]) if fits else min(uniform, key=lambda cm: cm[1])
        u_model = export_subnet(problem.loaded.subnet(u_cfg), u_cfg["resolution"], tmp / "u.onnx")
        u_meas, u_acc = measured_ms(u_model, runs), problem.accuracy(u_cfg)
        rows.append({
            "budget_ms": b, "search_seconds": res.seconds, "predicted_latency_ms": res.latency_ms,
            "measured_latency_ms": m_ms, "measured_over_budget": m_ms / b, "searched_accuracy": s_acc,
            "predicted_accuracy": res.accuracy, "uniform_subnet_accuracy": u_acc, "uniform_subnet_measured_ms": u_meas,
            "uniform_subnet_config": u_cfg,
            "config": cfg,
        })
        print(f"budget {b:.3f} ms: search {res.seconds:.2f} s, measured {m_ms:.3f} ms ({m_ms / b:.2f}x budget), "
              f"searched {s_acc:.2f}% vs uniform subnet {u_acc:.2f}% ({u_meas:.3f} ms)")

    print()
    print(f"{'budget ms':>10} {'measured ms':>12} {'meas/budget':>12} {'search s':>9} {'searched %':>11} {'uniform OFA %':>14} {'uniform ms':>11}")
    for r in rows:
        print(f"{r['budget_ms']:>10.3f} {r['measured_latency_ms']:>12.3f} {r['measured_over_budget']:>12.2f} "
              f"{r['search_seconds']:>9.2f} {r['searched_accuracy']:>11.2f} {r['uniform_subnet_accuracy']:>14.2f} "
              f"{r['uniform_subnet_measured_ms']:>11.3f}")
    print(f"largest subnet: {largest_row['latency_ms']:.3f} ms, {largest_row['accuracy']:.2f}%")
    print(f"search time 500 gen x 100 pop: hwopt {np.mean([r['search_seconds'] for r in rows]):.2f} s "
          f"vs OFA reference ~22 s (published, not measured here)")
    doc = {
        "quick": args.quick, "device": dev.name, "runtime": "onnxruntime", "threads": 1, "latency_table_seconds": table_s,
        "latency_range_ms": [lo, hi], "n_measured_subnets": int(len(sample)), "measure_seconds": measure_s,
        "predictor": quality, "predictor_used": best_kind, "largest_subnet": largest_row, "budgets": rows,
        "searched_wins_vs_uniform_subnet": all(r["searched_accuracy"] >= r["uniform_subnet_accuracy"] for r in rows),
        "within_10pct": all(r["measured_over_budget"] <= 1.10 for r in rows),
        "peer": {"tool": "once-for-all reference implementation", "search_seconds_reported": 22.0, "source": "OFA paper/repo (CPU)"},
    }
    atomic_write_text(json.dumps(doc, indent=2) + "\n", OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
