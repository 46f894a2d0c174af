"""Calibrate the roofline tables of targets without hardware here, from published measurements.

Reads `../shared/data/latency/` (HW-NAS-Bench NAS-Bench-201 and FBNet sets measured with TFLite
on a Raspberry Pi 4 and a Pixel 3, and published per-model Raspberry Pi 4 numbers), rebuilds the
architectures as ONNX graphs, cuts them into LiteRT kernels, fits the per-family efficiencies,
and writes the analytical tables with the fit quality (cross-validated Spearman and error) in
their provenance. The installed package never reads that folder: only the fitted factors ship.

    python -m hwopt.latency.calibrate [--data ../shared/data/latency] [--out latency_tables]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
from pathlib import Path

import numpy as np

from hwopt.devices import CPU, DeviceProfile, Memory, Peak, load_device
from hwopt.errors import HwoptError
from hwopt.latency.analytical import Roofline, fit_roofline, kernel_terms, roofline_ms
from hwopt.latency.archs import CLASSIC, fbnet, nb201
from hwopt.latency.fusion import extract_kernels
from hwopt.latency.kernels import Kernel
from hwopt.latency.table import LatencyTable
from hwopt.latency.validate import error_summary

# Pixel 3 (Snapdragon 845: 4x Kryo 385 Gold ~ Cortex-A75 at 2.8 GHz, 2x128-bit NEON FMA = 16 fp32 FLOP/cycle,
# LPDDR4X ~ 15 GB/s usable). Only used to turn its measurements into efficiencies for A75/A76-class cores.
PIXEL3 = DeviceProfile(
    name="pixel3-reference", description="Pixel 3 big cores (reference for calibration only)", kind="cpu",
    cpu=CPU(name="Kryo 385 Gold (Cortex-A75)", cores=4, clock_ghz=2.8, isa=["armv8.2-a", "neon", "dotprod"]),
    memory=Memory(bandwidth_gbs=15.0), peak=Peak(fp32_gops=179.2, int8_gops=716.8),
    runtimes=["litert"], preferred_runtime="litert", fast_precisions=["int8"],
)

Dataset = list[tuple[list[Kernel], float, str]]  # (kernels, measured ms, label)


def load_nb201(data: Path, device: str, *, limit: int, seed: int = 0) -> Dataset:
    """NB201 archs (non-degenerate, >= 1 ms) with their LiteRT kernels; a seeded subset of `limit`."""
    rows = [r for r in csv.DictReader((data / f"hwnasbench_nb201_{device}_calib.csv").open())
            if float(r["latency_ms"]) >= 1.0]
    rng = np.random.default_rng(seed)
    out: Dataset = []
    for i in rng.permutation(len(rows))[:limit]:
        model = nb201(rows[i]["op_codes"])
        if model is not None:
            out.append((extract_kernels(model, "litert"), float(rows[i]["latency_ms"]), rows[i]["arch_str"]))
    return out


def load_fbnet(data: Path, device: str, *, limit: int, seed: int = 0) -> Dataset:
    rows = list(csv.DictReader((data / f"hwnasbench_fbnet_{device}_calib.csv").open()))
    rng = np.random.default_rng(seed)
    out: Dataset = []
    for i in rng.permutation(len(rows))[:limit]:
        choices = [int(rows[i][f"l{j:02d}"]) for j in range(22)]
        out.append((extract_kernels(fbnet(choices), "litert"), float(rows[i]["latency_ms"]),
                    "-".join(map(str, choices))))
    return out


def load_published(data: Path) -> list[dict]:
    """fp32 rows of rpi4_published.csv for the networks `archs.CLASSIC` can build."""
    aliases = {"MobileNet v1 1.0X": "mobilenet", "MobileNet v2 1.0X": "mobilenet_v2"}
    kernels = {name: extract_kernels(build(), "litert") for name, build in CLASSIC.items()}
    out = []
    for r in csv.DictReader((data / "rpi4_published.csv").open()):
        name = aliases.get(r["model"], r["model"])
        if r["precision"] != "fp32" or name not in kernels:
            continue
        out.append({"model": name, "runtime": r["runtime"].split(" (")[0], "threads": r["threads"],
                    "device_detail": r["device_detail"][:60], "latency_ms": float(r["latency_ms"]),
                    "kernels": kernels[name]})
    return out


def predict_totals(models: list[list[Kernel]], device: DeviceProfile, r: Roofline) -> np.ndarray:
    flat = [k for m in models for k in m]
    per = roofline_ms(kernel_terms(flat, device, r.threads), r)
    owner = np.repeat(np.arange(len(models)), [len(m) for m in models])
    return np.bincount(owner, weights=per, minlength=len(models)) + r.model_overhead_ms


def cross_validate(ds: Dataset, device: DeviceProfile, *, folds: int = 5, seed: int = 0) -> dict:
    """k-fold: fit on k-1 folds, predict the held-out one; Spearman / error over all held-out predictions."""
    idx = np.random.default_rng(seed).permutation(len(ds))
    pred = np.empty(len(ds))
    for f in range(folds):
        test = idx[f::folds]
        train = np.setdiff1d(idx, test)
        r = fit_roofline([ds[i][0] for i in train], [ds[i][1] for i in train], device, conv_half=True)
        pred[test] = predict_totals([ds[i][0] for i in test], device, r)
    s = error_summary(pred, [d[1] for d in ds])
    return {"folds": folds, "models": s["models"], "spearman": round(s["spearman"], 4),
            "mean_abs_rel_error": round(s["mean_abs_rel_error"], 4), "within_10pct": round(s["within_10pct"], 4)}


def _flops_floor(ds: Dataset) -> dict:
    """The plain FLOPs-proportional predictor (one fitted ms/FLOP), as the floor to beat."""
    flops = np.array([sum(k.flops for k in m) for m, _, _ in ds])
    y = np.array([d[1] for d in ds])
    scale = float(np.exp(np.median(np.log(y / flops))))
    s = error_summary(flops * scale, y)
    return {"spearman": round(s["spearman"], 4), "mean_abs_rel_error": round(s["mean_abs_rel_error"], 4)}


def is_anchor(row: dict) -> bool:
    """Published rows that define the rpi4 table's absolute level: fp32 at 4 threads on a 1.5 GHz Pi
    (ncnn) or XNNPACK's own multi-threaded README numbers; the other rows are checked, not fitted."""
    return (row["runtime"] == "ncnn benchncnn" and row["threads"] == "4" and "1.5GH" in row["device_detail"]) or (
        row["runtime"] == "XNNPACK end2end-bench" and row["threads"].startswith("multi"))


