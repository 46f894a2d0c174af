"""The QDQ representation every hwopt quantization stage reads and writes.

A quantized model is a plain ONNX graph (opset >= 13) in which:

* **Weights** are integer initializers ``<W>_q`` (int8 storage) feeding a ``DequantizeLinear``
  node (scale ``<W>_scale``, zero point ``<W>_zp``, int8 zeros) whose output ``<W>_dq`` replaces
  ``W`` at every consumer. Scales are per-channel along the *output-channel* axis: axis 0 for
  Conv and Gemm with transB=1, axis 1 for Gemm with transB=0, MatMul (weight is [K, N]) and
  ConvTranspose (weight is [Cin, Cout/g, ...]); per-tensor (scalar scale) otherwise. Weights are
  symmetric (zero point 0) with the narrow range [-(2^(b-1)-1), 2^(b-1)-1], which is what
  TensorRT requires and what the other runtimes accept.
* **Activations** get a ``QuantizeLinear -> DequantizeLinear`` pair right after the producer of
  the tensor ``X`` (outputs ``X_q`` / ``X_dq``; both nodes share ``X_scale`` / ``X_zp``); every
  consumer that is quantized reads ``X_dq``. Storage is int8 (S8S8: onnxruntime's recommended
  x86 format; zero point 0 where the target wants symmetric activations), or uint8 for a scheme
  whose `activation_storage` says so (OpenVINO): the same grid with the zero point moved by 128,
  marked ``storage: uint8`` in the metadata. Records always carry the signed (int8) zero point.
* **Bit-widths below 8** (4, 3, 2) are emulated in int8 storage: weight integers lie in
  [-(2^(b-1)-1), 2^(b-1)-1]; activations get a ``Clip`` (``X_clip``, bounds ``X_clip_lo/hi``)
  before the QuantizeLinear whose bounds are exactly the b-bit grid's float range, so Q/DQ
  saturate at b bits. Such models run on every runtime (as fake-quant, not faster); opset-21
  INT4 tensors are not emitted because the runtimes here do not run them faster either.
* **Biases** of quantized Conv/Gemm stay float initializers; `align_biases` (applied by
  `hwopt.quant.api.quantize` after its last stage) rounds them onto the int32 grid
  ``input_scale * weight_scale``. onnxruntime quantizes them to exactly that grid when it
  optimizes the graph, so once aligned the plain QDQ arithmetic, the emulations and
  onnxruntime's fused integer kernels all compute the same numbers. Stages that change scales
  (reconstruction, QAT) should align again on their output.
* **Metadata**: ``model.metadata_props["hwopt.quant"]`` is JSON ``{tensor: {kind, bits,
  symmetric, scheme, axis, dq, q, clip}}`` keyed by the original float tensor name; ``dq`` /
  ``q`` / ``clip`` are node names. Scales, zero points and integer weights live only in the
  graph's initializers (one source of truth); the metadata says how to read them.
  An entry marked ``routed`` (`route_output_quantizers`, onnxruntime's last step) is a graph
  output that now comes out of its DequantizeLinear; its producer writes ``<X>_float``.

`read_quant_params` turns this into `QuantRecord`s (numpy arrays included) and
`write_quant_params` writes edited records back (learned rounding, new scales, new bits), so the
reconstruction and QAT stages never touch graph surgery.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwopt.errors import HwoptError

META_KEY = "hwopt.quant"
SUPPORTED_BITS = (2, 3, 4, 8)
Kind = Literal["weight", "activation"]


def check_bits(bits: int, what: str = "bits") -> int:
    """Refuse bit-widths the emulation does not support (clear one-line error)."""
    if bits not in SUPPORTED_BITS:
        raise HwoptError(f"{what} must be one of {', '.join(map(str, SUPPORTED_BITS))}, got {bits}")
    return bits


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer grid of a b-bit signed tensor; symmetric uses the narrow range (no -2^(b-1))."""
    hi = 2 ** (bits - 1) - 1
    return (-hi if symmetric else -hi - 1), hi


