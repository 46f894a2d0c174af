"""Empirical bias correction: make each quantized layer's mean output match the float model's.

`ptq.emit(bias_correction=True)` removes only the mean shift that *weight rounding* causes,
computed analytically from the input means. What a deployed int8 model gets wrong on average is
more: activation rounding and clipping, and every shift the layers before it already made,
passed on through ReLUs and pooling. NNCF corrects that by default (its (Fast)BiasCorrection);
this module does it by measurement:

1. run the float model on the calibration data once and keep each Conv/Gemm/ConvTranspose
   output's per-channel mean;
2. run the QDQ model with those layers' biases fed as inputs, one *level* at a time in
   topological order (a level holds the layers no earlier uncorrected layer feeds), measure the
   same means, and add ``float mean - quantized mean`` to the biases of that level.

Each layer is thus corrected with every layer before it already corrected, so a shift is fixed
once, where it first appears, and not again by every layer downstream. Memory is bounded: only
per-channel sums are kept, one batch of activations at a time. The cost is one pass of the QDQ
model per level over `samples` inputs. The QDQ model runs on the runtime it is for (OpenVINO's
int8 kernels round differently from QDQ arithmetic, see `_Probe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwopt.data import Dataset
from hwopt.graph.normalize import drop_unused_initializers
from hwopt.graph.shapes import with_outputs
from hwopt.quant.calibrate import ChannelMean
from hwopt.quant.ptq import feasible_batch

#: ops with a bias input (index 2) to fold a per-output-channel shift into
BIASED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm"})
#: calibration inputs the correction runs by default: a conv's channel mean averages H*W values
#: per input, so a few dozen inputs pin it down; a Gemm's averages one per input
DEFAULT_SAMPLES = 32


@dataclass
class BiasCorrection:
    """What the correction did, for the quantize report."""

    runtime: str = "onnxruntime"  # where the quantized means were measured
    layers: int = 0
    levels: int = 0
    samples: int = 0
    max_shift: float = 0.0  # largest |float mean - quantized mean| before correction, relative to the channel's spread
    skipped: list[str] = field(default_factory=list)  # layers whose bias could not take the shift (name: why)

    def to_dict(self) -> dict:
        return {"method": "empirical", "runtime": self.runtime, "layers": self.layers, "levels": self.levels, "samples": self.samples,
                "max_relative_shift": round(self.max_shift, 4), "skipped": self.skipped}


def _out_channels(node: onnx.NodeProto, shape: tuple[int, ...]) -> int | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Gemm":
        if attrs.get("transA", 0) or len(shape) != 2:
            return None
        return shape[0] if attrs.get("transB", 0) else shape[1]
    if node.op_type == "ConvTranspose":
        return shape[1] * int(attrs.get("group", 1)) if len(shape) > 1 else None
    return shape[0] if shape else None


def _targets(qdq: onnx.ModelProto, float_names: set[str]) -> tuple[list[onnx.NodeProto], dict[str, tuple[int, int]], list[str]]:
    """The layers to correct (quantized weights, present in the float model under the same name),
    each one's (level, output channels), and the layers left alone with the reason."""
    g = qdq.graph
    dq_node = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    inits = {t.name: t for t in g.initializer}
    level_of: dict[str, int] = {}
    targets: list[onnx.NodeProto] = []
    levels: dict[str, tuple[int, int]] = {}
    skipped: list[str] = []
    for n in g.node:  # graph order is topological
        lvl = max((level_of.get(i, 0) for i in n.input if i), default=0)
        if n.op_type in BIASED_OPS and len(n.input) > 1 and n.input[1] in dq_node and n.name in float_names:
            q = dq_node[n.input[1]].input[0]
            channels = _out_channels(n, tuple(inits[q].dims)) if q in inits else None
            bias = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if channels is None:
                skipped.append(f"{n.name}: output channels unknown")
            elif bias is not None and int(np.prod(bias.dims)) not in (1, channels):
                skipped.append(f"{n.name}: bias shape {list(bias.dims)}")
            elif len(n.input) > 2 and n.input[2] and bias is None:
                skipped.append(f"{n.name}: bias is computed, not a constant")
            else:
                lvl += 1
                targets.append(n)
                levels[n.name] = (lvl, channels)
        for o in n.output:
            level_of[o] = lvl
    return targets, levels, skipped


