"""Per-kernel times inside a running network, read from the runtime's own node profiler.

Isolated single-kernel measurements do not add up to a network's time: inside a network a
kernel's input is already in the runtime's blocked layout (or needs a reorder), sits in cache or
not, and tiny kernels pay dispatch costs an isolated session hides in its fixed overhead. Both
runtimes can time every executed node of a real session: onnxruntime writes a JSON trace
(`SessionOptions.enable_profiling`, one event per node run with `dur` in µs) and OpenVINO reports
`profiling_info` per executed layer (`real_time`; fused layers say NOT_RUN). This module runs a
network with that profiling on and charges every event to the hwopt kernel whose ONNX nodes it
came from, so each kernel gets the time it really takes in context.

Events are matched by name: the runtimes name a fused or rewritten node after one of the
original nodes (`relu_4_nchwc`, `conv_12_token_30`, `conv_3/WithoutBiases`). Events named after
no kernel node (layout reorders, NHWC transposes, quantize steps the runtime inserted or kept)
are charged to the next kernel that runs, because the runtime inserts them for that consumer.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import onnx

from hwopt.errors import HwoptError
from hwopt.latency.kernels import Kernel

_SEPARATORS = ("_", "/", ":", ".")


def event_times(model: onnx.ModelProto, runtime: str, feeds: dict[str, np.ndarray], runs: int, *,
                threads: int = 1) -> list[tuple[str, float]]:
    """(event name, µs) per executed node in execution order: the mean of the fastest half of `runs`.

    The fastest half, because on a shared machine preemption only ever adds time to an event."""
    if runtime == "onnxruntime":
        per_run = _ort_events(model, feeds, runs, threads)
    elif runtime == "openvino":
        per_run = _ov_events(model, feeds, runs, threads)
    else:
        raise HwoptError(f"node profiling is implemented for onnxruntime and openvino, not {runtime!r}")
    out = []
    for name, times in per_run.items():
        t = np.sort(np.asarray(times, float))
        out.append((name, float(t[: max(1, len(t) // 2)].mean())))
    return out


def _ort_events(model: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int, threads: int) -> dict[str, list[float]]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as the measured sessions
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "trace")
        sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        warmup = 2
        for _ in range(runs + warmup):
            sess.run(None, feeds)
        with open(sess.end_profiling()) as f:
            trace = json.load(f)
    per_run: dict[str, list[float]] = {}
    for ev in trace:
        name = ev.get("name", "")
        if ev.get("cat") == "Node" and name.endswith("_kernel_time"):
            per_run.setdefault(name[: -len("_kernel_time")], []).append(float(ev["dur"]))
    return {k: v[warmup:] or v for k, v in per_run.items()}


def _ov_events(model: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int, threads: int) -> dict[str, list[float]]:
    """Per-layer µs: the mean over the runs that no stall hit (one value per layer).

    OpenVINO's `profiling_info` holds each layer's *running average since the request's first
    inference* (a 256x1000 FullyConnected read 32 ms after one run, 1.1 ms after 30, at ~20 µs a
    run), so run n's time is n * avg_n - (n - 1) * avg_n-1. On this CPU-quota'd machine about one
    run in four stalls for 10-25 ms inside some layer; runs whose wall time is over 1.3x the
    fastest are left out (chosen per run, not per layer, so a layer's time is not biased low)."""
    import time

    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False, "PERF_COUNT": True})  # as hwopt's OpenVINO sessions
    request = compiled.create_infer_request()

    def totals(n: int) -> dict[str, float]:
        return {info.node_name: info.real_time.total_seconds() * 1e6 * n for info in request.profiling_info
                if str(info.status).endswith("EXECUTED") and info.node_type not in ("Parameter", "Result")}

    for _ in range(2):
        request.infer(feeds)
    before = totals(2)
    walls, deltas = [], []
    for n in range(3, 3 + min(runs, 24)):  # few runs: each total carries n x the µs rounding of the average
        t0 = time.perf_counter()
        request.infer(feeds)
        walls.append(time.perf_counter() - t0)
        after = totals(n)
        deltas.append({k: max(v - before.get(k, 0.0), 0.0) for k, v in after.items()})
        before = after
    clean = [d for d, w in zip(deltas, walls) if w <= 1.3 * min(walls)]
    return {name: [float(np.mean([d.get(name, 0.0) for d in clean]))] for name in deltas[-1]}


def owner_of(event: str, node_owner: dict[str, int]) -> int | None:
    """The kernel index whose node names `event` (exactly, or as a prefix followed by a separator).

    The longest such node name wins, so `conv_31_fused` goes to `conv_31`, not to `conv_3`."""
    if event in node_owner:
        return node_owner[event]
    for cut in range(len(event) - 1, 0, -1):  # from the right: the first hit is the longest prefix
        if event[cut] in _SEPARATORS and event[:cut] in node_owner:
            return node_owner[event[:cut]]
    return None


def kernel_times(kernels: Sequence[Kernel], events: Sequence[tuple[str, float]], floor_us: float = 0.0
                 ) -> tuple[np.ndarray, int]:
    """Per-kernel ms from profiled events, and how many events matched no kernel node directly.

    `floor_us` is what the profiler itself adds to every event (the time it reports for a node
    that does nearly nothing, see `event_floor_us`); it is taken off each event, or the many tiny
    nodes of a quantized network would add up to more than the network's measured time.
    Unmatched events (reorders, transposes, kept Q/DQ) go to the next matched kernel in execution
    order; trailing ones to the last kernel that ran."""
    node_owner = {n: i for i, k in enumerate(kernels) for n in k.nodes}
    ms = np.zeros(len(kernels))
    pending, unmatched, last = 0.0, 0, None
    for name, raw in events:
        us = max(raw - floor_us, 0.0)
        i = owner_of(name, node_owner)
        if i is None:
            pending += us
            unmatched += 1
            continue
        ms[i] += (us + pending) / 1e3
        pending, last = 0.0, i
    if pending and last is not None:
        ms[last] += pending / 1e3
    return ms, unmatched


def event_floor_us(runtime: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, threads: int = 1) -> float:
    """The profiler's per-event floor: the µs it reports for `model`'s node (a Relu over 8 values)."""
    return float(np.median([t for _ in range(5) for _, t in event_times(model, runtime, feeds, 20, threads=threads)]))
