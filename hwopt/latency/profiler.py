"""Profile a latency table on this machine: sample kernels and blocks, measure, fit, write.

Each sample is a tiny ONNX model (one kernel, or a block of a few) drawn from a seeded
configuration space (channels, resolution, kernel, stride, groups, expansion, activation,
residual, precision). Its kernels are found with the same fusion rules `predict` uses, so a
sample that the runtime runs as one kernel becomes a table entry, and a multi-kernel sample
calibrates how isolated kernel times compose inside a model. Results are appended to a partial
JSONL file as they come (`<table>.samples.jsonl`, kept as the raw data behind the table), so an
interrupted profile resumes where it stopped and a second run with the same seed extends it.
"""

from __future__ import annotations

import datetime as dt
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
from hwopt.graph.shapes import random_inputs, resolve_input_shapes
from hwopt.latency.analytical import fit_roofline, kernels_ms
from hwopt.latency.builders import GraphBuilder
from hwopt.latency.fusion import extract_kernels
from hwopt.latency.kernels import DTYPE_BYTES, Kernel
from hwopt.latency.predictor import train_predictor
from hwopt.latency.table import LatencyTable
from hwopt.runtimes import get_runtime
from hwopt.runtimes.base import Session, host_device, time_session

CHANNELS = [8, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512]
RESOLUTIONS = [4, 7, 8, 14, 16, 20, 28, 32, 40, 56, 64, 80, 112, 160]
ACTS = [None, "Relu", "Relu", "Relu6", "HardSwish", "Swish", "Sigmoid"]
MAX_MACS = 150e6  # keeps one sample under ~10 ms at one thread (detector layers reach this size)
MIN_BLOCK_MS = 0.02  # blocks faster than this are timer noise and dispatch: they would skew the composition fit


@dataclass
class Sample:
    sid: int
    kind: str
    model: onnx.ModelProto


def _pick(rng: np.random.Generator, values: list):
    return values[int(rng.integers(len(values)))]


