"""KD-QAT vs PTQ at W8A8 and W4A4 on the example models, judged on real runtimes.

    python benchmarks/quant_distill.py [--quick] [--epochs E]

For each example model: float accuracy, onnxruntime's `quantize_static` (the peer PTQ, W8A8
QDQ per-channel S8S8), hwopt PTQ and hwopt KD-QAT (`distill_qat`, trained on the 256-image
calibration set against the float teacher) at W8A8 and W4A4. Every accuracy comes from running
the final QDQ ONNX on onnxruntime and on OpenVINO over the held-out eval set, not from the
fake-quant torch model. Issue 7's goal: KD-QAT recovers W4A4 to within 1 point of float.
If examples/*.onnx are missing they are trained into a temporary folder first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
import torch

from hwopt.data import Dataset, load_dataset, run_outputs
from hwopt.graph.load import atomic_write_text, load_model
from hwopt.graph.normalize import normalize_model
from hwopt.quant.distill import distill_qat
from hwopt.quant.ptq import calibrate_plan, emit, plan_quantization
from hwopt.quant.schemes import scheme_for
from hwopt.runtimes import get_runtime

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet_digits", "mobilenet_digits")


def example_dir(tmp: Path) -> Path:
    """examples/ when its models exist, else a temporary folder the example script trains into."""
    ex = ROOT / "examples"
    if all((ex / f"{m}.onnx").exists() for m in MODELS) and (ex / "calib.npz").exists():
        return ex
    subprocess.run([sys.executable, str(ex / "train_examples.py"), "--out", str(tmp), "--threads", "1"], check=True)
    return tmp


def accuracy(model: onnx.ModelProto, ds: Dataset, runtime: str) -> float:
    precision = "int8" if runtime == "openvino" and any(n.op_type == "QuantizeLinear" for n in model.graph.node) else "fp32"
    session = get_runtime(runtime).session(model, threads=1, precision=precision)
    out = run_outputs(session, ds, batch_size=64)[0]
    return float((out.argmax(1) == ds.labels).mean() * 100)


def ort_quantize_static(path: Path, calib: Dataset, out: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calib.batches(32))

        def get_next(self):
            return next(self.batches, None)

    normalized = out.with_suffix(".float.onnx")
    onnx.save(normalize_model(load_model(path)), str(normalized))
    quantize_static(str(normalized), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return onnx.load(str(out))


def run_model(name: str, folder: Path, calib: Dataset, evalset: Dataset, epochs: int, runtimes: list[str], tmp: Path) -> list[dict]:
    float_model = normalize_model(load_model(folder / f"{name}.onnx"))
    rows: list[dict] = []

    def record(method: str, bits: str, model: onnx.ModelProto, seconds: float = 0.0) -> None:
        row = {"model": name, "method": method, "bits": bits, "train_s": round(seconds, 1)}
        row.update({rt: accuracy(model, evalset, rt) for rt in runtimes})
        rows.append(row)
        print(f"  {name:17s} {method:26s} {bits:5s} " + "  ".join(f"{rt} {row[rt]:6.2f}" for rt in runtimes), flush=True)

    record("float", "fp32", float_model)
    record("onnxruntime quantize_static", "W8A8", ort_quantize_static(folder / f"{name}.onnx", calib, tmp / f"{name}_ort.onnx"))
    plan = plan_quantization(float_model, scheme_for("onnxruntime"))
    stats = calibrate_plan(plan, calib)
    for wbits, abits in ((8, 8), (4, 4)):
        bits = f"W{wbits}A{abits}"
        ptq = emit(plan, stats, wbits=wbits, abits=abits)
        record("hwopt PTQ", bits, ptq)
        t0 = time.perf_counter()
        qat = distill_qat(float_model, ptq, calib, epochs, quiet=True)
        record(f"hwopt KD-QAT ({epochs} ep)", bits, qat, time.perf_counter() - t0)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one model, fewer epochs")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    epochs = args.epochs or (4 if args.quick else 10)
    runtimes = [rt for rt in ("onnxruntime", "openvino") if get_runtime(rt).available()]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        folder = example_dir(tmp)
        for name in MODELS[:1] if args.quick else MODELS:
            model = load_model(folder / f"{name}.onnx")
            calib = load_dataset(folder / "calib.npz", model)
            evalset = load_dataset(folder / "eval.npz", model)
            rows += run_model(name, folder, calib, evalset, epochs, runtimes, tmp)
    summary = {}
    for name in {r["model"] for r in rows}:
        by = {(r["method"].split(" (")[0], r["bits"]): r for r in rows if r["model"] == name}
        fl = by[("float", "fp32")]
        summary[name] = {
            f"{rt}_{bits}_{what}_drop": round(fl[rt] - by[(method, bits)][rt], 2)
            for rt in runtimes for bits in ("W8A8", "W4A4") for what, method in (("ptq", "hwopt PTQ"), ("qat", "hwopt KD-QAT"))
        }
        summary[name]["w4a4_qat_within_1pt_of_float"] = all(summary[name][f"{rt}_W4A4_qat_drop"] <= 1.0 for rt in runtimes)
    result = {"benchmark": "quant_distill", "quick": args.quick, "epochs": epochs, "train_data": "examples/calib.npz (256)",
              "eval_data": "examples/eval.npz", "runtimes": runtimes, "rows": rows, "summary": summary,
              "torch_threads": 1, "seed": 0}
    out = ROOT / "benchmarks" / "results" / "quant_distill.json"
    atomic_write_text(json.dumps(result, indent=2), out)
    print(f"\naccuracy drop vs float (points): {json.dumps(summary, indent=1)}\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
