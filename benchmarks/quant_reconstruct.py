"""Plain PTQ vs AdaRound vs QDrop vs MetaAug at W4A4, few calibration images, paired over seeds.

    python benchmarks/quant_reconstruct.py [--quick] [--seeds 0 1 2] [--bits W4A4] [--iters N]
                                           [--calib-samples 32 128] [--models ...] [--jobs 2]

Issue #7 asks whether MetaAug beats QDrop, which beats AdaRound, which beats plain PTQ at W4A4.
For every (model, bits, calibration size, seed) the calibration set is a seed-dependent random
subset of the calibration images; the same PTQ model (MSE calibration on that subset,
onnxruntime scheme) is reconstructed by each method with the same seed and iterations per
block, and the final QDQ ONNX file is run on onnxruntime over the held-out evaluation set.
So the four methods of one seed see exactly the same data: the comparison is paired. Each run
also records `logit_mse`, the squared error of its logits against the float model's on the
held-out images: what reconstruction optimizes, and less coarse than top-1 (one image of 497 is
0.2 points). For each neighbouring pair in the expected order (adaround-ptq, qdrop-adaround, metaaug-qdrop) the table
gives the per-seed differences (top-1, and logit error), their mean and their minimum, and calls
the order "shown" only when a one-sided sign test over the seeds (ties left out) gives p < 0.05:
with 5 seeds that is a win on every one, with 15 at least 12 wins of 15, else "noise".

Default model: a MobileNetV2 from hwopt.models.zoo trained for a few epochs on digits
(benchmarks/quant_ptq.py's helper). Each task runs in a fresh worker process (1 thread), so no
state carries from one task to the next; benchmarks/results/quant_reconstruct.json is written
after every task.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this checkout's hwopt, and quant_ptq's helpers

from hwopt.errors import HwoptError  # noqa: E402
from hwopt.graph.load import atomic_write_text  # noqa: E402

METHODS = ("ptq", "adaround", "qdrop", "metaaug")
#: (better, worse) pairs whose paired differences decide the expected order
PAIRS = tuple(zip(METHODS[1:], METHODS[:-1]))
RESULTS = ROOT / "benchmarks/results"
#: --lr-act: the activation-step rate of QDrop's recipe, or one scaled to keep its travel at few iterations
LR_ACT = {"recipe": 4e-5, "scaled": None}
#: iterations per block of the published run (docs/reconstruct.md: accuracy stopped moving at
#: about 100 on this MobileNetV2)
ITERS = 100


def prepare_models(names: list[str], tmp: Path, epochs: int) -> dict[str, dict[str, str]]:
    """Paths of each model and its calibration / evaluation .npz (zoo models trained here)."""
    paths = {}
    for name in names:
        if (ROOT / f"examples/{name}.onnx").exists():
            paths[name] = {"model": str(ROOT / f"examples/{name}.onnx"), "calib": str(ROOT / "examples/calib.npz"),
                           "eval": str(ROOT / "examples/eval.npz")}
            continue
        import onnx
        from quant_ptq import digits_32, zoo_model

        calib, ev, train = digits_32()
        model = zoo_model(name, train, epochs, tmp)
        input_name = model.graph.input[0].name
        for ds, kind in ((calib, "calib"), (ev, "eval")):
            np.savez(tmp / f"{name}_{kind}.npz", **{input_name: next(iter(ds.inputs.values())), "labels": ds.labels})
        onnx.save(model, str(tmp / f"{name}.onnx"))
        paths[name] = {"model": str(tmp / f"{name}.onnx"), "calib": str(tmp / f"{name}_calib.npz"),
                       "eval": str(tmp / f"{name}_eval.npz")}
    return paths


def run_task(task: dict) -> dict:
    """One (model, bits, method, seed): PTQ on a seeded calibration subset, reconstruct, ORT top-1."""
    import torch

    from hwopt.data import Dataset, accuracy_metrics, load_dataset, run_outputs
    from hwopt.graph.load import load_model
    from hwopt.graph.normalize import normalize_model
    from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
    from hwopt.quant.reconstruct import reconstruct, reconstruct_summary
    from hwopt.quant.schemes import scheme_for
    from hwopt.runtimes import get_runtime

    torch.set_num_threads(1)
    float_model = normalize_model(load_model(task["paths"]["model"]))
    full, ev = load_dataset(task["paths"]["calib"], float_model), load_dataset(task["paths"]["eval"], float_model)
    idx = np.sort(np.random.default_rng(task["seed"]).choice(len(full), min(task["calib_samples"], len(full)), replace=False))
    calib = Dataset({k: v[idx] for k, v in full.inputs.items()}, None if full.labels is None else full.labels[idx], "subset")
    plan = plan_quantization(float_model, scheme_for("onnxruntime"))
    model = emit(plan, calibrate_plan(plan, calib, "mse"), wbits=task["wbits"], abits=task["abits"])
    t0 = time.perf_counter()
    used, error, acc, mse, reverted, blocks = "ptq", None, None, None, None, None
    float_out = run_outputs(get_runtime("onnxruntime").session(float_model), ev, batch_size=50)[0]
    try:
        if task["method"] != "ptq":
            model = reconstruct(float_model, model, calib, task["method"], iters=task["iters"], seed=task["seed"], quiet=True,
                                lr_act=LR_ACT[task["lr_act"]])
            summary = reconstruct_summary(model)
            used, reverted = summary["method"], len(summary["reverted_blocks"])
            blocks = sum(1 for b in summary["blocks"] if b["iters"])
        out = run_outputs(get_runtime("onnxruntime").session(model), ev, batch_size=50)[0]
        acc = accuracy_metrics([out], ev.labels, None)["accuracy"]
        mse = float(np.mean((out - float_out) ** 2))
    except HwoptError as e:  # a failed run is a result too: recorded, not hidden, and the others go on
        error = str(e)
    secs = time.perf_counter() - t0
    float_acc = accuracy_metrics([float_out], ev.labels, None)["accuracy"]
    return {**{k: task[k] for k in ("model", "bits", "method", "seed", "iters")}, "method_used": used,
            "seconds": round(secs, 1), "onnxruntime": acc, "logit_mse": mse, "error": error, "float": float_acc,
            "eval_samples": len(ev), "calib_samples": len(calib), "blocks_fit": blocks, "blocks_kept_nearest": reverted}


def _run_key(r: dict) -> tuple:
    return r["model"], r["bits"], r["method"], r["seed"], r["calib_samples"]


def summarize(runs: list[dict]) -> list[dict]:
    """Rows per (model, bits, calibration size): each method's accuracy per seed, mean, std, and the
    paired per-seed differences of each neighbouring pair with their mean, min and verdict."""
    rows: dict[tuple[str, str, int], dict] = {}
    for r in runs:
        key = (r["model"], r["bits"], r["calib_samples"])
        row = rows.setdefault(key, {"model": r["model"], "bits": r["bits"], "float": r["float"],
                                    "eval_samples": r["eval_samples"], "calib_samples": r["calib_samples"]})
        row.setdefault(r["method"], {"runs": []})["runs"].append(
            {k: r.get(k) for k in ("seed", "onnxruntime", "logit_mse", "error", "seconds", "method_used", "blocks_kept_nearest")})
    for row in rows.values():
        for m in METHODS:
            if m in row:
                accs = [x["onnxruntime"] for x in row[m]["runs"] if x["onnxruntime"] is not None]
                mses = [x["logit_mse"] for x in row[m]["runs"] if x.get("logit_mse") is not None]
                row[m].update(mean=float(np.mean(accs)) if accs else None, std=float(np.std(accs)) if accs else None,
                              sem=sem(accs), n=len(accs), failed=len(row[m]["runs"]) - len(accs),
                              logit_mse_mean=float(np.mean(mses)) if mses else None, logit_mse_sem=sem(mses),
                              seconds=float(np.mean([x["seconds"] for x in row[m]["runs"]])))
        done = [m for m in METHODS if m in row and row[m]["n"]]
        row["best"] = max(done, key=lambda m: row[m]["mean"]) if done else None
        row["paired"] = {f"{hi}-{lo}": paired(row.get(hi), row.get(lo)) for hi, lo in PAIRS}
        row["paired_logit_mse"] = {f"{hi}-{lo}": paired(row.get(hi), row.get(lo), "logit_mse") for hi, lo in PAIRS}
    return list(rows.values())


def sem(values: list[float]) -> float | None:
    """Standard error of the mean (sample standard deviation / sqrt(n)); None below two values."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) >= 2 else None


