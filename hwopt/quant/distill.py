"""Distillation-aware quantization-aware training (KD-QAT) of a QDQ ONNX model.

Starting point: a PTQ QDQ model (hwopt's own, or onnxruntime's `quantize_static` QDQ output).
Teacher: the original float model. The QDQ graph itself is trained in torch:

* every integer weight feeding a DequantizeLinear gets a float *shadow* weight (its dequantized
  value) behind a fake QuantizeLinear with the same scale, so the forward pass sees quantized
  weights and the shadow receives straight-through gradients (Polino et al.'s quantized
  distillation);
* activation and weight scales are learned with LSQ: Q and DQ share one scale tensor, so autograd
  gives exactly LSQ's step gradient, and a hook scales it by 1/sqrt(N * Qp);
* integer ranges come from the representation (`hwopt.quant.qdq`): metadata bits, else the
  range a Clip in front of the QuantizeLinear allows (emulated 4/2-bit), else the storage type.
  During training the Clip is bypassed and the narrowed range is enforced by the fake-quant
  itself, so the learned scale, not a stale clip bound, decides saturation;
* int32 biases (onnxruntime's QDQ) train as float and are requantized at the end with
  scale = input scale * weight scale.

Loss = w * T^2 * KL(student/T || teacher/T) + (1 - w) * CE with labels, pure KD without.
At the end the learned integers, scales and clip bounds are written into a copy of the QDQ
model: same graph, same names, same dtypes, so every runtime runs it as it ran the PTQ model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from hwopt.data import Dataset, check_dataset
from hwopt.errors import HwoptError
from hwopt.graph.finetune import check_training_options, teacher_outputs, train_kd
from hwopt.graph.normalize import normalize_model
from hwopt.graph.shapes import infer_shapes, value_shapes
from hwopt.graph.to_torch import QRANGES, OnnxModule, onnx_to_torch, write_back
from hwopt.quant.qdq import META_KEY, int_range

_SHADOW = "__qat_shadow"


@dataclass
class WeightPoint:
    """An integer weight behind a DequantizeLinear (trained through a float shadow)."""

    dq: str  # DequantizeLinear node name
    q: str  # the fake QuantizeLinear inserted for training
    int_name: str
    scale: str
    zero_point: str
    axis: int
    qrange: tuple[int, int]


@dataclass
class ActPoint:
    """A QuantizeLinear on an activation; `clip` is the Clip that narrows its range, if any."""

    q: str
    tensor: str  # the float tensor being quantized (before any Clip)
    scale: str
    zero_point: str
    qrange: tuple[int, int]
    clip: str = ""


@dataclass
class BiasPoint:
    """An int32 bias behind a DequantizeLinear (onnxruntime QDQ): float during training."""

    dq: str
    int_name: str
    scale: str
    consumer_scales: tuple[str, str] | None  # (input scale, weight scale) that define its scale


@dataclass
class QdqLayout:
    weights: list[WeightPoint] = field(default_factory=list)
    acts: list[ActPoint] = field(default_factory=list)
    biases: list[BiasPoint] = field(default_factory=list)


def _meta_bits(model: onnx.ModelProto) -> dict[str, tuple[int, bool]]:
    """Node name -> (bits, symmetric) from hwopt's QDQ metadata (empty for other QDQ models)."""
    for p in model.metadata_props:
        if p.key == META_KEY:
            out: dict[str, tuple[int, bool]] = {}
            for entry in json.loads(p.value).values():
                for node in (entry.get("dq"), entry.get("q")):
                    if node:
                        out[node] = (int(entry["bits"]), bool(entry["symmetric"]))
            return out
    return {}


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _clip_range(clip: onnx.NodeProto, inits: dict[str, np.ndarray], scale: float, zp: int,
                full: tuple[int, int]) -> tuple[int, int]:
    """Integer range a Clip in front of a per-tensor QuantizeLinear leaves (emulated low bits)."""
    lo = inits.get(clip.input[1]) if len(clip.input) > 1 and clip.input[1] else None
    hi = inits.get(clip.input[2]) if len(clip.input) > 2 and clip.input[2] else None
    qlo = full[0] if lo is None or not np.isfinite(lo).all() else max(full[0], int(np.round(float(lo) / scale)) + zp)
    qhi = full[1] if hi is None or not np.isfinite(hi).all() else min(full[1], int(np.round(float(hi) / scale)) + zp)
    return qlo, qhi


