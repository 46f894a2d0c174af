"""Export a model to each target runtime's format, verified by running it.

    from hwopt.exporters import export
    r = export("model.onnx", "openvino", "out/", precision="bf16")
    r.artifact, r.verification.max_abs_diff

Runtimes: onnxruntime (optimized .onnx + .ort), openvino (IR .xml/.bin), litert (.tflite fp32,
fp16, full-integer int8 via an isolated onnx2tf venv), tensorrt (TensorRT-compliant QDQ .onnx,
rule check, engine build scripts; engine built only where TensorRT is installed).
"""

from __future__ import annotations

import os

import onnx

from hwopt.data import Dataset, load_dataset
from hwopt.devices import DeviceProfile, load_device
from hwopt.errors import HwoptError
from hwopt.exporters.base import ExportResult, Verification, compare_outputs, is_quantized, quantized_ops, resolve_output
from hwopt.exporters.onnxruntime_export import export_onnxruntime
from hwopt.exporters.openvino_export import export_openvino
from hwopt.exporters.tensorrt_export import QDQIssue, check_tensorrt_qdq, export_tensorrt, trtexec_command
from hwopt.exporters.tflite_export import ConversionCache, export_litert
from hwopt.exporters.verify import onnx_reference, verification_feeds
from hwopt.graph.load import load_model
from hwopt.graph.normalize import normalize_model
from hwopt.graph.shapes import Shapes, input_specs, resolve_input_shapes

PathLike = str | os.PathLike

#: runtime -> (file suffix of the main artifact, precisions it can be exported in)
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnxruntime": (".onnx", ("fp32", "int8")),
    "openvino": (".xml", ("fp32", "bf16", "fp16", "int8")),
    "litert": (".tflite", ("fp32", "fp16", "int8")),
    "tensorrt": (".onnx", ("fp32", "fp16", "int8")),
}


def export(
    model: PathLike | onnx.ModelProto,
    to: str,
    out: PathLike,
    *,
    target: str | DeviceProfile | None = None,
    precision: str = "fp32",
    calib: PathLike | Dataset | None = None,
    shapes: Shapes | None = None,
    reference_model: onnx.ModelProto | None = None,
    cache: ConversionCache | None = None,
    log=None,
) -> ExportResult:
    """Export `model` for runtime `to` into `out` (a file with the runtime's suffix, or a folder).

    int8 takes an already quantized (QDQ) model as it is; a float model is quantized first with
    the runtime's scheme on `calib` (LiteRT quantizes inside the TFLite converter instead). The
    artifact is compared with `reference_model` (default: `model`) run by onnxruntime.
    `cache` keeps TFLite conversions (one onnx2tf run serves every LiteRT precision).

    Dynamic input dims stay dynamic in ONNX (onnxruntime, TensorRT) and OpenVINO IR exports,
    so one file serves every input size; `shapes` (or the data) only pick the sizes verified
    on. TFLite is static: it is converted at those sizes.
    """
    if to not in FORMATS:
        raise HwoptError(f"unknown export runtime {to!r}; choose one of {', '.join(FORMATS)}")
    suffix, precisions = FORMATS[to]
    if precision not in precisions:
        raise HwoptError(f"{to} export supports precision {', '.join(precisions)}, not {precision!r}")
    device = load_device(target) if isinstance(target, str) else target
    if device is not None and to not in device.runtimes:
        raise HwoptError(f"target {device.name} runs {', '.join(device.runtimes)}, not {to}")
    proto = normalize_model(model if isinstance(model, onnx.ModelProto) else load_model(model))
    int8_ops = quantized_ops(proto)
    if int8_ops and precision != "int8":
        raise HwoptError(f"model is already quantized ({', '.join(int8_ops)}); it cannot become {precision}: "
                         "export it with --precision int8 to pass it through as it is")
    data = calib if isinstance(calib, Dataset) or calib is None else load_dataset(calib, proto)
    if data is not None:
        concrete = {s.name: (1, *data.inputs[s.name].shape[1:]) for s in input_specs(proto)}
    else:
        concrete = resolve_input_shapes(proto, shapes)
    feeds = verification_feeds(proto, data, concrete)
    ref_model = reference_model if reference_model is not None else proto
    reference = onnx_reference(ref_model, feeds)
    vs_float = not is_quantized(ref_model)
    if precision == "int8" and to != "litert" and not is_quantized(proto):
        if data is None:
            raise HwoptError(f"int8 export of a float model needs calibration data (--calib) to quantize it for {to}")
        proto = quantize_for_runtime(proto, data, to, device, concrete)
    out_path = resolve_output(out, suffix)
    common = dict(precision=precision, reference=reference, feeds=feeds)
    if to == "onnxruntime":
        return export_onnxruntime(proto, out_path, vs_float=vs_float, **common)
    if to == "openvino":
        return export_openvino(proto, out_path, vs_float=vs_float, **common)
    if to == "tensorrt":
        return export_tensorrt(proto, out_path, shapes=concrete, device=device, vs_float=vs_float, **common)
    return export_litert(proto, out_path, shapes=concrete, data=data, cache=cache, log=log, **common)


#: the device whose QDQ rules apply when an export names no target
DEFAULT_TARGET = {"onnxruntime": "x86-avx512", "openvino": "x86-avx512", "tensorrt": "cuda-gpu", "litert": "rpi4"}


def quantize_for_runtime(model: onnx.ModelProto, data: Dataset, runtime: str, device: DeviceProfile | None,
                         shapes: Shapes | None = None) -> onnx.ModelProto:
    """Plain int8 post-training quantization with `runtime`'s QDQ scheme (hwopt.quant)."""
    from hwopt.quant.api import quantize

    return quantize(model, data, target=device or DEFAULT_TARGET[runtime], runtime=runtime, measure_latency=False,
                    shapes=shapes).model


__all__ = [
    "FORMATS", "ExportResult", "QDQIssue", "Verification", "check_tensorrt_qdq", "compare_outputs", "export",
    "is_quantized", "quantize_for_runtime", "quantized_ops", "trtexec_command",
]