def paired(hi: dict | None, lo: dict | None, metric: str = "onnxruntime") -> dict | None:
    """Per-seed improvements of hi over lo over the seeds both have, with their mean, sem and how
    many seeds hi won / lost / tied, and the one-sided sign-test p of that count (ties left out);
    "shown" when p < 0.05, else "noise". None when either method is missing. `metric`: "onnxruntime"
    (top-1 %, higher is better: hi - lo) or "logit_mse" (squared logit error to the float model on
    the held-out images, lower is better: lo - hi).

    With 5 seeds, 5 wins out of 5 has a one-sided sign-test p of 1/32 = 0.03; 4 of 5, 0.19."""
    if not hi or not lo:
        return None
    val = lambda d: {x["seed"]: x.get(metric) for x in d["runs"] if x.get(metric) is not None}  # noqa: E731
    a, b = val(hi), val(lo)
    sign = -1.0 if metric == "logit_mse" else 1.0
    diffs = {seed: sign * (a[seed] - b[seed]) for seed in sorted(a.keys() & b.keys())}
    if not diffs:
        return None
    values = list(diffs.values())
    wins, losses = sum(v > 0 for v in values), sum(v < 0 for v in values)
    p = sign_test(wins, losses)
    return {"diffs": {str(k): round(v, 2) for k, v in diffs.items()}, "mean": float(np.mean(values)), "sem": sem(values),
            "min": float(min(values)), "n": len(values), "wins": wins, "losses": losses,
            "ties": len(values) - wins - losses, "sign_test_p": round(p, 4), "verdict": "shown" if p < 0.05 else "noise"}


