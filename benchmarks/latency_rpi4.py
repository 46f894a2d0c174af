"""Raspberry Pi 4 analytical latency model vs the FLOPs-proportional floor, on public measurements.

Runs the same calibration as `python -m hwopt.latency.calibrate` for the Pi 4 and prints, side by
side, the calibrated roofline and a FLOPs-proportional predictor (one fitted ms/FLOP):
- NAS-Bench-201 and FBNet (HW-NAS-Bench, TFLite), 5-fold cross-validation (both fitted on the
  training folds only);
- published per-model rows (ncnn, XNNPACK), each network left out in turn and predicted at the
  runtime, thread count and clock it was measured with (the floor gets one ms/FLOP per
  runtime/threads/clock group), by group, and the speedup over each network's 1-thread row.
Writes `benchmarks/results/latency_rpi4.json`. Needs `../shared/data/latency` (not shipped).

    python benchmarks/latency_rpi4.py [--limit 1000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hwopt.devices import load_device
from hwopt.graph.load import atomic_write_text
from hwopt.latency.calibrate import calibrate_device, load_published

REPO = Path(__file__).resolve().parents[1]


def _row(name: str, model: dict, floor: dict) -> str:
    return (f"{name:<44} {model.get('spearman', float('nan')):>8.4f} {model['mean_abs_rel_error']:>8.1%}   "
            f"{floor.get('spearman', float('nan')):>8.4f} {floor['mean_abs_rel_error']:>8.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "latency")
    ap.add_argument("--limit", type=int, default=1000, help="NB201 archs (FBNet: a third)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "latency_rpi4.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    roof, rep = calibrate_device(args.data, "raspi4", load_device("rpi4"), limit=args.limit,
                                 published=load_published(args.data))
    pub = rep["published"]
    print(f"{'set':<44} {'Spearman':>8} {'|err|':>8}   {'FLOPs Sp.':>8} {'|err|':>8}")
    for space in ("nb201", "fbnet"):
        cv = rep[space]["cv"]
        print(_row(f"{space} 5-fold CV ({cv['models']} archs)", cv, cv["flops_proportional"]))
    goal = pub["goal_rows"]
    print(f"{'published, leave one network out (' + str(goal['rows']) + ' rows)':<44} {'':>8} "
          f"{goal['mean_abs_rel_error']:>8.1%}   {'':>8} {goal['flops_floor_mean_abs_rel_error']:>8.1%}")
    print(f"{'  same rows in sample (fit saw them; not the result)':<44} {'':>8} "
          f"{pub['in_sample']['mean_abs_rel_error']:>8.1%}")
    for group, g in pub["by_group"].items():
        ours, floor = g["mean_abs_rel_error"], g["flops_floor_mean_abs_rel_error"]
        print(f"  {group + ' (' + str(g['rows']) + ')':<42} {'':>8} "
              f"{'scaling only' if ours is None else f'{ours:.1%}':>8}   {'':>8} "
              f"{'-' if floor is None else f'{floor:.1%}':>8}")
    print(f"thread speedup vs 1-thread rows: mean |error| {pub['thread_scaling']['mean_abs_rel_error']:.1%} "
          f"({len(pub['thread_scaling']['pairs'])} pairs)")
    print(f"speed factors vs XNNPACK: {rep['source_speed_factors']}")
    result = {"limit": args.limit, "seconds": round(time.perf_counter() - t0, 1), **rep,
              "roofline": roof.to_dict()}
    atomic_write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", args.out)
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