class _Probe:
    """One model compiled on `runtime` that returns the named tensors it exposes.

    onnxruntime (basic optimizations) computes plain QDQ arithmetic; OpenVINO runs the int8 kernels it deploys, whose rounding differs from QDQ
    arithmetic enough that a shift measured on one does not fix the other (ResNet-18: SQNR on
    OpenVINO fell 0.7 dB when corrected on onnxruntime's arithmetic).
    """

    def __init__(self, model: onnx.ModelProto, runtime: str):
        self.runtime = runtime
        if runtime == "openvino":
            import openvino as ov

            core = ov.Core()
            config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1}
            self._compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", config)
            self._request = self._compiled.create_infer_request()
            return
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.log_severity_level = 3
        self._sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.runtime != "openvino":
            return self._sess.run(names, feeds)
        out = self._request.infer(feeds)
        return [np.asarray(out[self._compiled.output(n)]) for n in names]


def _channel_means(probe: _Probe, names: list[str], data: Dataset, samples: int, batch: int,
                   extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel means (axis 1: NCHW convs and [N, M] Gemms alike) of `names` over the first `samples` inputs."""
    means = {n: ChannelMean() for n in names}
    for feeds in data.batches(batch, samples):
        for n, x in zip(names, probe.run(names, {**feeds, **extra})):
            means[n].update(x)
    return {n: m.mean for n, m in means.items()}


def correct_biases(float_model: onnx.ModelProto, qdq: onnx.ModelProto, calib: Dataset, *,
                   samples: int = DEFAULT_SAMPLES, runtime: str = "onnxruntime") -> tuple[onnx.ModelProto, BiasCorrection]:
    """Copy of `qdq` whose quantized Conv/Gemm/ConvTranspose biases absorb the mean output shift
    against `float_model` (the model `qdq` was emitted from: same node names), measured on
    `calib` with the QDQ model running on `runtime` (onnxruntime or openvino; the float model
    always on onnxruntime). Every corrected layer gets a bias of its own."""
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    g = out.graph
    float_nodes = {n.name: n for n in float_model.graph.node if n.name}
    targets, level, skipped = _targets(out, set(float_nodes))
    report = BiasCorrection(runtime=runtime, skipped=skipped)
    if not targets:
        return out, report
    inits = {t.name: t for t in g.initializer}
    bias: dict[str, np.ndarray] = {}  # node -> its bias, fed as a graph input while measuring
    for n in targets:
        channels = level[n.name][1]
        b = np.zeros(channels, np.float32)
        if len(n.input) > 2 and n.input[2]:
            b = np.broadcast_to(numpy_helper.to_array(inits[n.input[2]]).astype(np.float32).reshape(-1), (channels,)).copy()
        bias[n.name] = b
        while len(n.input) < 3:
            n.input.append("")
        n.input[2] = f"{n.name}_bias_corrected"
    probe = with_outputs(out, [n.output[0] for n in targets])
    probe.graph.input.extend(helper.make_tensor_value_info(f"{n}_bias_corrected", TensorProto.FLOAT, [len(b)])
                             for n, b in bias.items())
    f_names = [float_nodes[n.name].output[0] for n in targets]

    f_sess = _Probe(with_outputs(float_model, f_names), "onnxruntime")
    q_sess = _Probe(probe, runtime)
    samples = min(samples, len(calib))
    batch = feasible_batch(float_model, 16)
    f_means = _channel_means(f_sess, f_names, calib, samples, batch, {})
    spread = {n.name: float(np.abs(f_means[float_nodes[n.name].output[0]]).max()) + 1e-12 for n in targets}
    for lvl in sorted({lv for lv, _ in level.values()}):
        now = [n for n in targets if level[n.name][0] == lvl]
        feeds = {f"{k}_bias_corrected": v for k, v in bias.items()}
        q_means = _channel_means(q_sess, [n.output[0] for n in now], calib, samples, batch, feeds)
        for n in now:
            shift = f_means[float_nodes[n.name].output[0]] - q_means[n.output[0]]
            if shift.shape != bias[n.name].shape or not np.all(np.isfinite(shift)):
                report.skipped.append(f"{n.name}: measured {shift.shape} means for {bias[n.name].shape} bias")
                continue
            bias[n.name] = (bias[n.name] + shift).astype(np.float32)
            report.max_shift = max(report.max_shift, float(np.abs(shift).max()) / spread[n.name])
            report.layers += 1
        report.levels += 1
    for name, b in bias.items():
        g.initializer.append(numpy_helper.from_array(b, f"{name}_bias_corrected"))
    drop_unused_initializers(out)  # the replaced original biases
    report.samples = samples
    return out, report

