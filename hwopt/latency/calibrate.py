"""Calibrate the roofline tables of targets without hardware here, from published measurements.

Reads `../shared/data/latency/` (HW-NAS-Bench NAS-Bench-201 and FBNet sets measured with TFLite
on a Raspberry Pi 4 and a Pixel 3, and published per-model Raspberry Pi 4 numbers), rebuilds the
architectures as ONNX graphs, cuts them into LiteRT kernels, fits the per-family efficiencies and
thread scaling (each published row at the runtime, thread count and clock it was measured with),
and writes the analytical tables with the fit quality (cross-validated Spearman and error) in
their provenance. The installed package never reads that folder: only the fitted factors ship.

    python -m hwopt.latency.calibrate [--data ../shared/data/latency] [--out latency_tables]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwopt.devices import CPU, DeviceProfile, Memory, Peak, load_device
from hwopt.errors import HwoptError
from hwopt.latency.analytical import Roofline, Terms, fit_terms, kernel_terms, model_totals
from hwopt.latency.archs import CLASSIC, fbnet, nb201, nb201_canonical
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

#: HW-NAS-Bench does not state its thread count. Taken as all 4 cores: FBNet cross-validates better so
#: (Spearman 0.951 at 1 thread, 0.964 at 4 on 200 archs; NB201 the same either way)
HWNASBENCH_THREADS = 4
Dataset = list[tuple[list[Kernel], float, str]]  # (kernels, measured ms, label)
#: the runtime (or setup) each published row was measured with, and the speed factor it gets in the
#: fit. Index 0 is the level the LiteRT table predicts: XNNPACK's own README numbers. XNNPACK issue
#: #814 is one user's board, 2-4x slower than the README: it gets its own factor.
PUBLISHED_SOURCES = ("XNNPACK", "ncnn", "XNNPACK issue #814")
NAS_SOURCES = ("nb201", "fbnet")
ALIASES = {"MobileNet v1 1.0X": "mobilenet", "MobileNet v2 1.0X": "mobilenet_v2", "MobileNet v3 Large": "mobilenet_v3",
           "MobileNet v3 Small": "mobilenet_v3_small"}


@dataclass
class Sample:
    """One measurement: the network's kernels, the configuration it ran in, and its latency."""

    kernels: list[Kernel]
    ms: float
    label: str
    threads: int = 1
    clock_ghz: float | None = None  # None: the device profile's clock
    source: str = ""


def load_nb201(data: Path, device: str, *, limit: int, seed: int = 0) -> Dataset:
    """NB201 archs (non-degenerate, >= 1 ms) with their LiteRT kernels; a seeded subset of `limit`.
    Archs that compute the same network share one kernel list (built once)."""
    rows = [r for r in csv.DictReader((data / f"hwnasbench_nb201_{device}_calib.csv").open())
            if float(r["latency_ms"]) >= 1.0]
    rng = np.random.default_rng(seed)
    built: dict[str, list[Kernel]] = {}
    out: Dataset = []
    for i in rng.permutation(len(rows))[:limit]:
        codes = nb201_canonical(rows[i]["op_codes"])
        if codes is None:
            continue
        if codes not in built:
            built[codes] = extract_kernels(nb201(codes), "litert")
        out.append((built[codes], float(rows[i]["latency_ms"]), rows[i]["arch_str"]))
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


def _clock(detail: str) -> float | None:
    """The board clock a published row states (1.8 GHz boards since 2020), None when not stated."""
    m = re.search(r"(\d\.\d)\s*GHz|(\d{4})\s*MHz", detail)
    return None if m is None else float(m.group(1)) if m.group(1) else int(m.group(2)) / 1000


def _published_source(row: dict) -> str | None:
    if row["runtime"].startswith("ncnn"):
        return "ncnn"
    if row["runtime"].startswith("XNNPACK"):
        return "XNNPACK issue #814" if "issues/814" in row["source"] else "XNNPACK"
    return None  # PyTorch (int8, unstated), LCE (binary), Qengineering (FPS of a whole app): not modelled


