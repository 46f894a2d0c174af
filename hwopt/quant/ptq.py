"""Post-training quantization: plan which tensors to quantize, calibrate once, emit QDQ.

The three steps are separate so that sensitivity analysis and mixed precision can re-emit the
same model many times with different layers kept in float without re-running calibration:
`plan_quantization` (graph only) -> `calibrate_plan` (streams data once) -> `emit` (cheap).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwopt.data import Dataset
from hwopt.errors import HwoptError
from hwopt.graph.shapes import Shapes, infer_shapes, input_specs, resolve_input_shapes, value_dtypes, value_shapes
from hwopt.quant.calibrate import Statistics, collect_statistics
from hwopt.quant.qdq import QuantRecord, activation_record, check_bits, insert_qdq, weight_axis, weight_record
from hwopt.quant.schemes import FUSED_ACTIVATIONS, GATE_OPS, WEIGHTED_OPS, Scheme

#: ops a detector tail passes its concatenated output through on the way to a graph output
_TAIL_PASSTHROUGH = frozenset({"Reshape", "Transpose", "Sigmoid", "Softmax", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast"})
#: concat inputs whose calibrated ranges differ more than this share no useful int8 scale
TAIL_RANGE_RATIO = 8.0


@dataclass
class QuantPlan:
    """What can be quantized in a (normalized, float) model under one scheme."""

    model: onnx.ModelProto
    scheme: Scheme
    weights: dict[str, tuple[str, int | None]]  # weighted node -> (weight initializer, per-channel axis)
    activations: dict[str, set[str]]  # tensor -> nodes whose quantization asks for it
    order: list[str]  # weighted nodes in topological order
    user_excluded: set[str] = field(default_factory=set)
    shapes: Shapes = field(default_factory=dict)  # the concrete input shapes the plan was inferred at
    tensor_bytes: dict[str, int] = field(default_factory=dict)  # float32 bytes of each planned activation at `shapes`
    shared: list[set[str]] = field(default_factory=list)  # activations that must share one scale (Concat inputs)

    @property
    def layers(self) -> list[str]:
        return [n for n in self.order if n not in self.user_excluded]


#: memory the observed activations of one calibration batch may take (onnxruntime holds every
#: exposed tensor of a batch at once: ~0.5 GB per sample for an 800x608 detector)
CALIB_BATCH_BYTES = 256 * 2**20
#: input bytes per evaluation batch (intermediate tensors are a small multiple of the input)
EVAL_BATCH_INPUT_BYTES = 32 * 2**20


def feasible_batch(model: onnx.ModelProto, wanted: int = 16, *, sample_bytes: int = 0, budget: int = CALIB_BATCH_BYTES) -> int:
    """Largest batch the model accepts (1 when any input has a fixed batch dim of 1), at most
    `wanted`, and small enough that `sample_bytes` per sample stay within `budget`."""
    dynamic = all(s.dims and not isinstance(s.dims[0], int) for s in input_specs(model))
    if not dynamic:
        return 1
    return max(1, min(wanted, budget // sample_bytes)) if sample_bytes > 0 else wanted


def plan_quantization(
    model: onnx.ModelProto,
    scheme: Scheme,
    *,
    exclude_nodes: list[str] = (),
    exclude_ops: list[str] = (),
    keep_first_last: bool = False,
    shapes: Shapes | None = None,
) -> QuantPlan:
    """Find the weighted nodes and activation tensors the scheme quantizes.

    `shapes` fixes dynamic input dims for the graph analysis (the QDQ model keeps them dynamic);
    `hwopt.quant.api.quantize` takes them from --shape or the calibration data.
    """
    nodes = {n.name: n for n in model.graph.node}
    unknown = sorted(set(exclude_nodes) - set(nodes))
    if unknown:
        raise HwoptError(f"--exclude names node(s) not in the model: {', '.join(unknown[:5])}")
    inits = {t.name: t for t in model.graph.initializer}
    concrete = resolve_input_shapes(model, shapes)
    inferred = infer_shapes(model, concrete)
    dtypes = value_dtypes(inferred)
    fixed = constant_tensors(model)
    is_float = lambda t: dtypes.get(t) == TensorProto.FLOAT and t not in fixed  # noqa: E731
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    weights: dict[str, tuple[str, int | None]] = {}
    order: list[str] = []
    for n in model.graph.node:
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in inits and is_float(n.input[0]):
            if inits[n.input[1]].data_type == TensorProto.FLOAT:
                weights[n.name] = (n.input[1], weight_axis(n, 1))
                order.append(n.name)
    excluded = set(exclude_nodes) | {n.name for n in model.graph.node if n.op_type in set(exclude_ops)}
    if keep_first_last and order:
        excluded |= {order[0], order[-1]}

    producer = {o: n for n in model.graph.node for o in n.output}
    acts: dict[str, set[str]] = {}
    for n in model.graph.node:
        if scheme.float_gates and _gate_or_affine(n, producer, is_float):
            continue
        if n.name in weights:
            acts.setdefault(n.input[0], set()).add(n.name)
            if scheme.quantize_outputs:
                acts.setdefault(_output_after_activation(n, consumers, scheme.fused_activations), set()).add(n.name)
        elif n.op_type in scheme.activation_ops or scheme.all_tensors:
            for t in n.input:
                if is_float(t):
                    acts.setdefault(t, set()).add(n.name)
            if scheme.all_tensors:
                for t in n.output:
                    if is_float(t):
                        acts.setdefault(t, set()).add(n.name)
    acts = {t: users for t, users in acts.items() if is_float(t)}
    shared: list[set[str]] = []
    if scheme.mirror_through:
        acts, shared = mirror_quantizers(model, acts, scheme.mirror_through, is_float)
    if scheme.hoist_through:
        acts, shared = hoist_quantizers(model, acts, scheme.hoist_through, is_float)
        shared = merge_groups(shared)
    # float32 bytes at the plan's shapes (batch 1 unless --shape says more: then an overestimate, which is safe)
    nbytes = {t: 4 * int(np.prod(v)) for t, v in value_shapes(inferred).items() if t in acts}
    return QuantPlan(model, scheme, weights, acts, order, excluded, concrete, nbytes, shared)


def _gate_or_affine(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto], is_float) -> bool:
    """A Mul by a gate (SE, SiLU, hard-swish) or an Add/Mul with one activation operand: no join
    of two layers, so nothing to quantize (see `Scheme.float_gates`)."""
    if node.op_type not in ("Mul", "Add"):
        return False
    if sum(1 for i in node.input if is_float(i)) < 2:
        return True
    return node.op_type == "Mul" and any((p := producer.get(i)) is not None and p.op_type in GATE_OPS for i in node.input)


def hoist_quantizers(model: onnx.ModelProto, acts: dict[str, set[str]], through: frozenset[str],
                     is_float) -> tuple[dict[str, set[str]], list[set[str]]]:
    """Move each planned activation quantizer up through `through` ops to the tensors they read.

    Why: OpenVINO runs MaxPool, reshapes, Split and Concat directly on int8 data, so a quantizer
    on the *input* of such an op serves its consumer too. One placed on its output instead (a
    Conv reading MaxPool, a classifier Gemm reading Flatten) made OpenVINO run them in fp32 and
    re-quantize with a standalone FakeQuantize (ResNet-18: MaxPool fp32 and 3 quantize layers,
    NNCF's model 1: its input's). A quantizer above a Concat goes onto every input, and those
    must share one scale: OpenVINO runs a Concat in int8 only when its inputs share the
    dequantization, otherwise it requantizes each input (YOLOv8 C2f blocks: 3 layers per
    Concat). A quantizer moves only onto a tensor no other op reads, or one that is quantized
    anyway, so no unrelated consumer starts reading int8.

    Returns the new plan and the groups of tensors that must share a scale.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input if n.op_type not in ("Shape", "Size") else ():  # those read no values
            readers[i] = readers.get(i, 0) + 1

    def sources(tensor: str) -> list[str]:
        p = producer.get(tensor)
        if p is None or p.op_type not in through:
            return [tensor]
        ins = [i for i in (p.input if p.op_type == "Concat" else p.input[:1]) if is_float(i)]
        if not ins or any(readers.get(i, 0) != 1 and i not in acts for i in ins):
            return [tensor]
        return [s for i in ins for s in sources(i)]

    out: dict[str, set[str]] = {}
    groups: list[set[str]] = []
    for tensor, users in acts.items():
        srcs = sources(tensor)
        for src in srcs:
            out.setdefault(src, set()).update(users)
        if len(srcs) > 1:
            groups.append(set(srcs))
    return out, groups


