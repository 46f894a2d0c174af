"""Store the weights of a 4-bit (or lower) hwopt QDQ model as real INT4 tensors.

hwopt emulates bit-widths below 8 in int8 storage (see `hwopt.quant.qdq`): a W4 model is as large
as a W8 one. ONNX opset 21 has INT4 tensors, and onnxruntime (checked with 1.32) runs a weight
``DequantizeLinear`` whose input is an INT4 initializer in front of Conv, ConvTranspose, Gemm and
MatMul, per-tensor or per-channel. Re-storing the same integers as INT4 therefore halves the
weight bytes without changing a single number the model computes. Activations keep their int8
Q/DQ with the emulating Clip: onnxruntime has no faster int4 activation kernels, and the weight
bytes are where the size is.

It is a storage change only: runtimes without opset-21 INT4 support (OpenVINO, TensorRT,
onnx2tf) keep using the int8-storage model, which `int4_export` leaves untouched.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from hwopt.errors import HwoptError
from hwopt.graph.normalize import opset_of
from hwopt.quant.qdq import read_quant_params

#: first opset whose DequantizeLinear takes INT4 inputs
INT4_OPSET = 21
#: IR version that has the INT4 element type
INT4_IR_VERSION = 10


def int4_weights(model: onnx.ModelProto) -> list[str]:
    """Quantized weight tensors of a hwopt QDQ model whose integers fit INT4 (bits <= 4)."""
    return sorted(t for t, r in read_quant_params(model).items() if r.kind == "weight" and r.bits <= 4)


def _upgrade(model: onnx.ModelProto) -> onnx.ModelProto:
    if opset_of(model) >= INT4_OPSET:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        return out
    try:
        out = version_converter.convert_version(model, INT4_OPSET)
    except Exception as exc:  # the converter raises plain RuntimeError/ValueError with long texts
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HwoptError(f"cannot upgrade the model to opset {INT4_OPSET} for INT4 weights: {first}") from exc
    # the converter keeps graph and metadata but not always the IR version the new types need
    out.ir_version = max(out.ir_version, INT4_IR_VERSION)
    return out


def _int4_tensor(values: np.ndarray, name: str) -> onnx.TensorProto:
    """INT4 initializer in raw_data: two values per byte, the first in the low nibble (ONNX's packing)."""
    flat = values.astype(np.int8).reshape(-1)
    if flat.size % 2:
        flat = np.append(flat, np.int8(0))
    nibbles = flat.view(np.uint8) & 0x0F
    packed = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)
    return helper.make_tensor(name, onnx.TensorProto.INT4, values.shape, packed.tobytes(), raw=True)


def int4_export(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of a hwopt QDQ model with its <=4-bit weights (and their zero points) stored as INT4.

    The opset is raised to 21 (ONNX's version converter); node and tensor names, scales and the
    integer values are unchanged, so the model computes exactly what the int8-storage model
    does. HwoptError when the model has no weight of 4 bits or fewer, or cannot be upgraded.
    """
    names = int4_weights(model)
    if not names:
        raise HwoptError("the model has no weights quantized to 4 bits or fewer; INT4 storage needs --wbits 4 (or 3, 2)")
    records = read_quant_params(model)
    out = _upgrade(model)
    if not any(o.domain in ("", "ai.onnx") for o in out.opset_import):
        raise HwoptError("the model has no default-domain opset import")
    inits = {t.name: t for t in out.graph.initializer}
    dq_nodes = {n.name: n for n in out.graph.node}
    for tensor in names:
        rec = records[tensor]
        dq = dq_nodes.get(rec.dq)
        if dq is None:
            raise HwoptError(f"weight {tensor!r}: DequantizeLinear {rec.dq!r} not found after the opset upgrade")
        q_name, zp_name = dq.input[0], dq.input[2] if len(dq.input) > 2 else ""
        ints = numpy_helper.to_array(inits[q_name])
        if ints.min(initial=0) < -8 or ints.max(initial=0) > 7:
            raise HwoptError(f"weight {tensor!r} has integers outside the INT4 range [-8, 7]")
        inits[q_name].CopyFrom(_int4_tensor(ints, q_name))
        if zp_name:
            inits[zp_name].CopyFrom(_int4_tensor(numpy_helper.to_array(inits[zp_name]), zp_name))
    return out