@dataclass
class QuantRecord:
    """Quantization parameters of one float tensor (weight or activation)."""

    tensor: str
    kind: Kind
    bits: int
    symmetric: bool
    scale: np.ndarray  # float32, shape () per-tensor or (C,) per-channel
    zero_point: np.ndarray  # int8, same shape as scale
    axis: int | None = None
    scheme: str = ""
    int_weight: np.ndarray | None = None  # weights only: the integers (int8 storage)
    dq: str = ""  # node names, filled when read from a model
    q: str = ""
    clip: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def qmin(self) -> int:
        return int_range(self.bits, self.symmetric)[0]

    @property
    def qmax(self) -> int:
        return int_range(self.bits, self.symmetric)[1]

    def _bcast(self, a: np.ndarray, ndim: int) -> np.ndarray:
        if self.axis is None or a.ndim == 0:
            return a
        shape = [1] * ndim
        shape[self.axis] = -1
        return a.reshape(shape)

    def dequantized(self) -> np.ndarray:
        """Float weight the graph computes with: scale * (q - zero_point)."""
        if self.int_weight is None:
            raise ValueError(f"{self.tensor} is an activation record; it has no integer weight")
        w = self.int_weight.astype(np.float32)
        return (w - self._bcast(self.zero_point.astype(np.float32), w.ndim)) * self._bcast(self.scale, w.ndim)

    def float_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Float values of the grid's ends (the fake-quant clipping range)."""
        zp = self.zero_point.astype(np.float32)
        return (self.qmin - zp) * self.scale, (self.qmax - zp) * self.scale


def weight_record(tensor: str, w: np.ndarray, bits: int, axis: int | None, *, scheme: str = "", search: bool = True) -> QuantRecord:
    """Symmetric (per-channel along `axis`) weight quantization.

    With `search`, each channel's clipping range is the fraction of max|w| (0.5..1) that
    minimises the rounding MSE: at 8 bits that is ~1.0, at 4 bits and below it matters a lot.
    """
    check_bits(bits, "weight bits")
    qmin, qmax = int_range(bits, True)
    w = np.asarray(w, dtype=np.float32)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) if axis is not None else w.reshape(1, -1)
    amax = np.abs(moved).max(axis=1)
    amax = np.where(amax > 0, amax, 1.0).astype(np.float32)
    best = amax / qmax
    if search:
        best_err = np.full(len(amax), np.inf)
        for frac in np.linspace(0.5, 1.0, 26):
            s = (amax * frac / qmax)[:, None]
            err = ((np.clip(np.round(moved / s), qmin, qmax) * s - moved) ** 2).sum(axis=1)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best = np.where(better, s[:, 0], best)
    scale = best.astype(np.float32)
    if axis is None:
        scale = scale.reshape(())
        q = np.clip(np.round(w / scale), qmin, qmax)
    else:
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), qmin, qmax)
    zp = np.zeros(scale.shape, dtype=np.int8)
    return QuantRecord(tensor, "weight", bits, True, scale, zp, axis, scheme, q.astype(np.int8))


def activation_record(tensor: str, lo: float, hi: float, bits: int, symmetric: bool, *, scheme: str = "") -> QuantRecord:
    """Per-tensor activation parameters for the float range [lo, hi] (always widened to include 0)."""
    check_bits(bits, "activation bits")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise HwoptError(f"activation {tensor!r} has a non-finite calibration range [{lo}, {hi}]")
    qmin, qmax = int_range(bits, symmetric)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric:
        scale = max(abs(lo), abs(hi)) / qmax
        zp = 0
    else:
        scale = (hi - lo) / (qmax - qmin)
        zp = int(np.clip(np.round(qmin - lo / scale), qmin, qmax)) if scale > 0 else 0
    scale = max(scale, 1e-8)
    return QuantRecord(tensor, "activation", bits, symmetric, np.array(scale, np.float32), np.array(zp, np.int8), None, scheme)