def find_qdq_layout(model: onnx.ModelProto) -> QdqLayout:
    """Locate the weight, activation and bias quantization points of a QDQ model."""
    inits = {t.name: t for t in model.graph.initializer}
    arrays = {name: numpy_helper.to_array(t) for name, t in inits.items() if t.data_type == onnx.TensorProto.FLOAT}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    bits = _meta_bits(model)
    layout = QdqLayout()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            if len(node.input) < 3 or not node.input[2]:
                raise HwoptError(f"DequantizeLinear {node.name!r} has no zero point; KD-QAT needs explicit ones")
            elem = inits[node.input[0]].data_type
            if elem == onnx.TensorProto.INT32:
                layout.biases.append(BiasPoint(node.name, node.input[0], node.input[1], _bias_scales(node, consumers, producer)))
                continue
            if elem not in QRANGES:
                raise HwoptError(f"DequantizeLinear {node.name!r}: weight type {elem} is not supported")
            zp = numpy_helper.to_array(inits[node.input[2]])
            if node.name in bits:
                qrange = int_range(*bits[node.name])
            elif elem == onnx.TensorProto.INT8 and not zp.any():
                qrange = (-127, 127)  # symmetric int8 weights use the narrow range (TensorRT, onnxruntime)
            else:
                qrange = QRANGES[elem]
            layout.weights.append(WeightPoint(node.name, f"{node.name}{_SHADOW}_q", node.input[0], node.input[1],
                                              node.input[2], _axis(node), qrange))
        elif node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            if len(node.input) < 3 or not node.input[2] or node.input[1] not in arrays:
                raise HwoptError(f"QuantizeLinear {node.name!r} needs constant scale and zero point for KD-QAT")
            zp_t = inits[node.input[2]]
            full = QRANGES.get(zp_t.data_type)
            if full is None or arrays[node.input[1]].size != 1:
                raise HwoptError(f"QuantizeLinear {node.name!r}: only per-tensor int8/uint8 activations are trained")
            src = producer.get(node.input[0])
            clip = src if src is not None and src.op_type == "Clip" and len(consumers[src.output[0]]) == 1 else None
            if node.name in bits:
                qrange = int_range(*bits[node.name])
            elif clip is not None:
                qrange = _clip_range(clip, arrays, float(arrays[node.input[1]]), int(numpy_helper.to_array(zp_t)), full)
            else:
                qrange = full
            layout.acts.append(ActPoint(node.name, clip.input[0] if clip else node.input[0], node.input[1], node.input[2],
                                        qrange, clip.name if clip else ""))
    if not layout.weights and not layout.acts:
        raise HwoptError("the model has no QuantizeLinear/DequantizeLinear nodes; quantize it first (PTQ)")
    return layout


def _bias_scales(dq: onnx.NodeProto, consumers: dict, producer: dict) -> tuple[str, str] | None:
    """(activation scale, weight scale) of the Conv/Gemm whose bias `dq` dequantizes."""
    users = consumers.get(dq.output[0], [])
    if len(users) != 1 or len(users[0].input) < 3:
        return None
    x_dq, w_dq = producer.get(users[0].input[0]), producer.get(users[0].input[1])
    if x_dq is None or w_dq is None or x_dq.op_type != "DequantizeLinear" or w_dq.op_type != "DequantizeLinear":
        return None
    return x_dq.input[1], w_dq.input[1]


