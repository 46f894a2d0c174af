"""Foundation benchmark: census MACs vs torch's FLOP counter, and `hwopt bench` vs each runtime's own timer.

    python benchmarks/foundation_bench.py [--quick]

1. MACs. Every zoo model is exported to ONNX and counted by `hwopt.graph.census`; the peer is
   `torch.utils.flop_counter.FlopCounterMode` on the torch module (FLOPs / 2). The ratio should be 1.
2. Latency. For both example models, hwopt's onnxruntime and OpenVINO adapters (1 thread, fp32) are
   timed against the peers: bare `onnxruntime.InferenceSession.run` and `openvino` infer-request
   loops with the same settings, and OpenVINO's own `benchmark_app` (C++ timing loop with pre-filled
   inputs; sync API, 1 stream, 1 thread, f32). A ratio near 1 against the API loops means the
   adapters add no overhead; benchmark_app shows what Python's per-call cost adds on tiny models. Runs are interleaved in rounds and
   medians taken, because this machine is small and shared.

Writes benchmarks/results/foundation.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from hwopt.graph.census import census
from hwopt.graph.load import atomic_write_text, load_model
from hwopt.graph.shapes import random_inputs, resolve_input_shapes
from hwopt.models import ZOO, build, export_onnx
from hwopt.runtimes import get_runtime, time_session
from hwopt.runtimes.base import host_device

ROOT = Path(__file__).resolve().parent.parent
console = Console(width=120)


def macs_rows(names: list[str], folder: Path) -> list[dict]:
    rows = []
    for name in names:
        module, shape = build(name)
        path = folder / f"{name}.onnx"
        export_onnx(module, path, shape)
        t0 = time.perf_counter()
        ours = census(load_model(path)).macs
        census_ms = (time.perf_counter() - t0) * 1e3
        counter = FlopCounterMode(display=False)
        t0 = time.perf_counter()
        with counter, torch.no_grad():
            module(torch.zeros(shape))
        torch_ms = (time.perf_counter() - t0) * 1e3
        theirs = counter.get_total_flops() // 2
        rows.append({"model": name, "input": list(shape), "hwopt_macs": ours, "torch_macs": theirs,
                     "ratio": ours / theirs, "hwopt_ms": census_ms, "torch_ms": torch_ms})
    return rows


def _ort_loop_ms(path: Path, feeds: dict, runs: int) -> np.ndarray:
    """Peer for onnxruntime: the plain API with the same settings hwopt uses (1 thread, sequential, all optimizations)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(5):
        sess.run(None, feeds)
    out = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def _ov_loop_ms(path: Path, feeds: dict, runs: int) -> np.ndarray:
    """Peer for OpenVINO from Python: the plain API with the config hwopt sets (f32, 1 stream, 1 thread)."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
    for _ in range(5):
        request.infer(feeds)
    out = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        request.infer(feeds)
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def _benchmark_app_median_ms(path: Path, shape: tuple[int, ...], runs: int) -> float:
    """Peer for OpenVINO: its own benchmark_app, configured like hwopt's session (f32, 1 stream, 1 thread)."""
    cmd = ["benchmark_app", "-m", str(path), "-d", "CPU", "-hint", "none", "-nstreams", "1", "-nthreads", "1",
           "-niter", str(runs), "-api", "sync", "-infer_precision", "f32", "-shape", f"input[{','.join(map(str, shape))}]"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    value, unit = re.search(r"Median:\s+([\d.]+)\s+(us|ms)", out).groups()
    return float(value) / (1000 if unit == "us" else 1)


def latency_rows(models: list[Path], runs: int, rounds: int) -> list[dict]:
    has_app = shutil.which("benchmark_app") is not None
    rows = []
    for path in models:
        proto = load_model(path)
        shapes = resolve_input_shapes(proto)
        feeds = random_inputs(proto, shapes)
        samples: dict[str, list[float]] = {k: [] for k in ("hwopt_ort", "peer_ort", "hwopt_ov", "peer_ov", "ov_app")}
        ort_sess = get_runtime("onnxruntime").session(path, threads=1)
        ov_sess = get_runtime("openvino").session(path, threads=1, precision="fp32")
        for _ in range(rounds):  # interleave, so load spikes on the shared machine hit every column alike
            samples["hwopt_ort"].append(float(np.median(time_session(ort_sess, feeds, warmup=5, runs=runs))))
            samples["peer_ort"].append(float(np.median(_ort_loop_ms(path, feeds, runs))))
            samples["hwopt_ov"].append(float(np.median(time_session(ov_sess, feeds, warmup=5, runs=runs))))
            samples["peer_ov"].append(float(np.median(_ov_loop_ms(path, feeds, runs))))
            if has_app:
                samples["ov_app"].append(_benchmark_app_median_ms(path, shapes["input"], runs))
        med = {k: (float(np.median(v)) if v else None) for k, v in samples.items()}
        rows.append({
            "model": path.name, "runs": runs, "rounds": rounds, **{f"{k}_p50_ms": v for k, v in med.items()},
            "ort_ratio": med["hwopt_ort"] / med["peer_ort"],
            "ov_ratio": med["hwopt_ov"] / med["peer_ov"],
            "ov_app_ratio": med["hwopt_ov"] / med["ov_app"] if med["ov_app"] else None,
            "ov_precision": ov_sess.precision,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="census MACs vs torch FLOP counter; hwopt bench vs runtime tools")
    parser.add_argument("--quick", action="store_true", help="fewer zoo models, runs and rounds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = ["resnet18", "mobilenet_v2", "mobilenet_v3", "transformer_encoder"] if args.quick else sorted(ZOO)
    runs, rounds = (100, 3) if args.quick else (300, 5)

    with tempfile.TemporaryDirectory() as tmp:
        macs = macs_rows(names, Path(tmp))
    table = Table(title="MACs: hwopt census vs torch.utils.flop_counter (FLOPs/2)")
    for col in ("model", "input", "hwopt MACs", "torch MACs", "ratio", "census ms", "torch ms"):
        table.add_column(col, justify="left" if col in ("model", "input") else "right")
    for r in macs:
        table.add_row(r["model"], "x".join(map(str, r["input"])), f"{r['hwopt_macs']:,}", f"{r['torch_macs']:,}",
                      f"{r['ratio']:.4f}", f"{r['hwopt_ms']:.0f}", f"{r['torch_ms']:.0f}")
    console.print(table)

    examples = [ROOT / "examples" / f"{n}_digits.onnx" for n in ("resnet", "mobilenet")]
    lat = latency_rows([p for p in examples if p.is_file()], runs, rounds)
    table = Table(title=f"p50 latency, 1 thread, fp32: hwopt adapters vs runtime tools ({runs} runs x {rounds} rounds)")
    for col in ("model", "hwopt ORT ms", "ORT API ms", "ratio", "hwopt OV ms", "OV API ms", "ratio", "benchmark_app ms", "ratio"):
        table.add_column(col, justify="left" if col == "model" else "right")
    fmt = lambda v, spec=".3f": "-" if v is None else format(v, spec)  # noqa: E731
    for r in lat:
        table.add_row(r["model"], fmt(r["hwopt_ort_p50_ms"]), fmt(r["peer_ort_p50_ms"]), fmt(r["ort_ratio"], ".2f"),
                      fmt(r["hwopt_ov_p50_ms"]), fmt(r["peer_ov_p50_ms"]), fmt(r["ov_ratio"], ".2f"),
                      fmt(r["ov_app_p50_ms"]), fmt(r["ov_app_ratio"], ".2f"))
    console.print(table)

    out = ROOT / "benchmarks" / "results" / "foundation.json"
    result = {"quick": args.quick, "device": host_device(), "torch": torch.__version__, "onnxruntime": ort.__version__,
              "openvino": get_runtime("openvino").version(), "macs": macs, "latency": lat}
    atomic_write_text(json.dumps(result, indent=2) + "\n", out)
    console.print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
