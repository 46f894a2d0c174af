"""Plain PTQ vs AdaRound vs QDrop vs MetaAug reconstruction, same data, same seed.

    python benchmarks/quant_reconstruct.py [--quick] [--seeds 0 1] [--iters N]

For each example model and bit-width, the same PTQ model (MSE calibration, onnxruntime scheme)
is reconstructed with each method on the same calibration set (examples/calib.npz); every
resulting QDQ ONNX file is run on onnxruntime and OpenVINO (fp32 precision hint, so the
fake-quantized graph runs as written) over examples/eval.npz. Prints a side-by-side table and
writes benchmarks/results/quant_reconstruct.json. --quick: W4A4 only, fewer iterations.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from hwopt.data import accuracy_metrics, load_dataset, run_outputs
from hwopt.graph.load import atomic_write_text, load_model
from hwopt.graph.normalize import normalize_model
from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
from hwopt.quant.reconstruct import reconstruct, reconstruct_summary
from hwopt.quant.schemes import scheme_for
from hwopt.runtimes import get_runtime

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("adaround", "qdrop", "metaaug")


def accuracy(model: onnx.ModelProto, runtime: str, ev) -> float | None:
    rt = get_runtime(runtime)
    if not rt.available():
        return None
    return accuracy_metrics(run_outputs(rt.session(model), ev, batch_size=50), ev.labels, None)["accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--models", nargs="+", default=["resnet_digits", "mobilenet_digits"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    bits = [(4, 4)] if args.quick else [(8, 8), (4, 4), (2, 4)]
    iters = args.iters or (120 if args.quick else 500)
    calib_path, eval_path = ROOT / "examples/calib.npz", ROOT / "examples/eval.npz"
    rows = []
    for name in args.models:
        float_model = normalize_model(load_model(ROOT / f"examples/{name}.onnx"))
        calib, ev = load_dataset(calib_path, float_model), load_dataset(eval_path, float_model)
        base = {rt: accuracy(float_model, rt, ev) for rt in ("onnxruntime", "openvino")}
        plan = plan_quantization(float_model, scheme_for("onnxruntime"))
        stats = calibrate_plan(plan, calib, "mse")
        for wbits, abits in bits:
            ptq = emit(plan, stats, wbits=wbits, abits=abits)
            row = {"model": name, "bits": f"W{wbits}A{abits}", "float": base, "iters": iters, "seeds": args.seeds,
                   "calib_samples": len(calib), "eval_samples": len(ev),
                   "ptq": {rt: accuracy(ptq, rt, ev) for rt in ("onnxruntime", "openvino")}}
            for method in METHODS:
                runs = []
                for seed in args.seeds:
                    t0 = time.perf_counter()
                    out = reconstruct(float_model, ptq, calib, method, iters=iters, seed=seed, quiet=True)
                    secs = time.perf_counter() - t0
                    runs.append({"seed": seed, "seconds": round(secs, 1), "method_used": reconstruct_summary(out)["method"],
                                 **{rt: accuracy(out, rt, ev) for rt in ("onnxruntime", "openvino")}})
                row[method] = {"runs": runs, **{rt: float(np.mean([r[rt] for r in runs])) if runs[0][rt] is not None else None
                                                 for rt in ("onnxruntime", "openvino")}}
                print(f"{name} W{wbits}A{abits} {method}: {row[method]}", flush=True)
            rows.append(row)
            save(rows, args)  # after every row, so an interrupted run keeps what it measured
    header = f"{'model':18} {'bits':6} {'float':>7} {'PTQ':>7} {'AdaRound':>9} {'QDrop':>7} {'MetaAug':>8}   (top-1 %, onnxruntime / OpenVINO)"
    print(header)
    for r in rows:
        cell = lambda d: "/".join("-" if d[rt] is None else f"{d[rt]:.1f}" for rt in ("onnxruntime", "openvino"))  # noqa: E731
        print(f"{r['model']:18} {r['bits']:6} {cell(r['float']):>7} {cell(r['ptq']):>7} {cell(r['adaround']):>9} "
              f"{cell(r['qdrop']):>7} {cell(r['metaaug']):>8}")
    print(f"wrote {save(rows, args)}")


def save(rows: list[dict], args: argparse.Namespace) -> Path:
    out = ROOT / "benchmarks/results/quant_reconstruct.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/quant_reconstruct.py" + (" --quick" if args.quick else "") + f" --seeds {' '.join(map(str, args.seeds))}"
    atomic_write_text(json.dumps({"quick": args.quick, "command": command, "rows": rows}, indent=2), out)
    return out


if __name__ == "__main__":
    main()