def _per_axis(a: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if a.size == 1:
        return a.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return a.reshape(shape)


def training_graph(model: onnx.ModelProto, layout: QdqLayout) -> onnx.ModelProto:
    """Copy of the QDQ model rewired for training (the returned model is never shipped).

    Weight DQs read a fake QuantizeLinear of a float shadow; activation Qs read the tensor
    before their Clip; int32 bias DQs become Identity of a float shadow.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    nodes = {n.name: n for n in g.node}
    fake_q: dict[str, onnx.NodeProto] = {}
    for wp in layout.weights:
        dq = nodes[wp.dq]
        q_int = numpy_helper.to_array(inits[wp.int_name]).astype(np.float32)
        s = _per_axis(numpy_helper.to_array(inits[wp.scale]), q_int.ndim, wp.axis)
        zp = _per_axis(numpy_helper.to_array(inits[wp.zero_point]).astype(np.float32), q_int.ndim, wp.axis)
        shadow = f"{wp.int_name}{_SHADOW}"
        if shadow not in inits:
            inits[shadow] = numpy_helper.from_array(((q_int - zp) * s).astype(np.float32), shadow)
            g.initializer.append(inits[shadow])
        fake_q[wp.dq] = helper.make_node("QuantizeLinear", [shadow, wp.scale, wp.zero_point], [f"{shadow}_fq_{wp.dq}"],
                                         name=wp.q, axis=wp.axis)
        dq.input[0] = f"{shadow}_fq_{wp.dq}"
    for ap in layout.acts:
        if ap.clip:
            nodes[ap.q].input[0] = ap.tensor
    for bp in layout.biases:
        dq = nodes[bp.dq]
        b = numpy_helper.to_array(inits[bp.int_name]).astype(np.float64) * numpy_helper.to_array(inits[bp.scale]).astype(np.float64)
        shadow = f"{bp.int_name}{_SHADOW}"
        g.initializer.append(numpy_helper.from_array(b.astype(np.float32), shadow))
        dq.op_type = "Identity"
        del dq.input[:]
        dq.input.append(shadow)
        del dq.attribute[:]
    ordered = []
    for node in g.node:
        if node.name in fake_q:
            ordered.append(fake_q[node.name])
        ordered.append(node)
    del g.node[:]
    g.node.extend(ordered)
    return out


def _lsq_hooks(module: OnnxModule, model: onnx.ModelProto, layout: QdqLayout, data: Dataset, learn_weight_scales: bool) -> list[str]:
    """Make scales trainable with LSQ's gradient scale 1/sqrt(N * Qp); returns their names."""
    shapes = value_shapes(infer_shapes(model, {k: (1,) + v.shape[1:] for k, v in data.inputs.items()}))
    names: list[str] = []

    def scale_grad(param: torch.nn.Parameter, factor: float) -> None:
        param.register_hook(lambda g: g * factor)

    for ap in layout.acts:
        if ap.scale in names:
            continue
        n = math.prod(shapes.get(ap.tensor, (1,))[1:]) or 1
        scale_grad(module.tensor(ap.scale), 1.0 / math.sqrt(n * max(ap.qrange[1], 1)))
        names.append(ap.scale)
    if learn_weight_scales:
        for wp in layout.weights:
            if wp.scale in names:
                continue
            w = module.tensor(f"{wp.int_name}{_SHADOW}")
            per_channel = w.numel() // max(1, module.tensor(wp.scale).numel())
            scale_grad(module.tensor(wp.scale), 1.0 / math.sqrt(per_channel * max(wp.qrange[1], 1)))
            names.append(wp.scale)
    return names


def distill_qat(
    float_model: onnx.ModelProto,
    qdq_model: onnx.ModelProto,
    data: Dataset,
    epochs: int = 3,
    *,
    temperature: float = 2.0,
    w: float = 0.5,
    lr: float = 3e-4,
    scale_lr: float = 1e-2,
    learn_weight_scales: bool = False,
    batch_size: int = 32,
    seed: int = 0,
    quiet: bool = False,
) -> onnx.ModelProto:
    """KD-QAT: fine-tune `qdq_model` against the float teacher; returns the trained QDQ model.

    `w` weighs the KD term against cross-entropy (used only when `data` has labels). Shadow
    weights and float parameters train with Adam at `lr`; activation step sizes with SGD
    (momentum 0.9) at `scale_lr` on LSQ-scaled gradients; both decay on a cosine. Weight scales
    stay at PTQ's (MSE-searched) values unless `learn_weight_scales`: learning them per channel
    destabilized 4-bit training in our tests (few elements per channel -> large LSQ gradients).
    """
    check_training_options(epochs=epochs, lr=lr, temperature=temperature, batch_size=batch_size, weights=(w,))
    if not scale_lr > 0:
        raise HwoptError(f"scale learning rate must be > 0, got {scale_lr}")
    qdq = normalize_model(qdq_model)
    check_dataset(data, qdq)
    layout = find_qdq_layout(qdq)
    train_model = training_graph(qdq, layout)
    shadows = sorted({f"{p.int_name}{_SHADOW}" for p in layout.weights + layout.biases})
    scales = sorted({p.scale for p in layout.acts} | ({p.scale for p in layout.weights} if learn_weight_scales else set()))
    torch.manual_seed(seed)
    module = onnx_to_torch(train_model, trainable=shadows + scales)
    for p in layout.weights:
        module.set_quant_range(p.q, *p.qrange)
    for p in layout.acts:
        module.set_quant_range(p.q, *p.qrange)
    scale_names = _lsq_hooks(module, train_model, layout, data, learn_weight_scales)
    scale_params = [module.tensor(s) for s in scale_names]
    scale_ids = {id(p) for p in scale_params}
    others = [p for p in module.parameters() if id(p) not in scale_ids]
    # Adam for the weights; plain momentum SGD for the step sizes, where LSQ's gradient scale is
    # what keeps step-size updates in proportion (Adam would normalize it away)
    optimizers = ([torch.optim.Adam(others, lr=lr)] if others else []) + (
        [torch.optim.SGD(scale_params, lr=scale_lr, momentum=0.9)] if scale_params else [])

    def keep_scales_positive() -> None:
        with torch.no_grad():
            for p in scale_params:
                p.clamp_(min=1e-8)

    targets = teacher_outputs(normalize_model(float_model), data, batch_size)
    train_kd(module, data, targets, optimizers, epochs=epochs, batch_size=batch_size, temperature=temperature,
             kd_weight=w, ce_weight=1 - w, seed=seed, quiet=quiet, description="KD-QAT", after_step=keep_scales_positive)
    return _export(qdq, layout, write_back(train_model, module))


def _export(qdq: onnx.ModelProto, layout: QdqLayout, trained: onnx.ModelProto) -> onnx.ModelProto:
    """The original QDQ graph with the trained values: integers on their grids, scales, clips."""
    learned = {t.name: numpy_helper.to_array(t) for t in trained.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    inits = {t.name: t for t in out.graph.initializer}
    nodes = {n.name: n for n in out.graph.node}

    def put(name: str, arr: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(arr.astype(helper.tensor_dtype_to_np_dtype(inits[name].data_type)), name))

    for name, init in inits.items():  # float parameters and scales
        if init.data_type == onnx.TensorProto.FLOAT and name in learned:
            put(name, learned[name])
    for wp in layout.weights:
        shadow = learned[f"{wp.int_name}{_SHADOW}"]
        s = _per_axis(learned[wp.scale], shadow.ndim, wp.axis)
        zp = _per_axis(numpy_helper.to_array(inits[wp.zero_point]).astype(np.float32), shadow.ndim, wp.axis)
        put(wp.int_name, np.clip(np.round(shadow / s) + zp, *wp.qrange))
    for bp in layout.biases:
        scale = numpy_helper.to_array(inits[bp.scale])
        if bp.consumer_scales is not None:
            scale = (learned[bp.consumer_scales[0]].astype(np.float64) * learned[bp.consumer_scales[1]]).astype(np.float32)
            put(bp.scale, scale.reshape(numpy_helper.to_array(inits[bp.scale]).shape))
        bias = np.round(learned[f"{bp.int_name}{_SHADOW}"] / scale)
        put(bp.int_name, np.clip(bias, -(2**31), 2**31 - 1))
    for ap in layout.acts:
        if not ap.clip:
            continue
        clip = nodes[ap.clip]
        s = float(learned[ap.scale])
        zp = float(numpy_helper.to_array(inits[ap.zero_point]))
        for name, q in ((clip.input[1], ap.qrange[0]), (clip.input[2], ap.qrange[1])):
            if name in inits:
                put(name, np.asarray((q - zp) * s, np.float32).reshape(numpy_helper.to_array(inits[name]).shape))
    return out