def weight_axis(node: onnx.NodeProto, input_index: int = 1) -> int | None:
    """Output-channel axis of a node's weight input (None: quantize per-tensor)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1 if attrs.get("group", 1) == 1 else None
    if node.op_type == "Gemm" and input_index == 1:
        return 0 if attrs.get("transB", 0) else 1
    if node.op_type == "MatMul" and input_index == 1:
        return 1
    return None


#: integer-arithmetic ops of onnx and onnxruntime's com.microsoft domain: their presence means a
#: model was quantized already (by hwopt, onnxruntime's quantize_static/dynamic or an exporter)
_QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QGemm", "QAttention",
                            "MatMulNBits", "MatMulBnb4", "QEmbedLayerNormalization"})
_QUANTIZED_PREFIXES = ("QLinear", "DynamicQuantize", "QOrdered")
_QUANTIZED_SUFFIXES = ("Integer", "IntegerToFloat")


def quantized_ops(model: onnx.ModelProto) -> dict[str, int]:
    """{op type: count} of the model's quantized (integer-arithmetic) ops; empty for a float model."""
    found: dict[str, int] = {}
    for n in model.graph.node:
        op = n.op_type
        if op in _QUANTIZED_OPS or op.startswith(_QUANTIZED_PREFIXES) or op.endswith(_QUANTIZED_SUFFIXES):
            found[op] = found.get(op, 0) + 1
    return found


def refuse_quantized(model: onnx.ModelProto) -> None:
    """HwoptError when the model is quantized already: re-quantizing would stack a second grid on
    the first (or meet integer ops no calibrator can observe); the float original is what to use."""
    ops = quantized_ops(model)
    if ops:
        listed = ", ".join(f"{op} x{k}" for op, k in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))
        raise HwoptError(f"model is already quantized ({listed}); quantize its float original instead")


# ---- emission ---------------------------------------------------------------------------------


def _meta(model: onnx.ModelProto) -> dict:
    for p in model.metadata_props:
        if p.key == META_KEY:
            return json.loads(p.value)
    return {}