def load_published(data: Path) -> list[Sample]:
    """fp32 ncnn / XNNPACK rows of rpi4_published.csv for the networks `archs.CLASSIC` can build, each
    with its own thread count ("multi" = all 4 cores) and clock."""
    kernels: dict[str, list[Kernel]] = {}
    out = []
    for r in csv.DictReader((data / "rpi4_published.csv").open()):
        name = ALIASES.get(r["model"], r["model"])
        source = _published_source(r)
        if r["precision"] != "fp32" or name not in CLASSIC or source is None:
            continue
        if name not in kernels:
            kernels[name] = extract_kernels(CLASSIC[name](), "litert")
        threads = 4 if r["threads"].startswith("multi") else int(r["threads"])
        arch = " ARMv7" if "ARMv7" in r["device_detail"] else ""
        out.append(Sample(kernels[name], float(r["latency_ms"]), name, threads, _clock(r["device_detail"]),
                          source + arch))
    return out


def _at_clock(device: DeviceProfile, clock_ghz: float | None) -> DeviceProfile:
    """`device` run at another clock: compute peaks scale with it, memory bandwidth does not."""
    if clock_ghz is None or clock_ghz == device.cpu.clock_ghz:
        return device
    f = clock_ghz / device.cpu.clock_ghz
    peak = device.peak.model_copy(update={k: v * f for k, v in device.peak.model_dump().items() if v})
    return device.model_copy(update={"cpu": device.cpu.model_copy(update={"clock_ghz": clock_ghz}), "peak": peak})


def _problem(samples: list[Sample], device: DeviceProfile) -> tuple[Terms, np.ndarray, np.ndarray]:
    """Roofline terms of each distinct (network, threads, clock) once, the kernel -> network map, and
    the measurement -> network map."""
    index: dict[tuple[int, int, float | None], int] = {}
    parts: list[Terms] = []
    rows = np.empty(len(samples), dtype=np.int64)
    for i, s in enumerate(samples):
        key = (id(s.kernels), s.threads, s.clock_ghz)
        if key not in index:
            index[key] = len(parts)
            parts.append(kernel_terms(s.kernels, _at_clock(device, s.clock_ghz), s.threads))
        rows[i] = index[key]
    owner = np.repeat(np.arange(len(parts)), [len(p.comp) for p in parts])
    return Terms.concat(parts), owner, rows


def fit_samples(samples: list[Sample], device: DeviceProfile, sources: list[str]) -> Roofline:
    """Fit one roofline to samples of several sources (`sources[0]` = the table's own level). The
    few published rows weigh as much together as the HW-NAS-Bench rows: they are the networks users
    deploy (224x224 ImageNet nets), unlike the 32x32 NAS cells."""
    terms, owner, rows = _problem(samples, device)
    nas = np.array([s.source in NAS_SOURCES for s in samples])
    weights = np.where(nas, 1.0, max(nas.sum(), 1) / max((~nas).sum(), 1)) if nas.any() and not nas.all() else None
    return fit_terms(terms, owner, [s.ms for s in samples], sources=[sources.index(s.source) for s in samples],
                     conv_half=True, family_overheads=True, model_of_row=rows, weights=weights)


def predict_samples(samples: list[Sample], device: DeviceProfile, r: Roofline, sources: list[str]) -> np.ndarray:
    """Predicted ms of each sample in its own configuration, at its source's speed factor (1 for a
    source the fit never saw)."""
    terms, owner, rows = _problem(samples, device)
    scale = [r.source_scales[sources.index(s.source)] if s.source in sources[:len(r.source_scales)] else 1.0
             for s in samples]
    return model_totals(terms, owner, int(rows.max()) + 1, r)[rows] * np.asarray(scale)


def _as_samples(ds: Dataset, source: str, threads: int = HWNASBENCH_THREADS) -> list[Sample]:
    return [Sample(k, ms, label, threads, None, source) for k, ms, label in ds]


def _flops(samples: list[Sample]) -> np.ndarray:
    return np.array([sum(k.flops for k in s.kernels) for s in samples])


def _summary(pred: np.ndarray, y: np.ndarray) -> dict:
    s = error_summary(pred, y)
    return {"models": s["models"], "spearman": round(s["spearman"], 4),
            "mean_abs_rel_error": round(s["mean_abs_rel_error"], 4), "within_10pct": round(s["within_10pct"], 4)}