def mirror_quantizers(model: onnx.ModelProto, acts: dict[str, set[str]], through: frozenset[str],
                      is_float) -> tuple[dict[str, set[str]], list[set[str]]]:
    """Also quantize the input of each `through` op whose output is quantized, with one shared scale.

    Why: onnxruntime runs Flatten, reshapes and MaxPool on int8 only when they sit between a DQ
    and a Q of the same parameters (it then drops both); with a quantizer on their output alone
    they run float, and so does the op before them (ResNet's GlobalAveragePool -> Flatten ->
    Gemm: float GAP and float Gemm, where `quantize_static` gets QLinearGlobalAveragePool and
    QGemm). Chains (MaxPool -> Reshape) are followed upwards while each input has this one reader.

    Returns the new plan and the groups of tensors that must share a scale.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    out = {t: set(u) for t, u in acts.items()}
    groups: list[set[str]] = []
    for tensor in list(acts):
        group, t = {tensor}, tensor
        while (p := producer.get(t)) is not None and p.op_type in through and p.input and is_float(p.input[0]) \
                and readers.get(p.input[0], 0) == 1:
            t = p.input[0]
            out.setdefault(t, set()).add(p.name)
            group.add(t)
        if len(group) > 1:
            groups.append(group)
    return out, merge_groups(groups)


def merge_groups(groups: list[set[str]]) -> list[set[str]]:
    """Union of overlapping groups (a tensor feeding two Concats ties both to one scale)."""
    merged: list[set[str]] = []
    for g in groups:
        touching = [m for m in merged if m & g]
        union = set(g).union(*touching)
        merged = [m for m in merged if not (m & g)] + [union]
    return merged


def constant_tensors(model: onnx.ModelProto) -> set[str]:
    """Initializers and every tensor computed from them and input *shapes* alone (PaddlePaddle's
    Reshape(bias) feeding an Add, YOLO's anchor grids built with Shape/Range): weights, not
    activations, so they get no activation QDQ (OpenVINO's low-precision transformations fail on
    a FakeQuantize over a constant branch, and nudenet's anchor Concats got 12 quantize layers)."""
    fixed = {t.name for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type in ("Constant", "Shape", "Size") or (any(n.input) and all(i in fixed for i in n.input if i)):
            fixed.update(o for o in n.output if o)
    return fixed


def _output_after_activation(node: onnx.NodeProto, consumers: dict, fused: frozenset[str] = FUSED_ACTIVATIONS) -> str:
    """A weighted op's output, or that of the activation function it alone feeds."""
    out = node.output[0]
    users = consumers.get(out, [])
    if len(users) == 1 and users[0].op_type in fused:
        return users[0].output[0]
    return out


def calibrate_plan(plan: QuantPlan, calib: Dataset, method: str = "minmax", *, limit: int | None = 512) -> Statistics:
    """Stream the calibration data once for every tensor the plan may quantize."""
    means = [plan.model.graph.node[i].input[0] for i, n in enumerate(plan.model.graph.node) if n.name in plan.weights]
    observed = set(plan.activations) | set(means)
    batch = feasible_batch(plan.model, sample_bytes=sum(plan.tensor_bytes.get(t, 0) for t in observed))
    return collect_statistics(plan.model, sorted(plan.activations), calib, method,
                              mean_tensors=means, batch_size=batch, limit=limit)


def float_tails(plan: QuantPlan, stats: Statistics) -> set[str]:
    """Concats that feed a graph output and join tensors of very different ranges (detector heads
    joining boxes and scores), plus the ops between them and the output: these stay float."""
    g = plan.model.graph
    producer = {o: n for n in g.node for o in n.output}
    tails: set[str] = set()
    for out in g.output:
        path: list[onnx.NodeProto] = []
        node = producer.get(out.name)
        while node is not None and node.op_type in _TAIL_PASSTHROUGH:
            path.append(node)
            node = producer.get(node.input[0])
        if node is None or node.op_type != "Concat":
            continue
        spans = [max(abs(c.lo), abs(c.hi)) for t in node.input if (c := stats.calibrators.get(t)) is not None]
        if len(spans) > 1 and max(spans) > TAIL_RANGE_RATIO * max(min(spans), 1e-12):
            tails |= {node.name} | {p.name for p in path}
    return tails


def emit(
    plan: QuantPlan,
    stats: Statistics,
    *,
    wbits: int = 8,
    abits: int = 8,
    float_nodes: set[str] = frozenset(),
    bias_correction: bool = False,
    layer_bits: dict[str, tuple[int, int]] | None = None,
) -> onnx.ModelProto:
    """The QDQ model with `float_nodes` (plus user exclusions) kept in float.

    `layer_bits` overrides (wbits, abits) per weighted node for mixed bit-widths.
    """
    check_bits(wbits, "weight bits")
    check_bits(abits, "activation bits")
    keep = set(float_nodes) | plan.user_excluded
    layer_bits = layer_bits or {}
    model = onnx.ModelProto()
    model.CopyFrom(plan.model)
    inits = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    scheme = plan.scheme.runtime
    records: list[QuantRecord] = []

    users_of_weight: dict[str, set[str]] = {}
    for node, (w, _) in plan.weights.items():
        users_of_weight.setdefault(w, set()).add(node)
    done: set[str] = set()
    for node, (w, axis) in plan.weights.items():
        if node in keep or w in done or users_of_weight[w] & keep:
            continue
        done.add(w)
        bits = layer_bits.get(node, (wbits, abits))[0]
        arr = numpy_helper.to_array(inits[w])
        rec = weight_record(w, arr, bits, axis, scheme=scheme)
        records.append(rec)
        if bias_correction:
            _correct_bias(model, nodes[node], arr, rec.dequantized(), stats)

    folded = _fold_relus(model, plan, keep)
    group_of = {t: g for g in plan.shared for t in g}
    for tensor, users in sorted(plan.activations.items()):
        active = users - keep
        if not active or tensor in folded:
            continue
        bits = min(layer_bits.get(u, (wbits, abits))[1] for u in active)
        ranges = [stats.calibrators[t].range(bits, plan.scheme.activation_symmetric)
                  for t in sorted(group_of.get(tensor, {tensor})) if t in stats.calibrators]
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        records.append(activation_record(tensor, lo, hi, bits, plan.scheme.activation_symmetric, scheme=scheme))
    return insert_qdq(model, records, float_nodes=keep, activation_storage=plan.scheme.activation_storage)


def _fold_relus(model: onnx.ModelProto, plan: QuantPlan, keep: set[str]) -> set[str]:
    """Drop a Relu between a weighted op and its (asymmetric) output quantization.

    Q with the range [0, hi] has zero point qmin, so it already maps every negative value to 0:
    Q(conv) == Q(relu(conv)). Removing the Relu is exact and lets runtimes fuse DQ->Conv->Q into
    one integer kernel, as onnxruntime's own quantizer does. The weighted op takes over the
    Relu's output name, whose calibrated range already starts at 0. Returns the pre-Relu tensors
    that no longer exist, so no QDQ is emitted for them (full-integer schemes plan one there)."""
    if plan.scheme.activation_symmetric:
        return set()
    g = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    producer = {o: n for n in g.node for o in n.output}
    drop: set[str] = set()
    vanished: set[str] = set()
    for tensor, users in plan.activations.items():
        relu = producer.get(tensor)
        if relu is None or relu.op_type != "Relu" or not (users - keep) or tensor in outputs:
            continue
        src = producer.get(relu.input[0])
        if src is None or src.name not in plan.weights or src.name in keep or len(consumers.get(relu.input[0], [])) != 1:
            continue
        if any(c.name in keep for c in consumers.get(tensor, [])) or relu.input[0] in outputs:
            continue
        vanished.add(src.output[0])
        src.output[0] = tensor
        drop.add(relu.name)
    if drop:
        kept = [n for n in g.node if n.name not in drop]
        del g.node[:]
        g.node.extend(kept)
    return vanished


def _correct_bias(model: onnx.ModelProto, node: onnx.NodeProto, w: np.ndarray, wq: np.ndarray, stats: Statistics) -> None:
    """Remove the mean output shift the weight rounding causes: b -= E[(Wq - W) x].

    E[x] per input channel comes from calibration (empirical bias correction); only Conv and
    2-D Gemm, where the channel axis of the input is axis 1."""
    cm = stats.channel_means.get(node.input[0])
    mean = cm.mean if cm is not None else None
    if mean is None:
        return
    dw = (wq - w).astype(np.float64)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        groups = int(attrs.get("group", 1))
        cout, cin_g = dw.shape[:2]
        if mean.shape[0] != cin_g * groups:
            return
        per = dw.reshape(cout, cin_g, -1).sum(axis=2)  # [Cout, Cin/g]
        mx = mean.reshape(groups, cin_g)[np.arange(cout) // (cout // groups)]
        delta = (per * mx).sum(axis=1)
    elif node.op_type == "Gemm" and not attrs.get("transA", 0):
        delta = dw @ mean if attrs.get("transB", 0) else mean @ dw
    else:
        return
    inits = {t.name: t for t in model.graph.initializer}
    if len(node.input) > 2 and node.input[2]:
        b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        if b.shape != delta.shape:
            return
        inits[node.input[2]].CopyFrom(numpy_helper.from_array((b - delta).astype(np.float32), node.input[2]))
    else:
        name = f"{node.name}_bias_corrected"
        model.graph.initializer.append(numpy_helper.from_array((-delta).astype(np.float32), name))
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = name