def calibrate_device(data: Path, hw: str, device: DeviceProfile, *, limit: int,
                     anchors: list[dict] | None = None) -> tuple[Roofline, dict]:
    """Fit on NB201 + FBNet of `hw` (raspi4 or pixel3), plus published `anchors` when given.

    With anchors, the anchors set the absolute speed (source 0) and each HW-NAS-Bench set gets
    its own speed factor (its thread count and TFLite version are unknown); without, NB201 is
    the reference. Reports NB201/FBNet cross-validation, the FLOPs floor, and leave-one-model-out
    error on the anchors.
    """
    nb = load_nb201(data, hw, limit=limit)
    fb = load_fbnet(data, hw, limit=limit // 2)
    anchors = anchors or []
    a_models = [(row["kernels"], row["latency_ms"], row["model"]) for row in anchors]
    base = 1 if anchors else 0

    def fit(extra: Dataset) -> Roofline:
        ds = extra + nb + fb
        srcs = [0] * len(extra) + [base] * len(nb) + [base + 1] * len(fb)
        return fit_roofline([d[0] for d in ds], [d[1] for d in ds], device, sources=srcs, conv_half=True)

    r = fit(a_models)
    report = {
        "source": f"HW-NAS-Bench {hw} calibration halves (TFLite, batch 1; threads and TFLite version not published)",
        "nb201": {"cv": cross_validate(nb, device), "flops_proportional": _flops_floor(nb), "fitted_on": len(nb)},
        "fbnet": {"cv": cross_validate(fb, device), "flops_proportional": _flops_floor(fb), "fitted_on": len(fb),
                  "note": "FBNet latencies are lookup-table sums, not end-to-end runs"},
        "source_speed_factors": {"reference": r.source_scales[0],
                                 **({"published_anchors": 1.0} if anchors else {}),
                                 "nb201": r.source_scales[base], "fbnet": r.source_scales[base + 1]},
    }
    if anchors:
        loo = []
        for name in sorted({row["model"] for row in anchors}):
            held = [i for i, row in enumerate(anchors) if row["model"] == name]
            rr = fit([a for i, a in enumerate(a_models) if i not in held])
            pred = predict_totals([anchors[i]["kernels"] for i in held], device, rr)
            loo += [float(p / anchors[i]["latency_ms"] - 1) for p, i in zip(pred, held)]
        report["anchors_leave_one_model_out"] = {
            "rows": len(loo), "mean_abs_rel_error": round(float(np.mean(np.abs(loo))), 4),
            "rel_errors": [round(e, 4) for e in loo]}
    return r, report


def published_check(data: Path, device: DeviceProfile, r: Roofline) -> dict:
    """Predicted vs every buildable fp32 published row, grouped by runtime and threads."""
    rows = load_published(data)
    pred = predict_totals([row["kernels"] for row in rows], device, r)
    detail = []
    for row, p in zip(rows, pred):
        detail.append({"model": row["model"], "runtime": row["runtime"], "threads": row["threads"],
                       "device_detail": row["device_detail"], "published_ms": row["latency_ms"],
                       "predicted_ms": round(float(p), 3), "rel_error": round(float(p / row["latency_ms"] - 1), 4),
                       "anchor": is_anchor(row)})
    groups: dict[str, list[float]] = {}
    for d in detail:
        groups.setdefault(f"{d['runtime']} threads={d['threads']}", []).append(abs(d["rel_error"]))
    return {"rows": detail, "by_group_mean_abs_rel_error": {k: round(float(np.mean(v)), 4) for k, v in groups.items()}}


def _table(device: str, runtime: str, r: Roofline, provenance: dict) -> LatencyTable:
    return LatencyTable(device=device, runtime=runtime, threads=r.threads, method="analytical",
                        provenance=provenance, roofline=r)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = Path(__file__).resolve().parents[2]
    ap.add_argument("--data", type=Path, default=repo.parent / "shared" / "data" / "latency")
    ap.add_argument("--out", type=Path, default=repo / "latency_tables")
    ap.add_argument("--limit", type=int, default=300, help="NB201 archs per device (FBNet: half)")
    args = ap.parse_args(argv)
    if not (args.data / "README.md").is_file():
        raise HwoptError(f"calibration data not found in {args.data}")
    today = dt.date.today().isoformat()
    rpi4 = load_device("rpi4")
    anchors = [row for row in load_published(args.data) if is_anchor(row)]
    r4, rep4 = calibrate_device(args.data, "raspi4", rpi4, limit=args.limit, anchors=anchors)
    rep4["published"] = published_check(args.data, rpi4, r4)
    rep4["level"] = "absolute level = fp32, 4 threads (ncnn at 1.5 GHz and XNNPACK multi-threaded published rows)"
    base = {"method": "analytical", "date": today, "note": "calibrated roofline; no kernel was measured on this device"}
    _table("rpi4", "litert", r4, {**base, "calibration": rep4}).save(args.out / "rpi4-litert.json")
    _table("rpi4", "onnxruntime", r4, {**base, "calibration": {
        "borrowed_from": "rpi4-litert.json", "caveat": "onnxruntime on the Pi was not measured; LiteRT factors reused"}},
    ).save(args.out / "rpi4-onnxruntime.json")
    rp3, rep3 = calibrate_device(args.data, "pixel3", PIXEL3, limit=args.limit)
    for dev in ("rpi5", "arm64-a76"):
        _table(dev, "litert", rp3, {**base, "calibration": {
            **rep3, "transfer": "efficiencies fitted on Pixel 3 (Cortex-A75 class) and applied to this profile's peaks"}},
        ).save(args.out / f"{dev}-litert.json")
    gpu = Roofline({"conv": 0.5, "pwconv": 0.4, "dwconv": 0.05, "gemm": 0.4}, memory_efficiency=0.7,
                   kernel_overhead_ms=0.008, model_overhead_ms=0.1)
    for dev in ("jetson-orin-nano", "cuda-gpu"):
        _table(dev, "tensorrt", gpu, {**base, "calibration": {
            "status": "UNCALIBRATED: no public per-kernel TensorRT data in reach; textbook efficiencies"}},
        ).save(args.out / f"{dev}-tensorrt.json")
    print(f"rpi4: NB201 CV {rep4['nb201']['cv']}  FBNet CV {rep4['fbnet']['cv']}")
    print(f"rpi4 anchors LOO: {rep4['anchors_leave_one_model_out']}  speed factors {rep4['source_speed_factors']}")
    print(f"rpi4 published by group: {rep4['published']['by_group_mean_abs_rel_error']}")
    print(f"pixel3: NB201 CV {rep3['nb201']['cv']}  FBNet CV {rep3['fbnet']['cv']}")


if __name__ == "__main__":
    main()