def _sample_model(rng: np.random.Generator, int8: bool, seed: int) -> tuple[str, onnx.ModelProto] | None:
    """One random single-kernel or block model; None when the draw is too big."""
    res, c_in, c_out = _pick(rng, RESOLUTIONS), _pick(rng, CHANNELS), _pick(rng, CHANNELS)
    if res >= 56:
        c_in, c_out = min(c_in, 128 if res < 80 else 64), min(c_out, 128 if res < 80 else 64)
    g = GraphBuilder((1, c_in, res, res), int8=int8, seed=seed)
    x = g.input
    kind = str(rng.choice(["conv", "pwconv", "dwconv", "gemm", "pool", "eltwise", "act", "move", "block_ir",
                           "block_res", "block_seq"],
                          p=[0.19, 0.16, 0.14, 0.05, 0.06, 0.08, 0.05, 0.07, 0.09, 0.05, 0.06]))
    act = _pick(rng, ACTS)
    if kind == "conv":
        k, s = _pick(rng, [3, 3, 5, 7]), _pick(rng, [1, 1, 2])
        residual = x if (s == 1 and c_in == c_out and rng.random() < 0.3) else None
        y = g.conv(x, c_out if residual is None else c_in, k, s, act=act, residual=residual)
        macs = res * res / s / s * c_out * c_in * k * k
    elif kind == "pwconv":
        residual = x if (c_in == c_out and rng.random() < 0.3) else None
        y = g.conv(x, c_out, 1, 1, act=act, residual=residual)
        macs = res * res * c_in * c_out
    elif kind == "dwconv":
        k, s = _pick(rng, [3, 3, 5, 7]), _pick(rng, [1, 1, 2])
        c = _pick(rng, CHANNELS + [576, 672, 960]) if res <= 28 else c_in
        g = GraphBuilder((1, c, res, res), int8=int8, seed=seed)
        y = g.conv(g.input, c, k, s, g=c, act=act)
        macs = res * res * c * k * k
    elif kind == "gemm":
        n_in, n_out = _pick(rng, [64, 128, 256, 512, 1024, 1280]), _pick(rng, [10, 100, 256, 512, 1000])
        g = GraphBuilder((1, n_in), int8=int8, seed=seed)
        y = g.gemm(g.input, n_out, act=_pick(rng, [None, None, "Relu"]))
        macs = n_in * n_out
    elif kind == "pool":
        op = _pick(rng, ["MaxPool", "AveragePool", "GlobalAveragePool"])
        if op == "GlobalAveragePool":
            y = g.global_pool(x)
        else:
            k, s = _pick(rng, [(2, 2), (3, 2), (3, 1)])
            y = g.pool(x, op, k, s, pad=1 if (k, s) == (3, 1) else 0)
        macs = res * res * c_in
    elif kind == "eltwise":
        op = _pick(rng, ["add", "add", "mul_se", "concat"])
        if op == "add":
            y = g.add(x, g.act(x, "Relu"))
        elif op == "mul_se":
            y = g.mul(x, g.global_pool(x))
        else:
            y = g.concat([x, g.act(x, "Relu")])
        macs = res * res * c_in
    elif kind == "act":
        y = g.act(x, _pick(rng, ["Relu", "Sigmoid", "HardSwish", "HardSigmoid", "Swish", "Relu6"]))
        macs = res * res * c_in
    elif kind == "move":  # detector necks and heads: upsampling, layout changes, softmax over channels
        op = _pick(rng, ["resize", "transpose", "softmax"])
        if op == "resize":
            y = g.resize(x, 2)
        elif op == "transpose":
            y = g.transpose(x, [0, 2, 3, 1])
        else:
            y = g.softmax(x, axis=1)
        macs = res * res * c_in * (4 if op == "resize" else 1)
    elif kind == "block_seq":  # a few layers of a small network: how kernels compose at model scale
        c = min(c_in, 48 if res >= 56 else 128)
        g = GraphBuilder((1, c, res, res), int8=int8, seed=seed)
        a = act or "Relu"
        y = g.conv(g.input, c, 3, _pick(rng, [1, 2]), act=a)
        y = g.conv(y, c, 3, 1, g=c, act=a)
        y = g.conv(y, c_out if res < 56 else min(c_out, 64), 1, act=a)
        y = g.conv(y, g.shapes[y][1], 3, 1, act=a, residual=y if rng.random() < 0.5 else None)
        macs = res * res * c * (c * 9 + 9 + c_out + c_out * 9)
    elif kind == "block_ir":  # MobileNetV2/EfficientNet inverted residual, optional SE
        e, k, s = _pick(rng, [1, 3, 4, 6]), _pick(rng, [3, 5]), _pick(rng, [1, 2])
        c_in = min(c_in, 64 if res >= 28 else 160)
        g = GraphBuilder((1, c_in, res, res), int8=int8, seed=seed)
        hid = c_in * e
        a = act or "Relu"
        y = g.conv(g.input, hid, 1, act=a) if e > 1 else g.input
        y = g.conv(y, hid, k, s, g=hid, act=a)
        if rng.random() < 0.3:
            sq = g.conv(g.global_pool(y), max(8, hid // 4), 1, act="Relu")
            y = g.mul(y, g.conv(sq, hid, 1, act="HardSigmoid"))
        c_out = c_in if s == 1 and rng.random() < 0.6 else _pick(rng, CHANNELS[:10])
        y = g.conv(y, c_out, 1, residual=g.input if (s == 1 and c_out == c_in) else None)
        macs = res * res * (2 * c_in * hid + hid * k * k)
    else:  # ResNet basic block
        c = min(c_in, 128)
        g = GraphBuilder((1, c, res, res), int8=int8, seed=seed)
        y = g.conv(g.input, c, 3, act="Relu")
        y = g.conv(y, c, 3, act="Relu", residual=g.input)
        macs = 2 * res * res * c * c * 9
    if macs > MAX_MACS:
        return None
    return kind, g.build([y])


def samples(seed: int, precisions: list[str]) -> Iterator[Sample]:
    """The endless, deterministic stream of samples (same seed, same stream: that makes resume work)."""
    rng = np.random.default_rng(seed)
    sid = 0
    while True:
        for prec in precisions:
            drawn = _sample_model(rng, prec == "int8", seed + sid)
            sid += 1
            if drawn is not None:
                yield Sample(sid, drawn[0] + ("" if prec == "fp32" else "-int8"), drawn[1])


def burst_ms(session: Session, feeds: dict[str, np.ndarray], runs: int, *, cpu: bool) -> float:
    """Per-run ms of a burst of `runs` calls; with `cpu`, the process's CPU time instead of wall time.

    With one intra-op thread, an inference is one thread's work, so its CPU time is its latency on
    an idle machine. On this shared, CPU-quota'd container wall time is not: another engineer's
    jobs throttled a 1-thread YOLOv8n run to 70 ms wall while it used 24 ms of CPU. The CPU clock
    leaves out the waiting (cache sharing still shows), so numbers repeat under load.
    """
    if not cpu:
        return float(time_session(session, feeds, warmup=0, runs=runs).mean())
    c0 = time.process_time()
    time_session(session, feeds, warmup=0, runs=runs)
    return (time.process_time() - c0) * 1e3 / runs


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
    on_progress: Callable[[float, int], None] | None = None,
) -> LatencyTable:
    """Measure kernels for `budget_min` minutes or `max_samples` samples, whichever ends first
    (resuming a partial run), then write the table and its predictor."""
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
    partial = out.with_suffix(".samples.jsonl")
    done = _read_partial(partial)
    overheads = [r["ms"] for r in done.values() if r["kind"] == "overhead"]
    deadline = time.monotonic() + budget_min * 60
    start = time.monotonic()
    if partial.is_file() and partial.stat().st_size and not partial.read_bytes().endswith(b"\n"):
        with partial.open("a") as log:  # a run killed mid-write left a torn line: end it, it is skipped
            log.write("\n")
    with partial.open("a") as log:
        if not overheads:  # the per-call cost every sample pays once, timed a few times over
            ms = float(np.median([measure_model(_overhead_model(), runtime, threads=threads) for _ in range(5)]))
            log.write(json.dumps({"sid": 0, "kind": "overhead", "ms": ms}) + "\n")
            overheads.append(ms)
        for sample in samples(seed, list(precisions)):
            if time.monotonic() >= deadline or (max_samples is not None and len(done) >= max_samples):
                break
            if sample.sid in done:
                continue
            kernels = extract_kernels(sample.model, runtime)
            try:
                ms = measure_model(sample.model, runtime, threads=threads)
            except HwoptError as exc:  # a runtime that rejects a generated model: record and move on
                log.write(json.dumps({"sid": sample.sid, "kind": "error", "error": str(exc)}) + "\n")
                continue
            rec = {"sid": sample.sid, "kind": sample.kind, "ms": ms, "kernels": [k.to_dict() for k in kernels]}
            log.write(json.dumps(rec, sort_keys=True) + "\n")
            log.flush()
            done[sample.sid] = rec
            if on_progress:
                on_progress(time.monotonic() - start, len(done))
    table = build_table(dev, runtime, done.values(), float(np.median(overheads)), threads=threads,
                        precisions=list(precisions), predictor_name=out.with_suffix(".joblib").name, out=out)
    table.save(out)
    return table


def _read_partial(path: Path) -> dict[int, dict]:
    """Records of an interrupted run; a torn last line (killed mid-write) is ignored."""
    done: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[rec["sid"]] = rec
    return done


def build_table(dev: DeviceProfile, runtime: str, records, overhead_ms: float, *, threads: int,
                precisions: list[str], predictor_name: str, out: Path) -> LatencyTable:
    """Turn measured records into a table: entries, roofline fallback, trained predictor, composition."""
    singles: dict[str, list[float]] = {}
    kernels: dict[str, Kernel] = {}
    blocks: list[tuple[list[Kernel], float]] = []
    for r in records:
        if r["kind"] in ("overhead", "error"):
            continue
        ks = [Kernel.from_dict(k) for k in r["kernels"]]
        net = max(r["ms"] - overhead_ms, 1e-4)
        if len(ks) == 1:
            singles.setdefault(ks[0].key, []).append(net)
            kernels[ks[0].key] = ks[0]
        elif net >= MIN_BLOCK_MS:
            blocks.append((ks, net))
    if len(kernels) < 10:
        raise HwoptError(f"only {len(kernels)} kernels measured; give the profile a larger --budget-min")
    keys = sorted(kernels)
    ms = [float(np.median(singles[k])) for k in keys]
    klist = [kernels[k] for k in keys]
    roof = fit_roofline([[k] for k in klist], ms, dev, threads=threads, per_kernel=True)
    predictor = train_predictor(klist, ms, dev, roof)
    predictor.save(out.with_suffix(".joblib"))
    table = LatencyTable(
        device=dev.name, runtime=runtime, threads=threads, method="measured", roofline=roof,
        overhead_ms=overhead_ms, predictor=predictor_name,
        provenance={
            "measured_on": host_device(),
            "runtime_version": get_runtime(runtime).version(),
            "date": dt.date.today().isoformat(),
            "threads": threads,
            "precisions": precisions,
            "statistic": ("process CPU time per run (1 thread; wall time with more), mean of the fastest quarter "
                          "of 16 bursts (16-400 runs in all), minus the per-inference overhead"),
            "single_kernels": len(keys),
            "blocks": len(blocks),
        },
    )
    for k, m in zip(klist, ms):
        table.add(k, m)
    if blocks:
        table.provenance["composition"] = _fit_composition(blocks, table, dev, predictor)
    return table


def _fit_composition(blocks, table: LatencyTable, dev: DeviceProfile, predictor) -> dict:
    """Per dtype, fit block_ms = scale * sum(isolated) - per_byte * (kernel I/O bytes - block I/O bytes).

    An isolated kernel pays the layout reorder, copy and (int8) quantization of its own input and
    output; inside a block only the block's outer input and output are paid, so the inner bytes
    are what to take off. int8 and fp32 blocks differ a lot here, so each gets its own pair.
    """
    report = {}
    for dtype in sorted({ks[0].dtype for ks, _ in blocks}):
        chosen = [(ks, net) for ks, net in blocks if ks[0].dtype == dtype]
        per_block, inner = [], []
        for ks, _ in chosen:
            known = [table.entries.get(k.key) for k in ks]
            learned = [k for k, v in zip(ks, known) if v is None and predictor.covers(k)]
            guessed = dict(zip([k.key for k in learned], predictor.predict(learned, dev, table.roofline))) if learned else {}
            per_block.append(np.array([
                v if v is not None else guessed.get(k.key) or float(kernels_ms([k], dev, table.roofline)[0])
                for k, v in zip(ks, known)
            ]))
            outer = DTYPE_BYTES.get(dtype, 4) * (np.prod(ks[0].inputs[0]) + np.prod(ks[-1].output))
            inner.append(sum(k.io_bytes for k in ks) - outer)
        e = np.array([b.sum() for b in per_block])
        d = np.array(inner, float)
        m = np.array([net for _, net in chosen])
        (scale, per_byte), *_ = np.linalg.lstsq(np.column_stack([e / m, -d / m]), np.ones(len(m)), rcond=None)
        if per_byte < 0 or scale <= 0:  # the data do not support a reorder term: a pure scale
            scale, per_byte = float(np.median(m / e)), 0.0
        table.composition[dtype] = [float(scale), float(per_byte)]
        pred = np.array([table.in_model_ms(b, np.array([k.io_bytes for k in ks]), [dtype] * len(ks)).sum()
                         for b, (ks, _) in zip(per_block, chosen)])
        report[dtype] = {"scale": round(float(scale), 4), "ms_per_MB": round(float(per_byte) * 1e6, 4),
                         "blocks": len(m), "block_mean_abs_rel_error": round(float(np.mean(np.abs(pred / m - 1))), 4)}
    return report
