"""Each runtime's quantization rules, in one place.

* onnxruntime (CPU): QDQ with symmetric per-channel int8 weights and activations with a zero
  point, stored as the device profile's `qdq.activation_dtype` says (S8S8 or U8S8: on x86 with
  VNNI, onnxruntime fuses uint8 groups far more often and runs them faster). Outputs of weighted
  ops are quantized too, so its QDQ fusion turns DQ->Conv->Q into an integer kernel (QLinearConv)
  instead of leaving a float Conv between dequantize nodes; a classifier's last Gemm that writes
  a graph output writes it through its Q/DQ (QGemm), or it would stay float. The
  QOperator format (U8S8/S8S8 QLinear* ops written directly) is never emitted: it is slow on x86.
* OpenVINO (CPU): QDQ on the *inputs* of weighted ops, Add and pooling; OpenVINO folds each
  Q/DQ pair into a FakeQuantize and its low-precision transformations run the consumer in int8.
  Quantizing outputs as well only adds requantize steps it cannot fuse. Placed where NNCF puts
  its FakeQuantizes (checked layer by layer with `hwopt.quant.executed`): above MaxPool,
  reshapes and Split (which run on int8 as is), one shared scale for a Concat's inputs (so the
  Concat runs in int8), none on a Mul by a Sigmoid/HardSigmoid/Clip gate (SE blocks, SiLU,
  hard-swish: OpenVINO fuses the gate into the conv and the next layer's quantize into the Mul)
  nor on an Add/Mul with a constant operand (a bias or scale it folds into a neighbour).
* TensorRT: symmetric int8 only (zero point 0) for activations and weights, per-channel on axis
  0, Q/DQ on op inputs (TensorRT fuses a Q into the preceding layer's epilogue).
* LiteRT/TFLite full-integer int8: every float tensor between ops quantized (asymmetric int8
  activations, symmetric per-channel weights), so the converter finds no float island.

A device profile's `qdq` rules can only tighten a scheme (e.g. force symmetric activations).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hwopt.devices import DeviceProfile
from hwopt.errors import HwoptError

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: ops whose activation inputs are quantized besides the weighted ones (their integer kernels exist
#: on the runtimes here, and leaving them float would force a dequantize/quantize around them)
DEFAULT_ACTIVATION_OPS = frozenset({"Add", "Concat", "GlobalAveragePool", "AveragePool", "MaxPool", "Mul"})
#: activation functions that are folded into the producer's output quantization (QDQ goes after them)
FUSED_ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "HardSigmoid", "Sigmoid", "HardSwish"})
#: ops OpenVINO runs on int8 data as it is (its low-precision transformations move the dequantize
#: past them): a quantizer on their output belongs on their input(s), as NNCF places it. Average
#: pooling is not one of them: its mean leaves the grid, so it gets its own output quantizer.
OPENVINO_PASS_THROUGH = frozenset({"MaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity",
                                   "Split", "Concat"})
#: activations onnxruntime's QDQ fusion absorbs into the output QuantizeLinear of a conv (its
#: range clips them); after any other (HardSigmoid, Sigmoid) a Q placed past the activation leaves
#: the conv float: PP-style SE blocks' second conv ran as FusedConv with 8 Transposes around it
ORT_FUSED_ACTIVATIONS = frozenset({"Relu", "Clip"})
#: ops onnxruntime runs on int8 as they are when a DQ -> op -> Q with one scale surrounds them
#: (its DropQDQ rule): quantizing their output for the next layer also quantizes their input
ORT_PASS_THROUGH = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "MaxPool"})
#: gates: a Mul reading one of these is a squeeze-excite scale, a SiLU/swish or an exported
#: hard-swish x*relu6(x+3), not a layer join to quantize (its float result is quantized once, for
#: the next conv, and OpenVINO fuses the gate into the conv before it)
GATE_OPS = frozenset({"Sigmoid", "HardSigmoid", "Clip"})


@dataclass(frozen=True)
class Scheme:
    """How one runtime wants a model quantized."""

    runtime: str
    activation_symmetric: bool
    weight_per_channel: bool = True
    quantize_outputs: bool = False  # also quantize the outputs of weighted ops
    fused_activations: frozenset[str] = FUSED_ACTIVATIONS  # an output quantizer goes after these
    mirror_through: frozenset[str] = frozenset()  # quantize these ops' input too, sharing the output's scale
    activation_ops: frozenset[str] = DEFAULT_ACTIVATION_OPS
    all_tensors: bool = False  # full-integer: quantize every float activation between ops
    hoist_through: frozenset[str] = frozenset()  # move an input quantizer above these ops (see ptq.hoist_quantizers)
    float_gates: bool = False  # no QDQ for a Mul by a GATE_OPS output nor an Add/Mul with a constant operand
    activation_storage: str = "int8"  # ONNX type of activation Q/DQ (uint8: same grid, zero point + 128)
    device_storage: bool = False  # the device profile's `qdq.activation_dtype` picks the storage
    route_outputs: bool = False  # a weighted op's graph output leaves through its Q/DQ (`qdq.route_output_quantizers`)
    note: str = ""


SCHEMES: dict[str, Scheme] = {
    # storage from the device: on x86 with VNNI onnxruntime 1.32 fuses far more uint8 QDQ groups
    # into QLinear kernels than int8 ones (ResNet digits: 9 of 9 convs vs 3; int8 ran 0.71x fp32,
    # uint8 1.48x), see docs/quantize.md
    "onnxruntime": Scheme("onnxruntime", activation_symmetric=False, quantize_outputs=True, device_storage=True,
                          fused_activations=ORT_FUSED_ACTIVATIONS, mirror_through=ORT_PASS_THROUGH, route_outputs=True,
                          note="QDQ, per-channel int8 weights, activations as the device says; QLinear fusion needs output Q"),
    "openvino": Scheme("openvino", activation_symmetric=False,
                       activation_ops=frozenset({"Add", "Concat", "GlobalAveragePool", "AveragePool", "MatMul", "Mul"}),
                       hoist_through=OPENVINO_PASS_THROUGH, float_gates=True,
                       # OpenVINO 2026.4's CPU plugin computes a Concat of int8-typed quantized
                       # inputs feeding a conv wrongly (PP-OCR det: cosine 0.15 on OpenVINO, 0.99
                       # on onnxruntime, same QDQ model); with uint8 storage it is exact
                       activation_storage="uint8",
                       note="QDQ on op inputs -> FakeQuantize -> int8 kernels"),
    "tensorrt": Scheme("tensorrt", activation_symmetric=True,
                       activation_ops=frozenset({"Add", "Concat", "GlobalAveragePool", "AveragePool", "MaxPool"}),
                       note="symmetric int8 only, per-channel axis 0, Q/DQ on inputs"),
    "litert": Scheme("litert", activation_symmetric=False, quantize_outputs=True, all_tensors=True,
                     note="full-integer int8 (TFLite)"),
}


def scheme_for(runtime: str, device: DeviceProfile | None = None) -> Scheme:
    """The scheme for `runtime`, tightened by the device's QDQ rules."""
    if runtime not in SCHEMES:
        raise HwoptError(f"no quantization scheme for runtime {runtime!r}; known: {', '.join(SCHEMES)}")
    s = SCHEMES[runtime]
    if device is not None and device.qdq.activation_symmetric and not s.activation_symmetric:
        s = replace(s, activation_symmetric=True)
    if device is not None and s.device_storage:
        s = replace(s, activation_storage=device.qdq.activation_dtype)
    return s
