"""Predict a model's latency on a target: cut into kernels, look each up, predict the rest, sum.

Every per-kernel number says where it came from: `table` (a profiled kernel with this exact
signature), `predictor` (the learned correction on top of the table's roofline), `fallback`
(the roofline alone, for an op family the table never profiled) or `analytical` (the target has
no measured table; a calibrated roofline). The search stage calls this thousands of times, so
tables, predictors and per-key results are cached and `predict_kernels` skips graph parsing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx

from hwopt.devices import DeviceProfile, load_device
from hwopt.errors import HwoptError
from hwopt.graph.load import load_model
from hwopt.graph.shapes import Shapes
from hwopt.latency.analytical import kernels_ms
from hwopt.latency.fusion import BodyKernel, extract_kernels
from hwopt.latency.kernels import Kernel
from hwopt.latency.ort_qdq import observed_placement
from hwopt.latency.predictor import KernelPredictor
from hwopt.latency.table import LatencyTable, load_table, tables_dir


@dataclass
class LayerLatency:
    name: str
    op: str
    latency_ms: float
    source: str  # table | predictor | fallback | analytical
    kernel: str  # the table key
    nodes: list[str] = field(default_factory=list)
    note: str = ""  # why a number is less certain than its source says (a kernel inside control flow)


@dataclass
class Prediction:
    target: str
    runtime: str
    threads: int | None
    latency_ms: float
    layers: list[LayerLatency]
    provenance: dict

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def sources(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for layer in self.layers:
            out[layer.source] = out.get(layer.source, 0) + 1
        return out


@lru_cache(maxsize=64)
def _named_device(name: str) -> DeviceProfile:
    return load_device(name)


def _device(target: str | DeviceProfile) -> DeviceProfile:
    """Profiles by name are parsed once per process (YAML + validation would dominate a search's calls)."""
    return target if isinstance(target, DeviceProfile) else _named_device(target)


def resolve_table(target: str | DeviceProfile, runtime: str | None = None,
                  table: str | os.PathLike | None = None) -> tuple[DeviceProfile, LatencyTable]:
    """The device and the latency table to use (an explicit file, else the one the profile names)."""
    dev = _device(target)
    rt = runtime or dev.preferred_runtime
    if rt not in dev.runtimes:
        raise HwoptError(f"target {dev.name} has no runtime {rt!r}; its runtimes are {', '.join(dev.runtimes)}")
    if table is None:
        name = dev.latency_tables.get(rt)
        if not name:
            raise HwoptError(f"target {dev.name} names no latency table for {rt}; run `hwopt profile` or pass --table")
        table = tables_dir() / name
        if not Path(table).is_file():
            raise HwoptError(f"latency table {name} for {dev.name}/{rt} is missing; run `hwopt profile --target {dev.name} --runtime {rt}`")
    return dev, load_table(table, device=dev.name, runtime=rt)


_PREDICTORS: dict[str, KernelPredictor | None] = {}
_MEMO: dict[tuple[int, str, int | None], tuple[float, str]] = {}  # (id(table), kernel key, threads) -> (ms, source)


def _predictor(table: LatencyTable) -> KernelPredictor | None:
    if not table.predictor or table.path is None:
        return None
    path = str(Path(table.path).parent / table.predictor)
    if path not in _PREDICTORS:
        _PREDICTORS[path] = KernelPredictor.load(path) if Path(path).is_file() else None
    return _PREDICTORS[path]


def kernel_estimates(kernels: Sequence[Kernel], dev: DeviceProfile, table: LatencyTable,
                     threads: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Per-kernel ms and their sources (before the table's network-sum scale and per-kernel cost);
    `threads` only for analytical tables (default: the table's own)."""
    ms = np.zeros(len(kernels))
    src = [""] * len(kernels)
    todo: list[int] = []
    for i, k in enumerate(kernels):
        hit = _MEMO.get((id(table), k.key, threads))
        if hit is not None:
            ms[i], src[i] = hit
        elif k.key in table.entries:
            ms[i], src[i] = table.entries[k.key], "table"
        else:
            todo.append(i)
    rnn = [i for i in todo if kernels[i].rnn_parts()]
    if rnn:  # recurrent layers: the sum of their matrix products, each priced like any GEMM
        todo = [i for i in todo if i not in set(rnn)]
        for i in rnn:
            parts = kernels[i].rnn_parts()
            part_ms, part_src = kernel_estimates([k for k, _ in parts], dev, table, threads)
            ms[i] = float(sum(t * n for t, (_, n) in zip(part_ms, parts)))
            src[i] = part_src[0]
            _MEMO[(id(table), kernels[i].key, threads)] = (float(ms[i]), src[i])
    if todo:
        pred = _predictor(table) if table.method == "measured" else None
        learn = [i for i in todo if pred is not None and pred.covers(kernels[i])]
        rest = [i for i in todo if i not in set(learn)]
        if learn:
            chosen = [kernels[i] for i in learn]
            ms[learn] = table.calibrated(chosen, pred.predict(chosen, dev, table.roofline))
            for i in learn:
                src[i] = "predictor"
        if rest:
            ms[rest] = kernels_ms([kernels[i] for i in rest], dev, table.roofline, threads)
            for i in rest:
                src[i] = "analytical" if table.method == "analytical" else "fallback"
        for i in todo:
            _MEMO[(id(table), kernels[i].key, threads)] = (float(ms[i]), src[i])
    return ms, src


def predict_kernels(kernels: Sequence[Kernel], target: str | DeviceProfile, runtime: str | None = None, *,
                    table: str | os.PathLike | None = None, threads: int | None = None) -> Prediction:
    """Latency of precomputed kernels (from `extract_kernels`), for callers that predict many variants.
    `threads` (default: the table's) is free for analytical tables; a measured table holds one count."""
    dev, tab = resolve_table(target, runtime, table)
    if threads is not None and threads < 1:
        raise HwoptError(f"--threads must be at least 1, not {threads}")
    if threads is not None and tab.method == "measured" and threads != tab.threads:
        raise HwoptError(f"latency table {tab.path.name if tab.path else ''} was measured at {tab.threads} thread(s); "
                         f"profile one with --threads {threads}")
    threads = threads or tab.threads
    ms, src = kernel_estimates(kernels, dev, tab, threads)
    if tab.method == "measured":
        ms = tab.in_model_ms(ms)
    runs, notes = _control_flow(kernels, ms)
    layers = [
        LayerLatency(k.nodes[0] if k.nodes else k.op, k.op, float(ms[i]), "fallback" if i in notes else src[i], k.key,
                     list(k.nodes), notes.get(i, ""))
        for i, k in ((i, kernels[i]) for i in runs)
    ]
    total = float(sum(layer.latency_ms for layer in layers)) + (
        tab.overhead_ms if tab.method == "measured" else tab.roofline.model_overhead_ms)
    prov = {
        "table": tab.path.name if tab.path else None,
        "method": tab.method,
        "threads": threads,
        **{k: tab.provenance[k] for k in ("measured_on", "runtime_version", "date", "calibration", "note")
           if k in tab.provenance},
    }
    if notes:
        prov["control_flow"] = sorted({layer.note for layer in layers if layer.note})
    pred = Prediction(dev.name, tab.runtime, threads, total, layers, prov)
    pred.provenance["sources"] = pred.sources
    return pred


def _control_flow(kernels: Sequence[Kernel], ms: np.ndarray) -> tuple[list[int], dict[int, str]]:
    """Which kernels run, and a note for each one inside an If/Loop/Scan; `ms` of a loop body's
    kernels is multiplied in place by its trip count.

    An If runs one branch: the one a constant condition selects, else (decided at run time) the
    dearer one, so the prediction does not flatter the model. A loop whose trip count the graph
    does not fix counts its body once: the note says the number is a lower bound. Their source
    reads `fallback`: the kernels are priced as usual, but whether and how often they run is inferred.
    """
    scopes = {i: k.scope for i, k in enumerate(kernels) if isinstance(k, BodyKernel)}
    if not scopes:
        return list(range(len(kernels))), {}
    for i, scope in scopes.items():
        for s in scope:
            ms[i] *= s.repeat
    notes: dict[int, str] = {}
    for i, scope in scopes.items():
        parts = []
        for s in scope:
            if s.op == "If":
                parts.append(f"{s.owner} branch {s.branch}" + (" (constant condition)" if s.taken else
                                                               " (the dearer branch; condition known at run time)"))
            else:
                parts.append(f"{s.owner} {s.branch} " + (f"x{s.repeat}" if not s.bounded else
                                                         "once (trip count unknown: a lower bound)"))
        notes[i] = "control flow: " + " > ".join(parts)
    return _running(list(range(len(kernels))), scopes, ms, 0), notes


def _running(idx: list[int], scopes: dict, ms: np.ndarray, depth: int) -> list[int]:
    """The kernels of `idx` that run, in order: each If at this depth keeps its dearest branch."""
    groups: dict[str, list[int]] = {}
    for i in idx:
        if len(scopes.get(i, ())) > depth:
            groups.setdefault(scopes[i][depth].owner, []).append(i)
    keep = {i for i in idx if len(scopes.get(i, ())) <= depth}
    for members in groups.values():
        branches: dict[str, list[int]] = {}
        for i in members:
            branches.setdefault(scopes[i][depth].branch, []).append(i)
        chosen = [_running(b, scopes, ms, depth + 1) for b in branches.values()]
        if scopes[members[0]][depth].op == "If":
            chosen = [max(chosen, key=lambda b: float(ms[b].sum()) if b else 0.0)]
        keep.update(i for b in chosen for i in b)
    return sorted(keep)


def predict_latency(model: onnx.ModelProto | str | os.PathLike, target: str | DeviceProfile,
                    runtime: str | None = None, shapes: Shapes | None = None, *,
                    table: str | os.PathLike | None = None, threads: int | None = None) -> Prediction:
    """Predicted latency of `model` on `target` (runtime defaults to the target's preferred one)."""
    dev = _device(target)
    rt = runtime or dev.preferred_runtime
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    # onnxruntime here: ask it which QDQ groups it fuses (no static rule matched what it does)
    placement = observed_placement(proto) if rt == "onnxruntime" and dev.present_here else None
    return predict_kernels(extract_kernels(proto, rt, shapes, placement=placement), dev, rt, table=table,
                           threads=threads)
