"""Plain PTQ vs AdaRound vs QDrop vs MetaAug at W4A4 (and lower), few calibration images, several seeds.

    python benchmarks/quant_reconstruct.py [--quick] [--seeds 0 1 2] [--bits W4A4 W3A3] [--iters N]
                                           [--calib-samples 32 128] [--models ...] [--jobs 2]

Issue #7 asks whether MetaAug beats QDrop, which beats AdaRound, which beats plain PTQ at W4A4.
For every (model, bits, calibration size, seed) the calibration set is a seed-dependent random
subset of the calibration images (small sets are where MetaAug's augmentation should matter);
the same PTQ model (MSE calibration on that subset, onnxruntime scheme) is reconstructed by each
method with the same number of iterations per block, and the final QDQ ONNX file is run on
onnxruntime over the held-out evaluation set. Default model: a MobileNetV2 from hwopt.models.zoo
trained for a few epochs on digits (benchmarks/quant_ptq.py's helper); the two digits examples
(`--models resnet_digits mobilenet_digits`) come back to float accuracy at W4A4 with any method.

Each (model, bits, calibration size, method, seed) is one task in a fresh worker process
(1 thread), so no state carries from one task to the next. Prints mean ± std over seeds of
top-1 accuracy, and for each pair of neighbouring methods in the expected order whether the
difference of the means exceeds both standard deviations; writes
benchmarks/results/quant_reconstruct.json after every task.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from hwopt.errors import HwoptError  # noqa: E402
from hwopt.graph.load import atomic_write_text  # noqa: E402

METHODS = ("ptq", "adaround", "qdrop", "metaaug")
OUT = ROOT / "benchmarks/results/quant_reconstruct.json"
#: iterations per block of the published run (docs/reconstruct.md: not yet converged at 100 on
#: MobileNetV2; more did not fit the shared machine's time)
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
    used, error, acc = "ptq", None, None
    try:
        if task["method"] != "ptq":
            model = reconstruct(float_model, model, calib, task["method"], iters=task["iters"], seed=task["seed"], quiet=True)
            used = reconstruct_summary(model)["method"]
        acc = accuracy_metrics(run_outputs(get_runtime("onnxruntime").session(model), ev, batch_size=50), ev.labels, None)["accuracy"]
    except HwoptError as e:  # a failed run is a result too: recorded, not hidden, and the others go on
        error = str(e)
    secs = time.perf_counter() - t0
    float_acc = accuracy_metrics(run_outputs(get_runtime("onnxruntime").session(float_model), ev, batch_size=50),
                                 ev.labels, None)["accuracy"]
    return {**{k: task[k] for k in ("model", "bits", "method", "seed", "iters")}, "method_used": used,
            "seconds": round(secs, 1), "onnxruntime": acc, "error": error, "float": float_acc, "eval_samples": len(ev),
            "calib_samples": len(calib)}


def summarize(runs: list[dict]) -> list[dict]:
    """Rows per (model, bits): mean ± std over seeds of each method's onnxruntime top-1."""
    rows: dict[tuple[str, str, int], dict] = {}
    for r in runs:
        key = (r["model"], r["bits"], r["calib_samples"])
        row = rows.setdefault(key, {"model": r["model"], "bits": r["bits"], "float": r["float"],
                                    "eval_samples": r["eval_samples"], "calib_samples": r["calib_samples"]})
        row.setdefault(r["method"], {"runs": []})["runs"].append(
            {k: r[k] for k in ("seed", "onnxruntime", "error", "seconds", "method_used")})
    for row in rows.values():
        for m in METHODS:
            if m in row:
                accs = [x["onnxruntime"] for x in row[m]["runs"] if x["onnxruntime"] is not None]
                row[m].update(mean=float(np.mean(accs)) if accs else None, std=float(np.std(accs)) if accs else None,
                              n=len(accs), failed=len(row[m]["runs"]) - len(accs))
        done = [m for m in METHODS if m in row and row[m]["n"]]
        row["best"] = max(done, key=lambda m: row[m]["mean"]) if done else None
        row["order"] = {f"{hi}>{lo}": verdict(row.get(hi), row.get(lo)) for lo, hi in zip(METHODS, METHODS[1:])}
    return list(rows.values())


def verdict(hi: dict | None, lo: dict | None) -> str | None:
    """'yes' when `hi` beats `lo` by more than both standard deviations, 'no' when it loses by
    that much, 'noise' otherwise ('n<2' with fewer than two runs each, None when either is missing)."""
    if not hi or not lo or not hi.get("n") or not lo.get("n"):
        return None
    if min(hi["n"], lo["n"]) < 2:
        return "n<2"
    gap, noise = hi["mean"] - lo["mean"], max(hi["std"], lo["std"])
    return "yes" if gap > noise else "no" if gap < -noise else "noise"


def save(runs: list[dict], meta: dict) -> Path:
    atomic_write_text(json.dumps({**meta, "rows": summarize(runs), "runs": runs}, indent=2), OUT)
    return OUT


def table(rows: list[dict]) -> str:
    cell = lambda d: "-" if d is None or not d["n"] else f"{d['mean']:5.1f}±{d['std']:4.1f} (n={d['n']})"  # noqa: E731
    head = f"{'model':17} {'bits':5} {'calib':>5} {'float':>6} " + " ".join(f"{m:>18}" for m in METHODS)
    lines = [head + "   order (yes/no/noise)   (top-1 %, onnxruntime)"]
    for r in rows:
        order = " ".join(f"{k}:{v}" for k, v in r["order"].items() if v)
        lines.append(f"{r['model']:17} {r['bits']:5} {r['calib_samples']:5} {r['float']:6.1f} "
                     + " ".join(f"{cell(r.get(m)):>18}" for m in METHODS) + f"   {order}")
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
    ap.add_argument("--append", action="store_true", help="keep the runs already in the JSON file (other models)")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.calib_samples, args.iters = args.seeds[:1], [32], 20
    meta = {"quick": args.quick, "command": "python " + " ".join(["benchmarks/quant_reconstruct.py", *sys.argv[1:]]),
            "iters": args.iters, "seeds": args.seeds, "calib_samples": args.calib_samples, "runtime": "onnxruntime"}
    with tempfile.TemporaryDirectory() as tmp:
        paths = prepare_models(args.models, Path(tmp), args.epochs)
        tasks = [{"model": name, "paths": paths[name], "bits": bits, "wbits": int(bits[1]), "abits": int(bits[3]),
                  "method": method, "seed": seed, "iters": args.iters, "calib_samples": n}
                 for name in args.models for bits in args.bits for n in args.calib_samples for seed in args.seeds
                 for method in args.methods]
        runs: list[dict] = json.loads(OUT.read_text()).get("runs", []) if args.append and OUT.exists() else []
        with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            for r in pool.imap(run_task, tasks):
                runs.append(r)
                print(f"{r['model']} {r['bits']} {r['method']} seed {r['seed']}: {r['onnxruntime'] or r['error']} "
                      f"({r['seconds']} s)", flush=True)
                save(runs, meta)  # after every task, so an interrupted run keeps what it measured
    print(table(summarize(runs)))
    print(f"wrote {save(runs, meta)}")


if __name__ == "__main__":
    main()
