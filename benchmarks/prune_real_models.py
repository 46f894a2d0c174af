"""Structured pruning on the real-model corpus: groups, barriers, MACs, validity, dynamic dims.

    python benchmarks/prune_real_models.py                    # all models of benchmarks/real_models.py
    python benchmarks/prune_real_models.py --models ppocr_cls,ppocr_det --barriers

Per model: channel groups found and prunable, the op that made each fixed group a barrier
(`--barriers` lists them), then `prune_model` at ratio 0.3 with L1, data-free OBSPA and OBSPA on
16 random calibration samples: groups pruned, MACs before/after, and checks on the pruned model:
every output keeps its shape at the benchmark shape and at a larger one where dims are dynamic
(the original's dynamic input dims still work), and ratio 0 gives bit-identical outputs. Writes
benchmarks/results/prune_real_models.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_models import RealModel, corpus, sample_data  # noqa: E402

from hwopt.errors import HwoptError  # noqa: E402
from hwopt.graph.census import census  # noqa: E402
from hwopt.graph.load import atomic_write_text, load_model  # noqa: E402
from hwopt.graph.shapes import input_specs, random_inputs  # noqa: E402
from hwopt.pruning import build_groups, prepare_model, prune_model  # noqa: E402
from hwopt.runtimes import get_runtime  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "prune_real_models.json"


def barrier_ops(groups) -> Counter:
    """Fixed-group count per barrier reason, node names masked so equal causes add up."""
    return Counter(re.sub(r"(?<=\s)\S*[@._/]\S*(?=[\s:]|$)", "*", r) for g in groups for r in g.reasons)


def second_shape(m: RealModel, model: onnx.ModelProto) -> dict[str, tuple[int, ...]] | None:
    """A larger concrete shape for inputs with dynamic spatial dims (None when all are static);
    recognizers grow only in width (their height is fixed by the architecture)."""
    spec = next(s for s in input_specs(model) if s.name == m.input_name)
    dims = list(m.dims)
    first = len(dims) - 1 if m.kind == "recognizer" else 2
    grown = [i for i, d in enumerate(spec.dims) if i >= first and not isinstance(d, int)]
    if not grown:
        return None
    for i in grown:
        dims[i] *= 2
    return {m.input_name: tuple(dims)}


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return get_runtime("onnxruntime").session(model).run(feeds)


def check_pruned(m: RealModel, original: onnx.ModelProto, pruned: onnx.ModelProto) -> dict:
    """Output shapes at the benchmark shape and at a larger one where dims are dynamic."""
    out = {}
    for label, shapes in (("shape", {m.input_name: m.dims}), ("dynamic", second_shape(m, original))):
        if shapes is None:
            out[label] = "static input"
            continue
        feeds = random_inputs(original, shapes)
        same = [a.shape == b.shape for a, b in zip(run(original, feeds), run(pruned, feeds))]
        out[label] = f"{'x'.join(map(str, shapes[m.input_name]))} {'ok' if all(same) else 'OUTPUT SHAPE CHANGED'}"
    return out


def ratio_zero_identical(m: RealModel, original: onnx.ModelProto) -> bool:
    shapes = {m.input_name: m.dims}
    res = prune_model(original, 0.0, shapes=shapes)
    feeds = random_inputs(original, shapes)
    return all(np.array_equal(a, b) for a, b in zip(run(original, feeds), run(res.model, feeds)))


def one_model(m: RealModel, show_barriers: bool) -> dict:
    original = load_model(m.path)
    shapes = {m.input_name: m.dims}
    row: dict = {}
    t0 = time.perf_counter()
    try:
        groups = build_groups(original, shapes)
    except HwoptError as exc:
        return {"groups": f"refused: {exc}"}
    prunable = [g for g in groups if g.prunable]
    row.update(groups=len(groups), groups_prunable=len(prunable), channels=sum(g.channels for g in groups),
               channels_free=int(sum(len(g.free) for g in groups)), groups_seconds=round(time.perf_counter() - t0, 1))
    row["barriers"] = dict(barrier_ops(groups).most_common())
    print(f"{m.name:18s} groups {len(groups):3d}  prunable {len(prunable):3d}  free channels "
          f"{row['channels_free']}/{row['channels']}", flush=True)
    if show_barriers:
        for reason, n in barrier_ops(groups).most_common():
            print(f"{'':20s}{n:4d}  {reason[:120]}")
    macs = census(prepare_model(original), shapes).macs
    runs = (("l1", {}), ("obs_free", {"criterion": "obs"}), ("obs", {"criterion": "obs", "calib": sample_data(m, 16)}))
    for label, kw in runs:
        t0 = time.perf_counter()
        try:
            res = prune_model(original, 0.3, shapes=shapes, **kw)
        except HwoptError as exc:
            row[label] = {"refused": str(exc)}
            print(f"{'':20s}{label:8s} refused: {exc}", flush=True)
            continue
        s = res.summary
        row[label] = {"groups_pruned": s["groups_pruned"], "macs_before": macs, "macs_after": s["macs_after"],
                      "macs_ratio": round(macs / max(s["macs_after"], 1), 3), "params_after": s["params_after"],
                      "seconds": round(time.perf_counter() - t0, 1), **check_pruned(m, original, res.model)}
        r = row[label]
        print(f"{'':20s}{label:8s} pruned {r['groups_pruned']:3d} groups  MACs {macs / 1e6:8.1f}M -> "
              f"{r['macs_after'] / 1e6:8.1f}M ({r['macs_ratio']:.2f}x)  {r['shape']}; {r['dynamic']}  {r['seconds']}s",
              flush=True)
    if prunable:
        row["ratio0_identical"] = ratio_zero_identical(m, original)
        print(f"{'':20s}ratio 0 bit-identical: {row['ratio0_identical']}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated names (default all)")
    ap.add_argument("--barriers", action="store_true", help="list the barrier reasons of every model")
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for m in corpus(args.models.split(",") if args.models else None):
        results[m.name] = one_model(m, args.barriers)
    atomic_write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", RESULTS)
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
