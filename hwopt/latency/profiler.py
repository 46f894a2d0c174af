"""Profile a latency table on this machine: time kernels inside random networks, fit, write.

Each sample is a random training network (`networks.training_network`: a stem and 2-7 stages of
block families, fp32 or int8 in both QDQ layouts). Its kernels are found with the same fusion
rules `predict` uses; the network is timed end to end (process CPU time) and once more with the
runtime's node profiler on (`node_times`), which gives every kernel its time *in context*. The
table is the per-signature median of those in-context times, the predictor is trained on them,
and a three-number model fitted on the networks' end-to-end times turns a kernel sum into a
network's time: `scale * sum(kernels) + per-kernel cost * kernels + per-inference overhead`.
Results are appended to `<table>.samples.jsonl` as they come (the raw data behind the table), so
an interrupted profile resumes where it stopped and a second run with the same seed extends it.
The shipped tables keep that log gzipped (`.samples.jsonl.gz`, a tenth of the size); it is read
and extended the same way.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from hwopt.devices import DeviceProfile, load_device
from hwopt.errors import HwoptError
from hwopt.graph.load import atomic_write_bytes
from hwopt.graph.shapes import random_inputs, resolve_input_shapes
from hwopt.latency.analytical import CACHED_MEMORY_EFFICIENCY, fit_roofline
from hwopt.latency.builders import GraphBuilder
from hwopt.latency.fusion import extract_kernels
from hwopt.latency.kernels import Kernel
from hwopt.latency.networks import MAX_MACS, deep_share, network_macs, ort_quantized, stem_kernels, training_network
from hwopt.latency.node_times import event_floor_us, event_times, kernel_times
from hwopt.latency.ort_qdq import observed_placement
from hwopt.latency.predictor import train_predictor
from hwopt.latency.probe import probe_model, probe_provenance, probe_record
from hwopt.latency.table import LatencyTable, calibration_class
from hwopt.runtimes import get_runtime
from hwopt.runtimes.base import Session, host_device, time_session

MIN_KERNEL_MS = 1e-4  # a kernel the runtime folded away (no event) costs ~nothing; logs need > 0
PROFILED_MS = 250.0  # node-profiled runs per network: about this much run time, 8 to 40 runs
SEED_STRIDE = 1_000_000  # sample id = seed * SEED_STRIDE + position in that seed's stream


@dataclass
class Sample:
    sid: int
    kind: str
    model: onnx.ModelProto


def samples(seed: int, precisions: list[str]) -> Iterator[Sample]:
    """The endless, deterministic stream of training networks (same seed, same stream: resume works).

    int8 alternates between the builder's QDQ layout and onnxruntime's `quantize_static` output."""
    for sid, kind, model in _draws(seed, precisions):
        yield Sample(sid, kind, ort_quantized(model, seed + sid) if kind == "net-int8-ort" else model)


def _draws(seed: int, precisions: list[str]) -> Iterator[tuple[int, str, onnx.ModelProto]]:
    """`samples` before quantization (the float network of a `net-int8-ort` sample): re-timing walks
    the stream to rebuild a few networks and quantizes only those."""
    rng = np.random.default_rng(seed)
    sid = seed * SEED_STRIDE  # sample ids of different seeds never collide: a run with another seed extends a table
    while True:
        for prec in precisions:
            sid += 1
            quantizer = prec == "int8" and rng.random() < 0.5
            model = training_network(rng, prec == "int8" and not quantizer, seed + sid, stem_kernels(seed),
                                     deep_share(seed))
            if network_macs(extract_kernels(model, "openvino")) > MAX_MACS:
                continue
            kind = "net-int8-ort" if quantizer else f"net-{prec}" + ("-builder" if prec == "int8" else "")
            yield sid, kind, model


def burst_ms(session: Session, feeds: dict[str, np.ndarray], runs: int, *, cpu: bool) -> float:
    """Per-run ms of a burst of `runs` calls; with `cpu`, the process's CPU time instead of wall time
    (why the CPU clock at one thread: `hwopt.runtimes.timing_clock`)."""
    return float(time_session(session, feeds, warmup=0, runs=runs, clock="cpu" if cpu else "wall").mean())


def measure(session: Session, feeds: dict[str, np.ndarray], *, target_ms: float = 100.0, cpu: bool = True) -> float:
    """Robust per-run ms: warm up, time 16 bursts worth ~target_ms in all, return the mean of the fastest quarter.

    A low trimmed mean, not the plain mean or median: on a shared machine other processes only ever
    add time, so the slow tail is someone else's work; averaging the fastest quarter (instead of
    taking the single fastest burst) keeps one lucky timer tick from setting the number.
    """
    for _ in range(5):
        session.run(feeds)
    first = burst_ms(session, feeds, 1, cpu=cpu)
    runs = int(np.clip(target_ms / max(first, 1e-3), 16, 400))
    return fast_mean(np.array([burst_ms(session, feeds, max(1, runs // 16), cpu=cpu) for _ in range(16)]))


def fast_mean(times: np.ndarray, share: float = 0.25) -> float:
    """Mean of the fastest `share` of the runs (at least one)."""
    t = np.sort(np.asarray(times, float))
    return float(t[: max(1, int(len(t) * share))].mean())


def measure_interleaved(models: Sequence[onnx.ModelProto], runtime: str, *, threads: int = 1, shapes=None,
                        rounds: int = 8, target_ms: float = 200.0) -> list[float]:
    """Measure several models round-robin (two bursts of runs of each, `rounds` times over).

    A load spike then lands on every model alike instead of on whichever was being timed, which
    is what makes predicted-vs-measured comparisons on a shared machine repeatable. `shapes` is
    one mapping for all models or a list with one per model (their input names differ). At one
    thread the clock is the process's CPU time (see `burst_ms`).
    """
    rt = get_runtime(runtime)
    cpu = threads == 1
    per_model = shapes if isinstance(shapes, list) else [shapes] * len(models)
    sessions, feeds, bursts = [], [], []
    for model, own in zip(models, per_model):
        sess = rt.session(model, threads=threads, precision="fp32")
        f = random_inputs(model, resolve_input_shapes(model, own))
        for _ in range(5):
            sess.run(f)
        first = burst_ms(sess, f, 1, cpu=cpu)
        sessions.append(sess)
        feeds.append(f)
        bursts.append(int(np.clip(target_ms / rounds / 2 / max(first, 1e-3), 2, 50)))
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for i, (sess, f, n) in enumerate(zip(sessions, feeds, bursts)):
            times[i] += [burst_ms(sess, f, n, cpu=cpu) for _ in range(2)]
    return [fast_mean(np.array(t)) for t in times]


def measure_model(model: onnx.ModelProto, runtime: str, *, threads: int = 1, shapes=None) -> float:
    """Build a session for `model` and measure it (the same statistic the profiler uses)."""
    rt = get_runtime(runtime)
    sess = rt.session(model, threads=threads, precision="fp32")
    concrete = resolve_input_shapes(model, shapes)
    return measure(sess, random_inputs(model, concrete), cpu=threads == 1)


def _overhead_model() -> onnx.ModelProto:
    g = GraphBuilder((1, 8, 1, 1))
    return g.build([g.act(g.input, "Relu")])


def profile_table(
    target: str | DeviceProfile,
    runtime: str,
    out: str | os.PathLike,
    *,
    budget_min: float = 5.0,
    precisions: tuple[str, ...] = ("fp32", "int8"),
    threads: int = 1,
    seed: int = 0,
    max_samples: int | None = None,
    retime_passes: int = 0,
    on_progress: Callable[[float, int], None] | None = None,
) -> LatencyTable:
    """Profile training networks for `budget_min` minutes or `max_samples` samples, whichever ends
    first (resuming a partial run), re-time them `retime_passes` times over (`retime_profile`; 0:
    not), then write the table and its predictor."""
    dev = target if isinstance(target, DeviceProfile) else load_device(target)
    if not dev.present_here:
        raise HwoptError(f"target {dev.name} is not present here (present_here: false); it can only be predicted")
    if runtime not in dev.runtimes:
        raise HwoptError(f"target {dev.name} has no runtime {runtime!r}; its runtimes are {', '.join(dev.runtimes)}")
    rt = get_runtime(runtime)
    if not rt.available():
        raise HwoptError(f"runtime {runtime} is not installed here")
    bad = set(precisions) - {"fp32", "int8"}
    if bad:
        raise HwoptError(f"profile precisions must be fp32 and/or int8, got {sorted(bad)}")
    out = Path(out)
    partial = samples_path(out)
    done = read_samples(partial, repair=True)
    overheads = [r for r in done.values() if r["kind"] == "overhead"]
    deadline = time.monotonic() + budget_min * 60
    start = time.monotonic()
    with _open_log(partial, "a") as log:
        if not overheads:  # the per-call cost and the node profiler's per-event floor, timed a few times over
            tiny = _overhead_model()
            ms = float(np.median([measure_model(tiny, runtime, threads=threads) for _ in range(5)]))
            floor = event_floor_us(runtime, tiny, random_inputs(tiny, resolve_input_shapes(tiny, None)), threads=threads)
            overheads.append({"sid": 0, "kind": "overhead", "ms": ms, "event_floor_us": floor})
            log.write(json.dumps(overheads[0]) + "\n")
        for sample in samples(seed, list(precisions)):
            if time.monotonic() >= deadline or (max_samples is not None and _networks(done) >= max_samples):
                break
            if sample.sid in done:
                continue
            try:
                rec = profile_network(sample, runtime, threads=threads, overhead_ms=overheads[0]["ms"],
                                      floor_us=overheads[0].get("event_floor_us", 0.0))
            except HwoptError as exc:  # a runtime that rejects a generated model: record and move on
                rec = {"sid": sample.sid, "kind": "error", "error": str(exc)}
            log.write(json.dumps(rec, sort_keys=True) + "\n")
            log.flush()
            done[sample.sid] = rec
            if on_progress:
                on_progress(time.monotonic() - start, len(done))
    if retime_passes > 0 and retime_profile(out, runtime, passes=retime_passes, threads=threads, precisions=precisions):
        done = read_samples(partial)
    table = build_table(dev, runtime, done.values(), float(overheads[0]["ms"]), threads=threads,
                        precisions=list(precisions), predictor_name=out.with_suffix(".joblib").name, out=out)
    table.save(out)
    return table


def retime_profile(out: str | os.PathLike, runtime: str, *, passes: int = 3, threads: int = 1,
                   precisions: tuple[str, ...] = ("fp32", "int8"), max_networks: int | None = None,
                   seeds: Sequence[int] | None = None) -> int:
    """Time the profiled networks again end to end, `passes` round-robin passes, and record the fastest.

    CPU time on a shared machine is not a constant of the model: another job on the sibling
    hardware thread inflates it for minutes at a time, model by model (measured here: 3-21% on
    onnxruntime, 10-60% on OpenVINO under one memory-streaming job). A profile that ran while the
    machine was busy records its networks slow, and a table built from it over-predicts on a quiet
    machine. Other jobs only ever add time, so the fastest of several passes is the machine's
    quiet state; `build_table` rescales each re-timed network's kernels to it (see `network_levels`).
    Only networks that the current generator rebuilds with the recorded kernel sequence are
    re-timed. `seeds` re-times only the networks of those profile runs (e.g. a run added after the
    others were re-timed). Appends {"kind": "retime", "sid", "ms", "passes"} records and, when every
    run is re-timed, the speed probe's time in the same passes (`hwopt.latency.probe`, recorded in
    the table's provenance: it must describe the level of all the table's networks); returns how many.
    """
    out = Path(out)
    partial = samples_path(out)
    done = read_samples(partial, repair=True)
    wanted = {sid: r for sid, r in done.items() if r.get("kind", "").startswith("net-")}
    models: list[tuple[int, onnx.ModelProto]] = []
    runs = sorted({sid // SEED_STRIDE for sid in wanted})
    for seed in runs if seeds is None else [s for s in runs if s in seeds]:
        last = max(sid for sid in wanted if sid // SEED_STRIDE == seed)
        for sid, kind, model in _draws(seed, list(precisions)):
            if sid > last or (max_networks is not None and len(models) >= max_networks):
                break
            rec = wanted.get(sid)
            if rec is None or rec["kind"] != kind or list(rec["kernels"][0]["inputs"][0]) != [
                    d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]:
                continue  # cheap test first: another generator version drew another network here
            if kind == "net-int8-ort":
                model = ort_quantized(model, seed + sid)
            placement = observed_placement(model) if runtime == "onnxruntime" else None
            if [k.key for k in extract_kernels(model, runtime, placement=placement)] == [
                    Kernel.from_dict(k).key for k in rec["kernels"]]:
                models.append((sid, model))
    if not models:
        return 0
    # the speed probe runs in the same round-robin: its fastest pass is the machine level the table gets
    probe = [probe_model()] if seeds is None else []
    timed = np.array([measure_interleaved([m for _, m in models] + probe, runtime, threads=threads)
                      for _ in range(passes)]).min(axis=0)
    with _open_log(partial, "a") as log:
        for (sid, _), ms in zip(models, timed):
            log.write(json.dumps({"sid": -sid, "kind": "retime", "net": sid, "ms": round(float(ms), 6),
                                  "passes": passes}) + "\n")
        if probe:
            log.write(json.dumps(probe_record(timed[-1], passes)) + "\n")
    return len(models)


def network_levels(records) -> tuple[dict[int, float], dict]:
    """Per profiled network, the factor that brings its recorded times to the machine's quiet state.

    A re-timed network (`retime_profile`) gets fastest ms / recorded ms (the recorded time counts as
    a pass, so the factor is at most 1). The others get the
    median factor of their seed's run; a run with no re-timed network is placed relative to one
    that has them through the kernel signatures both ran (median log ratio of their times), since
    each profile run met its own machine load. With no re-timing at all every factor is 1."""
    nets = {r["sid"]: r for r in records if r.get("kind", "").startswith("net-")}
    # the profile's own timing was one more pass: a network never gets slower than it was recorded
    direct = {r["net"]: min(r["ms"] / nets[r["net"]]["ms"], 1.0) for r in records
              if r.get("kind") == "retime" and r.get("net") in nets and nets[r["net"]]["ms"] > 0}
    if not direct:
        return {sid: 1.0 for sid in nets}, {"retimed_networks": 0}
    seeds = sorted({sid // SEED_STRIDE for sid in nets})
    seed_factor = {s: float(np.median([f for sid, f in direct.items() if sid // SEED_STRIDE == s]))
                   for s in seeds if any(sid // SEED_STRIDE == s for sid in direct)}
    anchors = dict(seed_factor)
    if len(anchors) < len(seeds):
        per_key: dict[str, dict[int, list[float]]] = {}
        for sid, r in nets.items():
            for k, t in zip(r["kernels"], r["kernel_ms"]):
                per_key.setdefault(Kernel.from_dict(k).key, {}).setdefault(sid // SEED_STRIDE, []).append(t)
        for s in seeds:
            if s in anchors:
                continue
            best = None
            for a in anchors:
                logs = [np.log(np.median(d[s]) / np.median(d[a])) for d in per_key.values()
                        if s in d and a in d and min(np.median(d[s]), np.median(d[a])) > MIN_KERNEL_MS]
                if logs and (best is None or len(logs) > best[1]):
                    best = (anchors[a] / float(np.exp(np.median(logs))), len(logs))
            seed_factor[s] = best[0] if best else float(np.median(list(anchors.values())))
    levels = {sid: direct.get(sid, seed_factor[sid // SEED_STRIDE]) for sid in nets}
    return levels, {"retimed_networks": len(direct),
                    "seed_factors": {str(s): round(f, 4) for s, f in sorted(seed_factor.items())},
                    "method": ("each network's times scaled to the fastest of several round-robin re-timing passes "
                               "(retime_profile); runs without re-timed networks placed through shared kernel "
                               "signatures")}


def profile_network(sample: Sample, runtime: str, *, threads: int = 1, floor_us: float = 0.0,
                    overhead_ms: float = 0.0) -> dict:
    """One network's record: its kernels, their in-context ms and the end-to-end ms (CPU clock).

    The kernels share out the end-to-end time less the per-inference `overhead_ms` in proportion to
    their profiled event times (less the profiler's `floor_us` per event)."""
    placement = observed_placement(sample.model) if runtime == "onnxruntime" else None
    kernels = extract_kernels(sample.model, runtime, placement=placement)
    total = measure_model(sample.model, runtime, threads=threads)
    feeds = random_inputs(sample.model, resolve_input_shapes(sample.model, None))
    try:
        events = event_times(sample.model, runtime, feeds, int(np.clip(PROFILED_MS / max(total, 1e-3), 8, 40)),
                             threads=threads)
    except Exception as exc:  # noqa: BLE001 - the runtimes raise their own types for a model they reject
        raise HwoptError(f"{runtime} cannot profile the network: {str(exc).strip().splitlines()[0]}") from None
    wall, unmatched = kernel_times(kernels, events, floor_us)
    # node events are wall time, which a shared VM inflates (here often 2x, even the fastest runs: steal
    # time); they give each kernel's share, the CPU-clock end-to-end time gives the total to share out
    ms = wall * (max(total - overhead_ms, 0.0) / wall.sum()) if wall.sum() > 0 else wall
    return {"sid": sample.sid, "kind": sample.kind, "ms": total, "kernels": [k.to_dict() for k in kernels],
            "kernel_ms": [round(float(max(t, MIN_KERNEL_MS)), 6) for t in ms], "unmatched_events": unmatched,
            "event_wall_ms": round(float(wall.sum()), 6)}


def _networks(done: dict[int, dict]) -> int:
    """Sample records so far (re-timing and speed-probe records do not count as samples)."""
    return sum(1 for r in done.values() if r.get("kind") not in ("retime", "probe"))


def samples_path(out: str | os.PathLike) -> Path:
    """The table's raw log: `<table>.samples.jsonl`, or its gzipped copy when only that exists."""
    plain = Path(out).with_suffix(".samples.jsonl")
    packed = plain.with_name(plain.name + ".gz")
    return packed if packed.is_file() and not plain.is_file() else plain


def _open_log(path: Path, mode: str):
    """Text handle on a log; appending to a gzipped one adds a gzip member (still one valid file)."""
    return gzip.open(path, mode + "t") if path.suffix == ".gz" else path.open(mode)


def read_samples(path: Path, *, repair: bool = False) -> dict[int, dict]:
    """Records of a (possibly interrupted) run by sample id; a torn last line is ignored.

    A run killed mid-write leaves a torn line, or in a gzipped log a cut member; with `repair` the
    log is made appendable again (the torn line ended; a gzipped log rewritten with its complete lines)."""
    if not path.is_file():
        return {}
    lines: list[str] = []
    cut = False
    try:
        with _open_log(path, "r") as f:
            for line in f:
                lines.append(line)
    except (EOFError, gzip.BadGzipFile):  # a gzip member cut short: the lines before the cut stay
        cut = True
    torn = bool(lines) and not lines[-1].endswith("\n")
    if repair and (cut or torn):
        if path.suffix == ".gz":
            atomic_write_bytes(gzip.compress("".join(x for x in lines if x.endswith("\n")).encode()), path)
        else:
            with path.open("a") as log:
                log.write("\n")
    done: dict[int, dict] = {}
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[rec["sid"]] = rec
    return done


def build_table(dev: DeviceProfile, runtime: str, records, overhead_ms: float, *, threads: int,
                precisions: list[str], predictor_name: str, out: Path) -> LatencyTable:
    """Turn network records into a table: per-signature medians of the in-context kernel times,
    the roofline fallback, the trained predictor and the network-sum model."""
    records = list(records)
    levels, level_info = network_levels(records)
    networks = [([Kernel.from_dict(k) for k in r["kernels"]], [t * levels[r["sid"]] for t in r["kernel_ms"]],
                 r["ms"] * levels[r["sid"]]) for r in records if r.get("kind", "").startswith("net-")]
    klist, ms, counts = _medians(networks)
    if len(klist) < 10:
        raise HwoptError(f"only {len(klist)} kernels measured; give the profile a larger --budget-min")
    roof = fit_roofline([[k] for k in klist], ms, dev, threads=threads, per_kernel=True,
                        max_memory_efficiency=CACHED_MEMORY_EFFICIENCY)
    predictor = train_predictor(klist, ms, dev, roof, weights=counts)
    predictor.save(out.with_suffix(".joblib"))
    scale, per_kernel, per_model, fit, calibration = fit_network_sum(networks, dev, roof, overhead_ms)
    table = LatencyTable(
        device=dev.name, runtime=runtime, threads=threads, method="measured", roofline=roof,
        overhead_ms=per_model, kernel_scale=scale, kernel_overhead_ms=per_kernel, predictor=predictor_name,
        predictor_calibration=calibration,
        provenance={
            "measured_on": host_device(),
            "runtime_version": get_runtime(runtime).version(),
            "date": dt.date.today().isoformat(),
            "threads": threads,
            "precisions": precisions,
            "method": ("kernels timed inside random training networks with the runtime's node profiler "
                       "(hwopt.latency.networks / node_times); entry = median over the networks it ran in"),
            "statistic": ("network: process CPU time per run (1 thread; wall time with more), mean of the fastest "
                          "quarter of 16 bursts, shared out over its kernels by their profiled event times (mean of "
                          "the fastest half of 8-40 runs, less the profiler's per-event floor)"),
            "networks": len(networks),
            "kernel_samples": int(sum(counts)),
            "signatures": len(klist),
            "session_overhead_ms": round(overhead_ms, 6),
            "network_sum_fit": fit,
            "machine_level": level_info,
            **({"speed_probe": probe} if (probe := probe_provenance(records)) else {}),
        },
    )
    for k, m in zip(klist, ms):
        table.add(k, m)
    return table


def _medians(networks) -> tuple[list[Kernel], list[float], list[int]]:
    """One row per kernel signature: the median of its in-context times, and how many there were."""
    per_key: dict[str, list[float]] = {}
    kernels: dict[str, Kernel] = {}
    for ks, kms, _ in networks:
        for k, t in zip(ks, kms):
            per_key.setdefault(k.key, []).append(t)
            kernels[k.key] = k
    keys = sorted(kernels)
    return [kernels[k] for k in keys], [float(np.median(per_key[k])) for k in keys], [len(per_key[k]) for k in keys]


def fit_network_sum(networks, dev: DeviceProfile, roof, session_overhead_ms: float, *, folds: int = 4
                    ) -> tuple[float, float, float, dict, dict[str, float]]:
    """Fit network_ms = scale * sum(kernel ms) + per_kernel * kernels + per_model on held-out folds,
    and the predictor's per-class calibration (`LatencyTable.predictor_calibration`).

    In-sample the kernels add up to the network by construction; what a prediction needs is how
    the sum of *looked-up and predicted* kernels relates to a network it has not seen. So each
    fold's networks are priced from a table and predictor built on the other folds. The kernels
    whose signature no other fold ran are what predict meets in a new model; per kernel class,
    their measured over predicted time (ratio of sums, classes with 30+ such kernels) is the
    calibration. Then non-negative least squares in relative error fits the three numbers on the
    calibrated out-of-fold sums (the calibration, all of it or only its fp32 or int8 classes, is
    kept only if that prices the held-out folds better). With too few networks: scale 1 and the
    measured session overhead."""
    if len(networks) < 4 * folds:
        return 1.0, 0.0, session_overhead_ms, {"networks": len(networks), "fitted": False}, {}
    fold = np.arange(len(networks)) % folds
    looked_up = np.zeros(len(networks))
    guesses: list[tuple[int, Kernel, float, float]] = []  # network, kernel, predicted ms, measured ms
    for f in range(folds):
        klist, ms, counts = _medians([n for n, i in zip(networks, fold) if i != f])
        entries = {k.key: m for k, m in zip(klist, ms)}
        pred = train_predictor(klist, ms, dev, roof, weights=counts, trees=100)
        for i in np.flatnonzero(fold == f):
            ks, kms = networks[i][0], networks[i][1]
            missing = [(k, t) for k, t in zip(ks, kms) if k.key not in entries]
            looked_up[i] = sum(entries[k.key] for k in ks if k.key in entries)
            if missing:
                guessed = pred.predict([k for k, _ in missing], dev, roof)
                guesses += [(int(i), k, float(g), float(t)) for (k, t), g in zip(missing, guessed)]
    e2e = np.array([n[2] for n in networks], float)
    count = np.array([len(n[0]) for n in networks], float)
    chosen, calibration, fits = choose_calibration(looked_up, guesses, e2e, count, session_overhead_ms)
    fit = fits[chosen]
    return fit["scale"], fit["per_kernel"], fit["per_model"], {
        "networks": len(networks), "fitted": True, "folds": folds, "left_out_3x_off": fit["left_out"],
        "predicted_kernels": len(guesses), "predictor_calibration": chosen,
        "scale": round(fit["scale"], 4),
        "per_kernel_us": round(fit["per_kernel"] * 1e3, 3), "per_model_us": round(fit["per_model"] * 1e3, 3),
        "out_of_fold_mean_abs_rel_error": {"plain_sum": round(fits["uncalibrated"]["plain_mean"], 4),
                                           **{n: round(f["mean"], 4) for n, f in fits.items()}},
        "out_of_fold_within_10pct": {"plain_sum": round(fits["uncalibrated"]["plain_within"], 4),
                                     **{n: round(f["within"], 4) for n, f in fits.items()}},
    }, calibration


def choose_calibration(looked_up: np.ndarray, guesses, e2e: np.ndarray, count: np.ndarray,
                       session_overhead_ms: float) -> tuple[str, dict[str, float], dict[str, dict]]:
    """Which predictor calibration prices the held-out folds best: none, all of it, or only its fp32
    or only its int8 classes (OpenVINO's fp32 trees were biased less than onnxruntime's, and the
    two precisions need not agree). `looked_up`: per network, the out-of-fold sum of its table
    hits; `guesses`: (network, kernel, predicted ms, measured ms) for the rest. A choice made on
    the training networks only; ties keep the uncalibrated predictor."""
    calibration = _calibration(guesses)
    owner = np.array([i for i, *_ in guesses], dtype=int)

    def priced(cal: dict[str, float]) -> np.ndarray:
        return looked_up + np.bincount(owner, [g * cal.get(calibration_class(k), cal.get(
            calibration_class(k, coarse=True), 1.0)) for _, k, g, _ in guesses], len(looked_up))

    options = {"uncalibrated": {}, "calibrated": calibration,
               **{f"calibrated_{dtype}_only": {c: v for c, v in calibration.items() if c.split("/")[1] == dtype}
                  for dtype in ("fp32", "int8")}}
    fits = {name: _fit_sum(priced(cal), e2e, count, session_overhead_ms) for name, cal in options.items()}
    chosen = min(fits, key=lambda name: (fits[name]["mean"], name != "uncalibrated"))
    return chosen, options[chosen], fits


def _fit_sum(oof: np.ndarray, e2e: np.ndarray, count: np.ndarray, session_overhead_ms: float) -> dict:
    """NNLS in relative error of network ms on (kernel sum, kernel count, 1), and its errors.

    Squared relative error lets a few networks priced 3x off (a kernel no other fold ran) set the
    fit; those are left out of it (and counted)."""
    from scipy.optimize import nnls

    ratio = (oof + session_overhead_ms) / e2e
    keep = (ratio > 1 / 3) & (ratio < 3)
    a = np.column_stack([oof, count, np.ones(len(e2e))])[keep] / e2e[keep, None]
    (scale, per_kernel, per_model), _ = nnls(a, np.ones(int(keep.sum())))
    before = np.abs(ratio - 1)
    after = np.abs((scale * oof + per_kernel * count + per_model) / e2e - 1)
    return {"scale": float(scale), "per_kernel": float(per_kernel), "per_model": float(per_model),
            "left_out": int((~keep).sum()), "mean": float(after.mean()), "within": float(np.mean(after <= 0.1)),
            "plain_mean": float(before.mean()), "plain_within": float(np.mean(before <= 0.1))}


def _calibration(guesses, min_kernels: int = 30) -> dict[str, float]:
    """Measured / predicted time (ratio of sums) per kernel class and per coarse class, from
    out-of-fold predictions; classes with fewer than `min_kernels` kernels are left at 1."""
    sums: dict[str, list[float]] = {}
    for _, k, g, t in guesses:
        for cls in {calibration_class(k), calibration_class(k, coarse=True)}:
            acc = sums.setdefault(cls, [0.0, 0.0, 0])
            acc[0] += t
            acc[1] += g
            acc[2] += 1
    return {cls: float(np.clip(t / g, 0.25, 4.0)) for cls, (t, g, n) in sorted(sums.items())
            if n >= min_kernels and g > 0}
