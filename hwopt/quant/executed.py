"""What precision a quantized model actually *ran* in, read from the runtime rather than the graph.

A QDQ graph only says where quantization was asked for; whether a convolution then runs an int8
kernel depends on the runtime's fusion rules, and a timing difference of a few percent on a
shared machine cannot tell a misplaced FakeQuantize from load. These helpers give noise-free
evidence instead:

* `openvino_precision_mix` compiles the model on OpenVINO's CPU plugin and reads its runtime
  graph: per executed layer its ``layerType`` and ``runtimePrecision`` (``u8``/``i8`` for an int8
  kernel). It counts the multiply-accumulates of convolutions and matrix products that run in
  int8 vs float, names the float ones, and counts the glue OpenVINO had to keep: standalone
  FakeQuantize layers (a quantize it could not fold into a producer), Reorders and Converts.
* `onnxruntime_node_mix` runs one inference with onnxruntime's profiler and counts the kernels
  it executed by op type: ``QLinearConv`` / ``QGemm`` / ``QLinearMatMul`` are integer kernels, a
  float ``Conv`` with ``DequantizeLinear`` nodes executed around it means the QDQ group was not
  fused (its selectors did not match) and the layer ran in float with extra dequantize work.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from hwopt.errors import HwoptError
from hwopt.graph.shapes import Shapes, fix_input_shapes, random_inputs, resolve_input_shapes

#: OpenVINO CPU layer types that do the multiply-accumulates (runtime graph names)
OV_MAC_LAYERS = frozenset({"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected",
                           "FullyConnectedQuantizedLegacy", "MatMul"})
OV_INT8 = frozenset({"u8", "i8"})
#: onnxruntime kernels that compute in integers (QDQ groups its optimizer fused)
ORT_INT8_KERNELS = frozenset({"QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "QLinearAdd",
                              "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat",
                              "QLinearSigmoid", "QLinearLeakyRelu", "ConvInteger", "MatMulInteger"})
ORT_FLOAT_MAC_KERNELS = frozenset({"Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul", "NhwcFusedConv",
                                   "ConvTranspose", "FusedGemm"})


@dataclass
class PrecisionMix:
    """Executed precision of one compiled model (OpenVINO runtime graph)."""

    int8_macs: int = 0
    float_macs: int = 0
    mac_layers: dict[str, int] = field(default_factory=dict)  # "Convolution:u8" -> count
    float_mac_layers: list[str] = field(default_factory=list)  # names of float convs/matmuls (the fp32 islands)
    fake_quantize: int = 0  # standalone quantize layers (FakeQuantize, or a fused Subgraph writing int8)
    reorders: int = 0
    converts: int = 0
    float_other: list[str] = field(default_factory=list)  # other layers running in float ("type:name")
    layers: int = 0  # executed layers (constants, inputs and outputs not counted): fewer = less glue

    @property
    def int8_mac_share(self) -> float:
        total = self.int8_macs + self.float_macs
        return self.int8_macs / total if total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "int8_mac_share": round(self.int8_mac_share, 4)}

    def summary(self) -> str:
        return (f"{self.layers} layers, int8 MACs {100 * self.int8_mac_share:.1f}% "
                f"({len(self.float_mac_layers)} float conv/matmul), "
                f"{len(self.float_other)} other float layers, FQ {self.fake_quantize}, reorders {self.reorders}, "
                f"converts {self.converts}")


def _static_dims(port) -> tuple[int, ...] | None:
    shape = port.get_partial_shape()
    return tuple(int(d) for d in shape.to_shape()) if shape.is_static else None


def _macs_per_output(layer_type: str, op) -> int:
    """Multiply-accumulates for one output element of a MAC layer (reduction length)."""
    if layer_type in ("Convolution", "GroupConvolution", "Deconvolution"):
        w = _static_dims(op.input(1)) if op.get_input_size() > 1 else None
        out = _static_dims(op.output(0))
        if not w or not out:
            return 0
        if layer_type == "GroupConvolution" and len(w) == len(out) + 1:  # [G, Cout/G, Cin/G, k...]
            return int(np.prod(w[2:]))
        if layer_type == "Deconvolution":  # [Cin, Cout, k...]: each input pixel feeds k outputs per channel
            return int(np.prod(w[2:])) * w[0] // max(1, out[1])
        return int(np.prod(w[1:]))
    x = _static_dims(op.input(0))
    return x[-1] if x else 0


def _writes_int8(info) -> bool:
    """A float layer whose outputs are int8 is a quantize step (OpenVINO wraps a standalone
    FakeQuantize into a `Subgraph` layer when it fuses eltwise chains)."""
    outs = info["outputPrecisions"].astype(str).split(",") if "outputPrecisions" in info else []
    return bool(outs) and all(o.strip() in OV_INT8 for o in outs)


def _constant_only(op) -> bool:
    """A layer fed by constants only (OpenVINO keeps weight reshapes as layers; no per-inference cost)."""
    srcs = [i.get_source_output().get_node().get_rt_info() for i in op.inputs()]
    return bool(srcs) and all("layerType" in r and r["layerType"].astype(str) == "Const" for r in srcs)


def precision_mix(compiled) -> PrecisionMix:
    """The executed precision mix of an `openvino.CompiledModel` (static shapes give MAC counts;
    with dynamic ones the layer counts are still right and MACs read 0)."""
    mix = PrecisionMix()
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
        if layer in ("Input", "Parameter", "Const", "Output", "Result"):
            continue
        mix.layers += 1
        if layer in OV_MAC_LAYERS:
            out = _static_dims(op.output(0))
            macs = int(np.prod(out)) * _macs_per_output(layer, op) if out else 0
            counts[f"{layer}:{prec}"] += 1
            if prec in OV_INT8:
                mix.int8_macs += macs
            else:
                mix.float_macs += macs
                mix.float_mac_layers.append(op.get_friendly_name())
        elif layer == "FakeQuantize" or (prec not in OV_INT8 and _writes_int8(info)):
            mix.fake_quantize += 1
        elif layer == "Reorder":
            mix.reorders += 1
        elif layer == "Convert":
            mix.converts += 1
        elif prec not in OV_INT8 and not _constant_only(op):
            mix.float_other.append(f"{layer}:{op.get_friendly_name()}")
    mix.mac_layers = dict(sorted(counts.items()))
    return mix


def openvino_precision_mix(model: onnx.ModelProto | str | os.PathLike, shapes: Shapes | None = None) -> PrecisionMix:
    """Compile `model` (ONNX or OpenVINO IR) on the CPU plugin at concrete `shapes` (dynamic dims:
    batch 1, others must be given) with fp32 as the float precision, and report its precision mix."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise HwoptError("OpenVINO is not installed here (pip install 'hwopt[openvino]')") from exc
    core = ov.Core()
    if isinstance(model, onnx.ModelProto):
        model = fix_input_shapes(model, resolve_input_shapes(model, shapes))
        ov_model = core.read_model(model.SerializeToString(), b"")
    else:
        ov_model = core.read_model(str(model))
        if shapes:
            ov_model.reshape({k: list(v) for k, v in shapes.items()})
        elif ov_model.is_dynamic():
            ov_model.reshape({p.get_any_name(): [1 if d.is_dynamic else d.get_length() for d in p.get_partial_shape()]
                              for p in ov_model.inputs})
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1}
    try:
        return precision_mix(core.compile_model(ov_model, "CPU", config))
    except RuntimeError as exc:
        raise HwoptError(f"OpenVINO cannot compile the model: {str(exc).strip().splitlines()[0]}") from exc