def sign_test(wins: int, losses: int) -> float:
    """One-sided sign-test p: the chance of `wins` or more wins in `wins + losses` fair coin flips."""
    from scipy.stats import binomtest

    return float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue) if wins + losses else 1.0


def out_path(lr_act: str, iters: int = ITERS) -> Path:
    """Results of the recipe's rate at the default iterations in quant_reconstruct.json; another rate
    or iteration count beside it (`quant_reconstruct_scaled_lr.json`, `quant_reconstruct_500iters.json`)."""
    parts = ["quant_reconstruct"] + ([f"{lr_act}_lr"] if lr_act != "recipe" else []) + (
        [f"{iters}iters"] if iters != ITERS else [])
    return RESULTS / ("_".join(parts) + ".json")


def save(runs: list[dict], meta: dict) -> Path:
    out = out_path(meta["lr_act"], meta["iters"])
    atomic_write_text(json.dumps({**meta, "rows": summarize(runs), "runs": runs}, indent=2), out)
    return out


def table(rows: list[dict]) -> str:
    """Accuracies (mean ± sem over seeds) side by side, then the paired differences per seed."""
    cell = lambda d: "-" if d is None or not d["n"] else f"{d['mean']:5.1f}±{d.get('sem') or 0:4.1f}"  # noqa: E731
    head = f"{'model':13} {'bits':5} {'calib':>5} {'float':>6} " + " ".join(f"{m:>11}" for m in METHODS)
    lines = [head + "   (top-1 %, onnxruntime, mean ± sem over seeds)"]
    for r in rows:
        lines.append(f"{r['model']:13} {r['bits']:5} {r['calib_samples']:5} {r['float']:6.1f} "
                     + " ".join(f"{cell(r.get(m)):>11}" for m in METHODS))
    lines.append("")
    lines.append(f"{'model':13} {'bits':5} {'calib':>5} {'pair':16} {'per-seed difference (points)':44} "
                 f"{'mean±sem':>10} {'wins':>5}  order")
    for key, unit in (("paired", "top-1 points"), ("paired_logit_mse", "logit error to float, lower is better")):
        lines.append(f"-- improvement in {unit}")
        for r in rows:
            for name, p in r[key].items():
                if p:
                    per_seed = " ".join(f"s{k}:{v:+.2f}" for k, v in p["diffs"].items())
                    lines.append(f"{r['model']:13} {r['bits']:5} {r['calib_samples']:5} {name:16} {per_seed:44} "
                                 f"{p['mean']:+5.2f}±{p.get('sem') or 0:4.2f} {p['wins']:>2}/{p['n']:<2}  {p['verdict']} "
                                 f"(sign test p {p['sign_test_p']:.3f})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, 32 images, 20 iterations")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--bits", nargs="+", default=["W4A4"])
    ap.add_argument("--iters", type=int, default=ITERS)
    ap.add_argument("--calib-samples", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2"],
                    help="also: resnet_digits, mobilenet_digits (both near float accuracy at W4A4 after any reconstruction)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--epochs", type=int, default=5, help="training epochs of zoo models")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--lr-act", choices=sorted(LR_ACT), default="recipe",
                    help="activation-step learning rate: QDrop's 4e-5, or scaled to keep its travel (0.8 / iters); "
                         "scaled results go to quant_reconstruct_scaled_lr.json")
    ap.add_argument("--append", action="store_true",
                    help="keep the runs already in the JSON file (those this run repeats are replaced)")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.calib_samples, args.iters = args.seeds[:1], [32], 20
    meta = {"quick": args.quick, "command": "python " + " ".join(["benchmarks/quant_reconstruct.py", *sys.argv[1:]]),
            "iters": args.iters, "seeds": args.seeds, "calib_samples": args.calib_samples, "runtime": "onnxruntime",
            "lr_act": args.lr_act}
    with tempfile.TemporaryDirectory() as tmp:
        paths = prepare_models(args.models, Path(tmp), args.epochs)
        tasks = [{"model": name, "paths": paths[name], "bits": bits, "wbits": int(bits[1]), "abits": int(bits[3]),
                  "method": method, "seed": seed, "iters": args.iters, "calib_samples": n, "lr_act": args.lr_act}
                 for method in reversed(args.methods)  # slowest first, so the workers finish together
                 for name in args.models for bits in args.bits for n in sorted(args.calib_samples, reverse=True)
                 for seed in args.seeds]
        out = out_path(args.lr_act, args.iters)
        previous = json.loads(out.read_text()) if args.append and out.exists() else {}
        redo = {_run_key(t) for t in tasks}  # a re-run task replaces its earlier result
        runs: list[dict] = [r for r in previous.get("runs", []) if _run_key(r) not in redo]
        meta["earlier"] = [*previous.get("earlier", []), {k: previous[k] for k in ("command", "wall_seconds") if k in previous}] if previous else []
        t0 = time.perf_counter()
        with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            for r in pool.imap_unordered(run_task, tasks):
                runs.append(r)
                print(f"{r['model']} {r['bits']} {r['method']} seed {r['seed']}: {r['onnxruntime'] or r['error']} "
                      f"({r['seconds']} s)", flush=True)
                save(runs, meta)  # after every task, so an interrupted run keeps what it measured
    meta["wall_seconds"] = round(time.perf_counter() - t0, 1)
    print(table(summarize(runs)))
    print(f"{len(tasks)} tasks in {meta['wall_seconds']:.0f} s with {args.jobs} workers")
    print(f"wrote {save(runs, meta)}")


if __name__ == "__main__":
    main()
