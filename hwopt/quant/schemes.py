"""Each runtime's quantization rules, in one place.

* onnxruntime (CPU): S8S8 QDQ — int8 activations with a zero point, symmetric per-channel int8
  weights. Outputs of weighted ops are quantized too, so its QDQ fusion turns DQ->Conv->Q into
  an integer kernel (QLinearConv) instead of leaving a float Conv between dequantize nodes. The
  QOperator format (U8S8/S8S8 QLinear* ops written directly) is never emitted: it is slow on x86.
* OpenVINO (CPU): QDQ on the *inputs* of weighted ops, Add and pooling; OpenVINO folds each
  Q/DQ pair into a FakeQuantize and its low-precision transformations run the consumer in int8.
  Quantizing outputs as well only adds requantize steps it cannot fuse. Checked against
  onnxruntime's `quantize_static` QDQ on OpenVINO (zoo MobileNetV2): the same 52 u8
  convolutions and i8 classifier, per-layer time within 5% (docs/quantize.md).
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


@dataclass(frozen=True)
class Scheme:
    """How one runtime wants a model quantized."""

    runtime: str
    activation_symmetric: bool
    weight_per_channel: bool = True
    quantize_outputs: bool = False  # also quantize the outputs of weighted ops
    activation_ops: frozenset[str] = DEFAULT_ACTIVATION_OPS
    all_tensors: bool = False  # full-integer: quantize every float activation between ops
    note: str = ""


SCHEMES: dict[str, Scheme] = {
    "onnxruntime": Scheme("onnxruntime", activation_symmetric=False, quantize_outputs=True,
                          note="S8S8 QDQ, per-channel weights; QLinear fusion needs output Q"),
    "openvino": Scheme("openvino", activation_symmetric=False,
                       activation_ops=frozenset({"Add", "Concat", "GlobalAveragePool", "AveragePool", "MatMul", "Mul"}),
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
    return s