def cross_validate(ds: Dataset, device: DeviceProfile, *, folds: int = 5, seed: int = 0) -> dict:
    """k-fold: fit on k-1 folds, predict the held-out one; Spearman / error over all held-out
    predictions, for the roofline and for the FLOPs-proportional floor (one ms/FLOP, fitted on the
    same training folds)."""
    samples = _as_samples(ds, "hwnasbench")
    y = np.array([s.ms for s in samples])
    flops = _flops(samples)
    idx = np.random.default_rng(seed).permutation(len(samples))
    pred, floor = np.empty(len(samples)), np.empty(len(samples))
    for f in range(folds):
        test = idx[f::folds]
        train = np.setdiff1d(idx, test)
        r = fit_samples([samples[i] for i in train], device, ["hwnasbench"])
        pred[test] = predict_samples([samples[i] for i in test], device, r, ["hwnasbench"])
        floor[test] = flops[test] * np.exp(np.median(np.log(y[train] / flops[train])))
    return {"folds": folds, **_summary(pred, y), "flops_proportional": _summary(floor, y)}


def _floor_published(train: list[Sample], test: list[Sample]) -> np.ndarray:
    """FLOPs-proportional floor for published rows: one ms/FLOP per (source, threads, clock) group,
    fitted on the training rows (1 where the group has none)."""
    out = np.empty(len(test))
    for i, s in enumerate(test):
        same = [t for t in train if (t.source, t.threads, t.clock_ghz) == (s.source, s.threads, s.clock_ghz)]
        ratio = np.median([t.ms / sum(k.flops for k in t.kernels) for t in same]) if same else np.nan
        out[i] = ratio * sum(k.flops for k in s.kernels)
    return out


def published_leave_one_model_out(published: list[Sample], background: list[Sample], device: DeviceProfile,
                                  sources: list[str]) -> dict:
    """For each network: fit on every other published row plus `background` (HW-NAS-Bench), predict
    its rows in their own configuration (runtime, threads, clock). Grouped by runtime and threads,
    with the FLOPs floor side by side. XNNPACK issue #814 has one network only, so its level cannot be
    known when it is held out; its rows count for thread scaling (each vs its own 1-thread row)."""
    detail = []
    for name in sorted({s.label for s in published}):
        held = [s for s in published if s.label == name]
        train = [s for s in published if s.label != name]
        r = fit_samples(train + background, device, sources)
        pred = predict_samples(held, device, r, sources)
        floor = _floor_published(train, held)
        known = {t.source for t in train}
        for s, p, fl in zip(held, pred, floor):
            detail.append({"model": name, "source": s.source, "threads": s.threads, "clock_ghz": s.clock_ghz,
                           "published_ms": s.ms, "predicted_ms": round(float(p), 3),
                           "rel_error": round(float(p / s.ms - 1), 4) if s.source in known else None,
                           "flops_floor_rel_error": round(float(fl / s.ms - 1), 4) if np.isfinite(fl) else None,
                           "scaling_only": s.source not in known})
    groups: dict[str, dict] = {}
    for d in detail:
        g = groups.setdefault(f"{d['source']} threads={d['threads']}", {"rows": 0, "model": [], "flops_floor": []})
        g["rows"] += 1
        if d["rel_error"] is not None:
            g["model"].append(abs(d["rel_error"]))
        if d["flops_floor_rel_error"] is not None:
            g["flops_floor"].append(abs(d["flops_floor_rel_error"]))
    by_group = {k: {"rows": g["rows"], "mean_abs_rel_error": _mean(g["model"]),
                    "flops_floor_mean_abs_rel_error": _mean(g["flops_floor"])} for k, g in sorted(groups.items())}
    counted = [d for d in detail if d["rel_error"] is not None]
    scaling = _thread_scaling(detail)
    return {"rows": detail, "by_group": by_group,
            "goal_rows": {"which": "every fp32 ncnn and XNNPACK README row of a buildable network, at its own "
                                   "runtime, threads and clock", "rows": len(counted),
                          "mean_abs_rel_error": _mean([abs(d["rel_error"]) for d in counted]),
                          "flops_floor_mean_abs_rel_error": _mean([abs(d["flops_floor_rel_error"]) for d in counted
                                                                   if d["flops_floor_rel_error"] is not None])},
            "thread_scaling": scaling}


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _thread_scaling(detail: list[dict]) -> dict:
    """Predicted vs published speedup over the same network's 1-thread row (same source and clock)."""
    ones = {(d["model"], d["source"], d["clock_ghz"]): d for d in detail if d["threads"] == 1}
    errs = []
    for d in detail:
        one = ones.get((d["model"], d["source"], d["clock_ghz"]))
        if d["threads"] > 1 and one:
            pub = one["published_ms"] / d["published_ms"]
            pred = one["predicted_ms"] / d["predicted_ms"]
            errs.append({"model": d["model"], "source": d["source"], "threads": d["threads"],
                         "published_speedup": round(pub, 3), "predicted_speedup": round(pred, 3)})
    return {"pairs": errs, "mean_abs_rel_error": _mean([abs(e["predicted_speedup"] / e["published_speedup"] - 1)
                                                        for e in errs])}