def _set_meta(model: onnx.ModelProto, meta: dict) -> None:
    keep = [p for p in model.metadata_props if p.key != META_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    if meta:
        model.metadata_props.add(key=META_KEY, value=json.dumps(meta, sort_keys=True))


def _stored_zero_point(zp: np.ndarray, unsigned: bool) -> np.ndarray:
    """The zero point as written to the graph: int8, or uint8 shifted by 128 (same grid)."""
    zp = np.asarray(zp)
    return (zp.astype(np.int16) + 128).astype(np.uint8) if unsigned else zp.astype(np.int8)


def _clip_bounds(rec: QuantRecord) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = rec.float_range()
    return np.asarray(lo, np.float32).reshape(()), np.asarray(hi, np.float32).reshape(())


def insert_qdq(model: onnx.ModelProto, records: list[QuantRecord], float_nodes: set[str] = frozenset(),
               activation_storage: str = "int8") -> onnx.ModelProto:
    """Copy of `model` with the given weight and activation records inserted as QDQ.

    An activation record quantizes a tensor for all its consumers except the nodes in
    `float_nodes` (kept in float) and the graph output itself (an output name must stay the
    producer's), so callers choose tensors plus a few float exceptions, not edges.
    `activation_storage` is the scheme's ONNX type for activation Q/DQ ("int8" or "uint8").
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    meta = _meta(out)
    graph_outputs = {o.name for o in g.output}
    producer_pos = {o: i for i, n in enumerate(g.node) for o in n.output}
    new_nodes: dict[int, list[onnx.NodeProto]] = {}  # insert after producer index (-1: graph start)
    rename: dict[str, str] = {}
    for rec in records:
        check_bits(rec.bits)
        if rec.tensor in meta:
            raise HwoptError(f"tensor {rec.tensor!r} is already quantized")
        scale_name, zp_name = f"{rec.tensor}_scale", f"{rec.tensor}_zp"
        unsigned = rec.kind == "activation" and activation_storage == "uint8"
        g.initializer.extend([numpy_helper.from_array(np.asarray(rec.scale, np.float32), scale_name),
                              numpy_helper.from_array(_stored_zero_point(rec.zero_point, unsigned), zp_name)])
        axis_attr = {"axis": rec.axis} if rec.axis is not None and np.ndim(rec.scale) > 0 else {}
        entry = {"kind": rec.kind, "bits": rec.bits, "symmetric": rec.symmetric, "scheme": rec.scheme, "axis": rec.axis}
        if unsigned:
            entry["storage"] = "uint8"
        if rec.kind == "weight":
            if rec.tensor not in inits or rec.int_weight is None:
                raise HwoptError(f"weight record {rec.tensor!r} needs an initializer and integer values")
            qname = f"{rec.tensor}_q"
            g.initializer.append(numpy_helper.from_array(rec.int_weight.astype(np.int8), qname))
            dq = helper.make_node("DequantizeLinear", [qname, scale_name, zp_name], [f"{rec.tensor}_dq"],
                                  name=f"{rec.tensor}_DequantizeLinear", **axis_attr)
            new_nodes.setdefault(-1, []).append(dq)
            entry.update(dq=dq.name, q="", clip="")
        else:
            src = rec.tensor
            chain: list[onnx.NodeProto] = []
            clip_name = ""
            if rec.bits < 8:
                lo, hi = _clip_bounds(rec)
                g.initializer.extend([numpy_helper.from_array(lo, f"{rec.tensor}_clip_lo"),
                                      numpy_helper.from_array(hi, f"{rec.tensor}_clip_hi")])
                clip = helper.make_node("Clip", [src, f"{rec.tensor}_clip_lo", f"{rec.tensor}_clip_hi"],
                                        [f"{rec.tensor}_clip"], name=f"{rec.tensor}_Clip")
                chain.append(clip)
                clip_name, src = clip.name, clip.output[0]
            q = helper.make_node("QuantizeLinear", [src, scale_name, zp_name], [f"{rec.tensor}_q"], name=f"{rec.tensor}_QuantizeLinear")
            dq = helper.make_node("DequantizeLinear", [q.output[0], scale_name, zp_name], [f"{rec.tensor}_dq"],
                                  name=f"{rec.tensor}_DequantizeLinear")
            chain += [q, dq]
            new_nodes.setdefault(producer_pos.get(rec.tensor, -1), []).extend(chain)
            entry.update(dq=dq.name, q=q.name, clip=clip_name)
        rename[rec.tensor] = f"{rec.tensor}_dq"
        meta[rec.tensor] = entry
    inserted = {n.name for chain in new_nodes.values() for n in chain}
    nodes = list(new_nodes.get(-1, []))
    for i, node in enumerate(g.node):
        nodes.append(node)
        nodes.extend(new_nodes.get(i, []))
    for node in nodes:
        if node.name in inserted or node.name in float_nodes:
            continue
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
    del g.node[:]
    g.node.extend(nodes)
    unused = {r.tensor for r in records if r.kind == "weight"}
    still_used = {i for n in g.node for i in n.input} | graph_outputs
    keep = [t for t in g.initializer if t.name not in unused or t.name in still_used]
    del g.initializer[:]
    g.initializer.extend(keep)
    _set_meta(out, meta)
    return out


#: ops whose integer kernel onnxruntime selects only when a QuantizeLinear reads their output
ROUTED_OPS = frozenset({"Conv", "Gemm", "MatMul"})


def route_output_quantizers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of `model` whose quantized weighted ops that produce a graph output feed it through their Q/DQ.

    `insert_qdq` keeps a graph output's name on its producer, so a classifier's last Gemm
    writes `logits` and its output Q/DQ hangs unused: onnxruntime then cannot fuse it (QGemm
    needs the Q) and runs the Gemm in float between dequantizes. Here the producer writes
    `<name>_float` and the DequantizeLinear writes `<name>`, as onnxruntime's own quantizer
    does: the output name stays and the op runs in int8, at the price of an 8-bit output
    (the accuracy guard measures it). Only ops reading a dequantized input are routed; the
    metadata entry is marked ``routed`` (its tensor is then the dequantized output).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    meta = _meta(out)
    producer = {o: n for n in g.node for o in n.output}
    by_name = {n.name: n for n in g.node}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    for o in g.output:
        e = meta.get(o.name)
        node = producer.get(o.name)
        if e is None or e["kind"] != "activation" or e.get("routed") or node is None or node.op_type not in ROUTED_OPS:
            continue
        if not node.input or producer.get(node.input[0]) is None or producer[node.input[0]].op_type != "DequantizeLinear":
            continue
        dq = by_name.get(e["dq"])
        if dq is None:
            continue
        float_name = f"{o.name}_float"
        node.output[list(node.output).index(o.name)] = float_name
        for r in readers.get(o.name, []):
            r.input[:] = [float_name if i == o.name else i for i in r.input]
        for r in readers.get(dq.output[0], []):
            r.input[:] = [o.name if i == dq.output[0] else i for i in r.input]
        dq.output[0] = o.name
        e["routed"] = True
    _set_meta(out, meta)
    return out


def align_biases(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of `model` with each quantized Conv/Gemm's float bias rounded onto the int32 grid
    of scale ``input_scale * weight_scale``.

    Why: onnxruntime (graph level 1, ``WeightBiasQuantization``) rewrites the float bias of a
    Conv/Gemm whose input and weight come from DequantizeLinear into int32 at exactly that scale
    before its integer kernels run. At 4 bits and below the grid is coarse (~0.03 here) and the
    shift flips later low-bit activation roundings: unfused QDQ arithmetic (and every emulation
    of it) then disagrees with what onnxruntime runs by up to ~20% of the largest logit. A bias
    already on the grid is left unchanged by that rewrite, so every runtime computes the same
    thing. Call it again after changing activation or weight scales.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    dq_of = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3 or n.input[2] not in inits:
            continue
        x_dq, w_dq = dq_of.get(n.input[0]), dq_of.get(n.input[1])
        if x_dq is None or w_dq is None or x_dq.input[1] not in inits or w_dq.input[1] not in inits:
            continue
        sx = numpy_helper.to_array(inits[x_dq.input[1]]).astype(np.float32)
        sw = numpy_helper.to_array(inits[w_dq.input[1]]).astype(np.float32)
        b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float32)
        if sx.size != 1 or b.ndim != 1 or sw.size not in (1, b.size) or uses.get(n.input[2], 0) != 1:
            continue
        scale = (sx.reshape(()) * sw.reshape(-1)).astype(np.float32)
        snapped = (np.round(b / scale) * scale).astype(np.float32)
        inits[n.input[2]].CopyFrom(numpy_helper.from_array(snapped, n.input[2]))
    return out


# ---- reading and writing parameters -----------------------------------------------------------


def read_quant_params(model: onnx.ModelProto) -> dict[str, QuantRecord]:
    """Every quantized tensor of a hwopt QDQ model as a record (numpy copies, safe to edit)."""
    meta = _meta(model)
    if not meta:
        return {}
    nodes = {n.name: n for n in model.graph.node}
    inits = {t.name: t for t in model.graph.initializer}
    out: dict[str, QuantRecord] = {}
    for tensor, e in meta.items():
        dq = nodes.get(e["dq"])
        if dq is None:
            raise HwoptError(f"QDQ metadata names node {e['dq']!r} for {tensor!r}, which the graph lacks")
        scale = numpy_helper.to_array(inits[dq.input[1]]).copy()
        zp = numpy_helper.to_array(inits[dq.input[2]]).copy()
        if e.get("storage") == "uint8":
            zp = (zp.astype(np.int16) - 128).astype(np.int8)
        int_w = numpy_helper.to_array(inits[dq.input[0]]).copy() if e["kind"] == "weight" else None
        out[tensor] = QuantRecord(tensor, e["kind"], int(e["bits"]), bool(e["symmetric"]), scale, zp, e.get("axis"),
                                  e.get("scheme", ""), int_w, e["dq"], e.get("q", ""), e.get("clip", ""))
    return out


def write_quant_params(model: onnx.ModelProto, records: list[QuantRecord] | dict[str, QuantRecord]) -> onnx.ModelProto:
    """Copy of `model` with the records' scales, zero points, integer weights and bits written back.

    Integer weights must lie on the record's b-bit grid; activation bit changes below 8 bits
    get (or update) the emulating Clip. The graph structure is otherwise unchanged.
    """
    recs = list(records.values()) if isinstance(records, dict) else list(records)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    meta = _meta(out)
    inits = {t.name: t for t in out.graph.initializer}
    nodes = {n.name: n for n in out.graph.node}

    def put(name: str, arr: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))

    for rec in recs:
        check_bits(rec.bits)
        e = meta.get(rec.tensor)
        if e is None:
            raise HwoptError(f"tensor {rec.tensor!r} is not quantized in this model")
        dq = nodes[e["dq"]]
        if np.shape(rec.scale) != tuple(inits[dq.input[1]].dims) or np.any(~np.isfinite(rec.scale)) or np.any(rec.scale <= 0):
            raise HwoptError(f"{rec.tensor}: scale must be positive, finite and keep shape {tuple(inits[dq.input[1]].dims)}")
        put(dq.input[1], np.asarray(rec.scale, np.float32))
        put(dq.input[2], _stored_zero_point(rec.zero_point, e.get("storage") == "uint8"))
        if rec.kind == "weight":
            if rec.int_weight is None:
                raise HwoptError(f"weight record {rec.tensor!r} has no integer values")
            iw = np.asarray(rec.int_weight)
            if iw.min() < rec.qmin or iw.max() > rec.qmax:
                raise HwoptError(f"{rec.tensor}: integer weights outside the {rec.bits}-bit grid [{rec.qmin}, {rec.qmax}]")
            put(dq.input[0], iw.astype(np.int8))
        else:
            _write_activation_clip(out, nodes, inits, e, rec)
        e["bits"], e["symmetric"] = rec.bits, rec.symmetric
    _set_meta(out, meta)
    return out


def _write_activation_clip(model: onnx.ModelProto, nodes: dict, inits: dict, e: dict, rec: QuantRecord) -> None:
    """Keep the activation's emulating Clip in step with its bits and grid."""
    if rec.bits == 8 and not e.get("clip"):
        return
    lo, hi = _clip_bounds(rec) if rec.bits < 8 else (np.array(-np.inf, np.float32), np.array(np.inf, np.float32))
    if e.get("clip"):
        clip = nodes[e["clip"]]
        for name, arr in ((clip.input[1], lo), (clip.input[2], hi)):
            inits[name].CopyFrom(numpy_helper.from_array(arr, name))
        return
    q = nodes[e["q"]]
    g = model.graph
    g.initializer.extend([numpy_helper.from_array(lo, f"{rec.tensor}_clip_lo"), numpy_helper.from_array(hi, f"{rec.tensor}_clip_hi")])
    clip = helper.make_node("Clip", [q.input[0], f"{rec.tensor}_clip_lo", f"{rec.tensor}_clip_hi"], [f"{rec.tensor}_clip"],
                            name=f"{rec.tensor}_Clip")
    q.input[0] = clip.output[0]
    idx = next(i for i, n in enumerate(g.node) if n.name == q.name)
    g.node.insert(idx, clip)
    e["clip"] = clip.name