@dataclass
class NodeMix:
    """Kernels one onnxruntime inference executed, by op type."""

    ops: dict[str, int]
    int8_kernels: int
    float_mac_kernels: int
    dequantize: int  # DequantizeLinear nodes still executed (unfused QDQ)
    quantize: int

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"int8 kernels {self.int8_kernels}, float conv/matmul {self.float_mac_kernels}, "
                f"DQ {self.dequantize}, Q {self.quantize}")


def onnxruntime_node_mix(model: onnx.ModelProto, shapes: Shapes | None = None, threads: int = 1) -> NodeMix:
    """Run `model` once on onnxruntime (CPU, all graph optimizations, profiling on) and count the
    kernels that executed (after fusion), so QLinearConv vs float Conv + DequantizeLinear shows."""
    import onnxruntime as ort

    concrete = resolve_input_shapes(model, shapes)
    feeds = random_inputs(model, concrete)
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        sess.run(None, feeds)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    ops: Counter[str] = Counter()
    for ev in trace:
        args = ev.get("args", {})
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time") and "op_name" in args:
            ops[args["op_name"]] += 1
    return NodeMix(dict(sorted(ops.items())), sum(v for k, v in ops.items() if k in ORT_INT8_KERNELS),
                   sum(v for k, v in ops.items() if k in ORT_FLOAT_MAC_KERNELS),
                   ops.get("DequantizeLinear", 0), ops.get("QuantizeLinear", 0))
