"""Which layers quantization hurts, and mixed precision that keeps those in float.

Two numbers per weighted layer: the SQNR of its output in the fully quantized model against the
float model (where the error accumulates), and the accuracy when *only* that layer is quantized
(its own damage). Mixed precision keeps the most damaging layers float, a growing number at a
time, until the accuracy drop fits the budget — measured on a real runtime, not estimated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from hwopt.data import Dataset, accuracy_metrics, run_outputs, sqnr_db
from hwopt.graph.shapes import with_outputs
from hwopt.quant.calibrate import Statistics
from hwopt.quant.ptq import EVAL_BATCH_INPUT_BYTES, QuantPlan, emit, feasible_batch


@dataclass
class LayerSensitivity:
    node: str
    op: str
    sqnr_db: float  # layer output, fully quantized model vs float
    accuracy: float  # when only this layer is quantized
    drop: float  # float accuracy minus `accuracy`

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(model: onnx.ModelProto, ds: Dataset, runtime: str = "onnxruntime", reference: list[np.ndarray] | None = None,
             *, limit: int | None = None, precision: str = "fp32") -> tuple[dict, list[np.ndarray]]:
    """Accuracy metrics of `model` on `ds` run by `runtime` (1 thread), and its outputs.

    Without labels or a reference, the model is its own reference (the float baseline's case)."""
    from hwopt.runtimes import get_runtime

    session = get_runtime(runtime).session(model, threads=1, precision=precision)
    sample_bytes = sum(v[:1].nbytes for v in ds.inputs.values())
    batch = feasible_batch(model, 32, sample_bytes=sample_bytes, budget=EVAL_BATCH_INPUT_BYTES)
    outs = run_outputs(session, ds, batch_size=batch, limit=limit)
    labels = None if ds.labels is None else ds.labels[: len(outs[0])]
    if labels is None and reference is None:
        reference = outs
    return accuracy_metrics(outs, labels, reference), outs


def layer_sensitivity(plan: QuantPlan, stats: Statistics, ds: Dataset, *, wbits: int = 8, abits: int = 8,
                      runtime: str = "onnxruntime", limit: int | None = 256) -> list[LayerSensitivity]:
    """Per-layer SQNR and accuracy impact, most damaging first."""
    layers = plan.layers
    if not layers:
        return []
    ref_metrics, reference = evaluate(plan.model, ds, runtime, limit=limit)
    full = emit(plan, stats, wbits=wbits, abits=abits)
    out_names = {n.name: n.output[0] for n in full.graph.node if n.name in layers}
    names = [out_names[n] for n in layers]
    sub = ds.subset(min(len(ds), limit or len(ds), 64))
    _, f_outs = evaluate(with_outputs(plan.model, names), sub, runtime)
    _, q_outs = evaluate(with_outputs(full, names), sub, runtime)
    exposed = list(dict.fromkeys([o.name for o in plan.model.graph.output] + names))
    sqnr = {n: sqnr_db(f_outs[exposed.index(t)], q_outs[exposed.index(t)]) for n, t in zip(layers, names)}
    all_nodes = {n.name for n in plan.model.graph.node}
    ops = {n.name: n.op_type for n in plan.model.graph.node}
    result = []
    for layer in layers:
        only = emit(plan, stats, wbits=wbits, abits=abits, float_nodes=all_nodes - {layer})
        m, _ = evaluate(only, ds, runtime, reference, limit=limit)
        result.append(LayerSensitivity(layer, ops[layer], float(sqnr[layer]), m["accuracy"], ref_metrics["accuracy"] - m["accuracy"]))
    result.sort(key=lambda s: (-s.drop, s.sqnr_db))
    return result


@dataclass
class MixedPrecision:
    model: onnx.ModelProto
    float_layers: list[str]
    accuracy: float
    met_budget: bool
    tried: list[dict]


def _steps(n: int):
    """0, 1, 2, 3, 4, 6, 8, 12, 16, ... up to n: cheap to search, fine where it matters."""
    k, out = 0, []
    while k < n:
        out.append(k)
        k = k + 1 if k < 4 else int(k * 1.5)
    return out + [n]


def mixed_precision(plan: QuantPlan, stats: Statistics, ds: Dataset, ranking: list[LayerSensitivity], *,
                    float_accuracy: float, max_drop: float, wbits: int = 8, abits: int = 8,
                    runtime: str = "onnxruntime", bias_correction: bool = False, limit: int | None = None) -> MixedPrecision:
    """Keep the k most sensitive layers float for growing k until the drop is within `max_drop`.

    Layers are weighted nodes; with every one of them float, the remaining quantized Adds and
    pools are dropped too (the last step is the float model), so the search always ends inside
    the budget or reports that even float misses it."""
    _, reference = evaluate(plan.model, ds, runtime, limit=limit)
    order = [s.node for s in ranking]
    tried = []
    best = None
    everything = {n.name for n in plan.model.graph.node}
    for k in _steps(len(order)) + [len(order) + 1]:
        keep = set(order[:k]) if k <= len(order) else everything
        model = emit(plan, stats, wbits=wbits, abits=abits, float_nodes=keep, bias_correction=bias_correction)
        m, _ = evaluate(model, ds, runtime, reference, limit=limit)
        tried.append({"float_layers": k, "accuracy": m["accuracy"]})
        best = MixedPrecision(model, order[:k], m["accuracy"], float_accuracy - m["accuracy"] <= max_drop, tried)
        if best.met_budget:
            break
    return best