def calibrate_device(data: Path, hw: str, device: DeviceProfile, *, limit: int,
                     published: list[Sample] | None = None) -> tuple[Roofline, dict]:
    """Fit on NB201 + FBNet of `hw` (raspi4 or pixel3), plus `published` rows when given.

    With published rows, XNNPACK's README rows set the absolute level (source 0) and every other
    runtime and each HW-NAS-Bench set gets its own speed factor (their thread count and TFLite
    version are unknown; they are taken as HWNASBENCH_THREADS); without, NB201 is the reference.
    Reports NB201/FBNet cross-validation beside the FLOPs floor, and the published rows left out
    one network at a time.
    """
    nb = load_nb201(data, hw, limit=limit)
    fb = load_fbnet(data, hw, limit=limit // 3)
    published = published or []
    sources = sorted({s.source for s in published}, key=lambda s: (s not in PUBLISHED_SOURCES[:1], s))
    sources += list(NAS_SOURCES)
    background = _as_samples(nb, NAS_SOURCES[0]) + _as_samples(fb, NAS_SOURCES[1])
    r = fit_samples(published + background, device, sources)
    report = {
        "source": f"HW-NAS-Bench {hw} calibration halves (TFLite, batch 1; threads and TFLite version not published, "
                  f"taken as {HWNASBENCH_THREADS} threads)",
        "nb201": {"cv": cross_validate(nb, device), "fitted_on": len(nb),
                  "distinct_networks": len({id(k) for k, _, _ in nb})},
        "fbnet": {"cv": cross_validate(fb, device), "fitted_on": len(fb),
                  "note": "FBNet latencies are lookup-table sums, not end-to-end runs"},
        "source_speed_factors": dict(zip(sources, (round(v, 4) for v in r.source_scales))),
    }
    if published:
        report["published"] = published_leave_one_model_out(published, background, device, sources)
        report["published"]["in_sample"] = _in_sample(published, report["published"]["rows"], device, r, sources)
    return r, report


def _in_sample(published: list[Sample], loo_rows: list[dict], device: DeviceProfile, r: Roofline,
               sources: list[str]) -> dict:
    """The goal rows priced by the fit that saw them all (the shipped table's own factors): reported
    beside the leave-one-network-out error only to show how much of that error is generalization;
    it is not the result."""
    counted = {(d["model"], d["source"], d["threads"], d["clock_ghz"]) for d in loo_rows if d["rel_error"] is not None}
    rows = [(s, p) for s, p in zip(published, predict_samples(published, device, r, sources))
            if (s.label, s.source, s.threads, s.clock_ghz) in counted]
    return {"rows": len(rows), "mean_abs_rel_error": _mean([abs(p / s.ms - 1) for s, p in rows]),
            "note": "fitted on these rows: not a held-out error"}


def _table(device: str, runtime: str, r: Roofline, provenance: dict) -> LatencyTable:
    return LatencyTable(device=device, runtime=runtime, threads=r.threads, method="analytical",
                        provenance=provenance, roofline=r)


def a76_provenance(base: dict, pixel3_report: dict) -> dict:
    """Why the Cortex-A76 tables reuse the Pi 4 fit: the only A7x-class sets in reach (Pixel 3,
    32x32 NAS cells) fit efficiencies so low that an A76 at 1.6x the Pi 4's peak came out slower
    than the Pi 4 (ResNet-18 354 vs 152 ms), against every published Pi 5 vs Pi 4 comparison."""
    return {**base, "calibration": {
        "transfer": "the rpi4 (Cortex-A72, NEON) fit's per-family efficiencies and thread scaling, applied to this "
                    "profile's peaks and bandwidth; no A76 measurement in reach, so the absolute level is unverified",
        "pixel3_cross_check": {**pixel3_report, "not_used_because": "its 32x32-cell efficiencies made an A76 slower "
                               "than the Pi 4 on ResNet-18 (354 vs 152 ms)"}}}


def _with_threads(r: Roofline, threads: int) -> Roofline:
    """`r` predicting at `threads` unless the caller names a thread count."""
    out = Roofline.from_dict(r.to_dict())
    out.threads = threads
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = Path(__file__).resolve().parents[2]
    ap.add_argument("--data", type=Path, default=repo.parent / "shared" / "data" / "latency")
    ap.add_argument("--out", type=Path, default=repo / "latency_tables")
    ap.add_argument("--limit", type=int, default=1000, help="NB201 archs per device (FBNet: a third)")
    args = ap.parse_args(argv)
    if not (args.data / "README.md").is_file():
        raise HwoptError(f"calibration data not found in {args.data}")
    today = dt.date.today().isoformat()
    rpi4 = load_device("rpi4")
    r4, rep4 = calibrate_device(args.data, "raspi4", rpi4, limit=args.limit, published=load_published(args.data))
    r4 = _with_threads(r4, rpi4.cpu.cores)
    rep4["level"] = (f"absolute level = XNNPACK fp32 (its README's Raspberry Pi 4 rows); predictions at "
                     f"{r4.threads} threads unless the caller names a thread count")
    base = {"method": "analytical", "date": today, "note": "calibrated roofline; no kernel was measured on this device"}
    _table("rpi4", "litert", r4, {**base, "calibration": rep4}).save(args.out / "rpi4-litert.json")
    _table("rpi4", "onnxruntime", r4, {**base, "calibration": {
        "borrowed_from": "rpi4-litert.json",
        "caveat": "no onnxruntime measurement on a Pi 4 in reach; the LiteRT/XNNPACK factors are reused with "
                  "onnxruntime's fusion rules. ncnn (another NEON im2col/GEMM runtime) fitted at "
                  f"{rep4['source_speed_factors'].get('ncnn', float('nan')):.2f}x XNNPACK's time on the same rows: "
                  "expect onnxruntime (MLAS) to differ from this table by a similar factor"}},
    ).save(args.out / "rpi4-onnxruntime.json")
    _, rep3 = calibrate_device(args.data, "pixel3", PIXEL3, limit=args.limit)
    for dev in ("rpi5", "arm64-a76"):
        _table(dev, "litert", _with_threads(r4, load_device(dev).cpu.cores), a76_provenance(base, rep3)).save(
            args.out / f"{dev}-litert.json")
    gpu = Roofline({"conv": 0.5, "pwconv": 0.4, "dwconv": 0.05, "gemm": 0.4}, memory_efficiency=0.7,
                   kernel_overhead_ms=0.008, model_overhead_ms=0.1)
    for dev in ("jetson-orin-nano", "cuda-gpu"):
        _table(dev, "tensorrt", gpu, {**base, "calibration": {
            "status": "UNCALIBRATED: no public per-kernel TensorRT data in reach; textbook efficiencies"}},
        ).save(args.out / f"{dev}-tensorrt.json")
    pub = rep4["published"]
    print(f"rpi4: NB201 CV {rep4['nb201']['cv']}\n      FBNet CV {rep4['fbnet']['cv']}")
    print(f"rpi4 published (leave one network out): {pub['goal_rows']}  speed factors {rep4['source_speed_factors']}")
    for group, g in pub["by_group"].items():
        print(f"  {group}: {g}")
    print(f"  thread scaling: {pub['thread_scaling']['mean_abs_rel_error']}")
    print(f"pixel3: NB201 CV {rep3['nb201']['cv']}  FBNet CV {rep3['fbnet']['cv']}")


if __name__ == "__main__":
    main()
