"""Latency prediction vs measurement on this machine, and the Raspberry Pi 4 calibration quality.

Held-out models (never profiled: whole networks from hwopt.models.zoo at several widths, depths
and resolutions, fp32 and int8 QDQ, plus examples/*.onnx when present) are predicted from the
shipped x86-avx512 tables and measured here on onnxruntime and OpenVINO (1 thread, the tables'
setting). The floor is a FLOPs-proportional predictor whose one ms/FLOP factor is fitted on the
same models (in-sample, so it is an optimistic floor). The rpi4 numbers (NB201 cross-validation,
published per-model error) are read from the calibrated table's provenance, where
`python -m hwopt.latency.calibrate` wrote them.

    python benchmarks/latency_predict.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hwopt.graph.load import atomic_write_text, load_model, save_model
from hwopt.graph.normalize import normalize_model
from hwopt.latency import extract_kernels, predict_latency
from hwopt.latency.profiler import measure_interleaved
from hwopt.latency.table import load_table, tables_dir
from hwopt.latency.validate import error_summary
from hwopt.models.export import export_onnx
from hwopt.models.zoo import build

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [  # (zoo name, kwargs, resolution)
    ("resnet_basic", {"width": 0.5, "depths": (1, 1, 1)}, 32),
    ("resnet_basic", {"width": 1.0, "depths": (2, 2, 2)}, 32),
    ("resnet_basic", {"width": 1.0, "depths": (1, 1, 1)}, 64),
    ("resnet18", {"width": 0.25}, 64),
    ("resnet18", {"width": 0.5}, 96),
    ("mobilenet_v2", {"width": 0.5}, 64),
    ("mobilenet_v2", {"width": 1.0}, 64),
    ("mobilenet_v2", {"width": 1.0}, 112),
    ("mobilenet_v3", {"width": 0.5}, 64),
    ("mobilenet_v3", {"width": 1.0}, 96),
    ("mobilenet_v3", {"width": 0.75}, 128),
    ("shufflenet_tiny", {"width": 0.5}, 64),
]
QUICK = [0, 1, 3, 5, 7, 8, 10]


def _quantize(src: Path, dst: Path, shape: tuple[int, ...]) -> None:
    """int8 QDQ (S8S8, per-channel weights) with onnxruntime's static quantizer and random calibration."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    normalized = dst.with_suffix(".fp32norm.onnx")  # torch leaves biases in Constant nodes; the quantizer wants initializers
    save_model(normalize_model(load_model(src)), normalized)
    name = load_model(normalized).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(normalized), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True)


def build_models(folder: Path, quick: bool) -> list[tuple[str, Path]]:
    torch.manual_seed(0)
    out = []
    for i, (name, kwargs, res) in enumerate(VARIANTS):
        if quick and i not in QUICK:
            continue
        module, shape = build(name, **kwargs)
        shape = (1, shape[1], res, res)
        tag = f"{name}_" + "_".join(f"{k}{v}" for k, v in kwargs.items()).replace(" ", "") + f"_r{res}"
        fp32 = folder / f"{tag}.onnx"
        export_onnx(module, fp32, shape)
        int8 = folder / f"{tag}_int8.onnx"
        _quantize(fp32, int8, shape)
        out += [(tag, fp32), (tag + "_int8", int8)]
    for ex in sorted((ROOT / "examples").glob("*.onnx")):
        out.append((ex.stem, ex))
    return out


def run_runtime(runtime: str, models: list[tuple[str, Path]]) -> dict:
    rows = []
    loaded = [load_model(path) for _, path in models]
    measured = measure_interleaved(loaded, runtime, threads=1)  # round-robin: load spikes hit every model alike
    for (tag, _), model, meas in zip(models, loaded, measured):
        t0 = time.perf_counter()
        pred = predict_latency(model, "x86-avx512", runtime)
        predict_ms = (time.perf_counter() - t0) * 1e3
        flops = sum(k.flops for k in extract_kernels(model, runtime))
        rows.append({"model": tag, "int8": tag.endswith("_int8"), "predicted_ms": pred.latency_ms,
                     "measured_ms": meas, "flops": flops, "sources": pred.sources, "predict_call_ms": predict_ms})
        print(f"  {runtime:11s} {tag:48s} pred {pred.latency_ms:8.3f}  meas {meas:8.3f}  "
              f"err {pred.latency_ms / meas - 1:+6.1%}", file=sys.stderr)
    meas = np.array([r["measured_ms"] for r in rows])
    flops = np.array([r["flops"] for r in rows])
    floor = np.empty(len(rows))
    for is_int8 in (False, True):  # one ms/FLOP factor per precision, fitted in-sample
        sel = np.array([r["int8"] == is_int8 for r in rows])
        if sel.any():
            floor[sel] = flops[sel] * np.median(meas[sel] / flops[sel])
    for r, f in zip(rows, floor):
        r["flops_floor_ms"] = float(f)
    return {"models": rows,
            "hwopt": error_summary([r["predicted_ms"] for r in rows], meas),
            "hwopt_fp32": error_summary([r["predicted_ms"] for r in rows if not r["int8"]],
                                        [r["measured_ms"] for r in rows if not r["int8"]]),
            "hwopt_int8": error_summary([r["predicted_ms"] for r in rows if r["int8"]],
                                        [r["measured_ms"] for r in rows if r["int8"]]),
            "flops_proportional": error_summary(floor, meas)}


def rpi4_section() -> dict:
    tab = load_table(tables_dir() / "rpi4-litert.json")
    cal = tab.provenance.get("calibration", {})
    return {"nb201": cal.get("nb201", {}), "fbnet": cal.get("fbnet", {}),
            "published_anchors_leave_one_model_out": cal.get("anchors_leave_one_model_out"),
            "published_by_group_mean_abs_rel_error": cal.get("published", {}).get("by_group_mean_abs_rel_error"),
            "source_speed_factors": cal.get("source_speed_factors")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer model variants")
    ap.add_argument("--runtimes", default="onnxruntime,openvino")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's pre-processing advice is not for us
    result: dict = {"benchmark": "latency_predict", "target": "x86-avx512", "threads": 1, "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp), args.quick)
        for rt in args.runtimes.split(","):
            result[rt] = run_runtime(rt, models)
    result["rpi4_analytical"] = rpi4_section()
    print(f"\n{'runtime':12s} {'predictor':22s} {'within ±10%':>12s} {'mean |err|':>11s} {'Spearman':>9s}")
    for rt in args.runtimes.split(","):
        for label, key in (("hwopt (all)", "hwopt"), ("hwopt fp32", "hwopt_fp32"), ("hwopt int8", "hwopt_int8"),
                           ("FLOPs-proportional", "flops_proportional")):
            s = result[rt][key]
            print(f"{rt:12s} {label:22s} {s['within_10pct']:12.0%} {s['mean_abs_rel_error']:11.1%} "
                  f"{s['spearman'] if s['spearman'] is not None else float('nan'):9.3f}")
    calls = [r["predict_call_ms"] for rt in args.runtimes.split(",") for r in result[rt]["models"]]
    result["predict_call_ms_median"] = float(np.median(calls))
    r4 = result["rpi4_analytical"]
    loo = r4["published_anchors_leave_one_model_out"] or {}
    print(f"\nrpi4 analytical: NB201 CV {r4['nb201'].get('cv')}  published anchors (leave-one-model-out) "
          f"mean |err| {loo.get('mean_abs_rel_error')}")
    out = ROOT / "benchmarks" / "results" / "latency_predict.json"
    atomic_write_text(json.dumps(result, indent=1, sort_keys=True, default=float) + "\n", out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
