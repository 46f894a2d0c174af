"""`hwopt compress --target x86-avx512` vs the best single peer recipe, measured side by side.

For each example model (examples/resnet_digits.onnx, examples/mobilenet_digits.onnx with
examples/calib.npz + eval.npz; generated with examples/train_examples.py into a temporary folder
when they are not there yet):

  * hwopt   : `hwopt.pipeline.compress(model, target="x86-avx512", calib, eval)`, its chosen artifact
  * ort-qdq : onnxruntime `quantize_static` (QDQ, S8S8, per-channel, MinMax) run on onnxruntime
  * nncf-ov : NNCF `quantize` of the OpenVINO model (default preset) run on OpenVINO int8
  * baseline: the faster of onnxruntime fp32 and OpenVINO fp32 (the honest float reference)

All variants are timed in the same process on 1 thread, interleaved over several rounds (the
median of per-round medians), because timings on this shared 2-core machine drift. Speedup is
against the baseline; accuracy is top-1 on the held-out eval set.

    python benchmarks/compress_x86.py [--quick]     # writes benchmarks/results/compress_x86.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from hwopt.data import Dataset, load_dataset, run_outputs
from hwopt.exporters.sessions import open_artifact
from hwopt.graph.load import atomic_write_text, load_model
from hwopt.graph.normalize import normalize_model
from hwopt.pipeline import compress
from hwopt.runtimes import Session, get_runtime, time_session

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet_digits", "mobilenet_digits")


def example_files(tmp: Path, ex: Path) -> Path:
    """The folder with the example models and data (generated into `tmp` if `ex` has none)."""
    if all((ex / f"{m}.onnx").is_file() for m in MODELS) and (ex / "calib.npz").is_file():
        return ex
    print("examples/*.onnx missing: training them with examples/train_examples.py", flush=True)
    subprocess.run([sys.executable, str(ROOT / "examples" / "train_examples.py"), "--out", str(tmp)], check=True)
    return tmp


class _Reader:
    """onnxruntime CalibrationDataReader over a Dataset, one sample at a time."""

    def __init__(self, ds: Dataset):
        self._it = iter(ds.batches(1))

    def get_next(self):
        return next(self._it, None)


def peer_ort(model: onnx.ModelProto, calib: Dataset, tmp: Path) -> Session:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, dst = tmp / "peer_ort_src.onnx", tmp / "peer_ort_q.onnx"
    onnx.save(model, str(src))
    quantize_static(str(src), str(dst), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return get_runtime("onnxruntime").session(dst)


def peer_nncf(model_path: Path, calib: Dataset, tmp: Path) -> Session:
    import nncf
    import openvino as ov

    ov_model = ov.convert_model(str(model_path))
    q = nncf.quantize(ov_model, nncf.Dataset(list(calib.batches(1))), subset_size=len(calib))
    xml = tmp / "peer_nncf.xml"
    ov.save_model(q, str(xml), compress_to_fp16=False)
    return get_runtime("openvino").session(xml, precision="int8")


def top1(session: Session, ev: Dataset) -> float:
    return float((run_outputs(session, ev)[0].argmax(1) == ev.labels).mean() * 100)


def interleaved_ms(sessions: dict[str, Session], feeds: dict, rounds: int, runs: int) -> dict[str, float]:
    per: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            per[name].append(float(np.median(time_session(s, feeds, warmup=3, runs=runs))))
    return {k: float(np.median(v)) for k, v in per.items()}


def bench(name: str, folder: Path, tmp: Path, quick: bool) -> dict:
    model_path = folder / f"{name}.onnx"
    model = normalize_model(load_model(model_path))
    calib = load_dataset(folder / "calib.npz", model)
    ev = load_dataset(folder / "eval.npz", model)
    if quick:
        ev = ev.subset(200)
    t0 = time.perf_counter()
    res = compress(model_path, target="x86-avx512", calib=folder / "calib.npz", eval=folder / "eval.npz",
                   out_dir=tmp / f"out_{name}")
    compress_s = time.perf_counter() - t0
    chosen = res.report["result"]
    shapes = [o.shape[1:] for o in run_outputs(get_runtime("onnxruntime").session(model), ev.subset(1))]
    sessions: dict[str, Session] = {
        "onnxruntime-fp32": get_runtime("onnxruntime").session(model),
        "openvino-fp32": get_runtime("openvino").session(model, precision="fp32"),
        "hwopt": open_artifact(chosen["runtime"], res.out_dir / chosen["artifact"], chosen["precision"],
                               onnx_inputs=list(ev.inputs), output_shapes=shapes),
        "ort-qdq": peer_ort(model, calib, tmp),
        "nncf-ov": peer_nncf(model_path, calib, tmp),
    }
    acc = {k: top1(s, ev) for k, s in sessions.items()}
    feeds = next(ev.batches(1))
    ms = interleaved_ms(sessions, feeds, rounds=3 if quick else 7, runs=30 if quick else 100)
    base_name = min(("onnxruntime-fp32", "openvino-fp32"), key=lambda k: ms[k])
    rows = {}
    for k in sessions:
        rows[k] = {"latency_ms": round(ms[k], 4), "accuracy": round(acc[k], 3),
                   "speedup": round(ms[base_name] / ms[k], 3), "accuracy_drop": round(acc[base_name] - acc[k], 3)}
    peers = {k: rows[k] for k in ("ort-qdq", "nncf-ov")}
    within = {k: v for k, v in peers.items() if v["accuracy_drop"] <= 1.0}
    best_peer = max(within or peers, key=lambda k: peers[k]["speedup"])
    return {"model": name, "baseline": base_name, "hwopt_choice": f"{chosen['runtime']}-{chosen['precision']}",
            "hwopt_budget_met": res.budget_met, "compress_seconds": round(compress_s, 1), "rows": rows,
            "best_peer": best_peer,
            "hwopt_beats_best_peer": rows["hwopt"]["speedup"] >= rows[best_peer]["speedup"]
            and rows["hwopt"]["accuracy_drop"] <= max(rows[best_peer]["accuracy_drop"], 1.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timing rounds and a 200-sample eval subset")
    ap.add_argument("--examples", type=Path, default=ROOT / "examples", help="folder with the example models and data")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        folder = example_files(tmp, args.examples)
        for name in MODELS:
            r = bench(name, folder, tmp, args.quick)
            results.append(r)
            print(f"\n{name}: baseline {r['baseline']}, hwopt chose {r['hwopt_choice']} (compress took {r['compress_seconds']} s)")
            print(f"{'variant':18} {'latency ms':>11} {'speedup':>8} {'top-1 %':>8} {'drop':>7}")
            for k, v in r["rows"].items():
                print(f"{k:18} {v['latency_ms']:11.4f} {v['speedup']:7.2f}x {v['accuracy']:8.2f} {v['accuracy_drop']:7.2f}")
            print(f"best peer: {r['best_peer']}; hwopt >= best peer at <= its drop: {r['hwopt_beats_best_peer']}")
    from hwopt.runtimes.base import host_device

    doc = {"benchmark": "compress_x86", "device": host_device(), "threads": 1, "quick": args.quick,
           "command": "python benchmarks/compress_x86.py" + (" --quick" if args.quick else ""), "models": results}
    out = ROOT / "benchmarks" / "results" / "compress_x86.json"
    atomic_write_text(json.dumps(doc, indent=2) + "\n", out)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
