"""TensorRT: a QDQ ONNX model that TensorRT can fuse, plus scripts that build the engine.

TensorRT's explicit-quantization mode reads Q/DQ pairs and fuses them into int8 kernels, but only
when the pairs follow its rules: int8 (not uint8) with zero point 0, per-tensor activation
scales, weight scales per-tensor or per-channel on the output-channel axis, and every Q directly
followed by a DQ. A model that breaks them fails to build or silently runs layers in float, so
`check_tensorrt_qdq` checks them without a GPU and always runs. The engine is built (and its
outputs compared with the ONNX model) only where TensorRT is importable.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwopt.devices import DeviceProfile
from hwopt.exporters.base import ExportResult, Verification
from hwopt.exporters.verify import Feeds, verify_session
from hwopt.graph.load import atomic_write_text, save_model
from hwopt.graph.shapes import Shapes
from hwopt.runtimes import get_runtime

_WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclass(frozen=True)
class QDQIssue:
    """One place where the QDQ graph breaks a TensorRT rule."""

    node: str
    rule: str
    message: str
    severity: str  # "error": TensorRT refuses or computes wrongly; "warning": runs, but slower

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _weight_axis(consumer: onnx.NodeProto, input_index: int) -> int | None:
    """The output-channel axis of a weight input, where TensorRT allows per-channel scales."""
    if consumer.op_type == "Conv" and input_index == 1:
        return 0
    if consumer.op_type == "ConvTranspose" and input_index == 1:
        return 1
    if consumer.op_type == "Gemm" and input_index == 1:
        trans_b = next((helper.get_attribute_value(a) for a in consumer.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if consumer.op_type == "MatMul" and input_index == 1:
        return -1
    return None


def check_tensorrt_qdq(model: onnx.ModelProto) -> list[QDQIssue]:
    """Every violation of TensorRT's explicit-quantization rules in `model` (empty = compliant)."""
    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    producer: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
        for name in node.output:
            producer[name] = node
    issues: list[QDQIssue] = []

    def add(node: onnx.NodeProto, rule: str, msg: str, severity: str = "error") -> None:
        issues.append(QDQIssue(node.name or node.output[0], rule, msg, severity))

    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = inits.get(node.input[1]) if len(node.input) > 1 else None
        zp_name = node.input[2] if len(node.input) > 2 else ""
        if not zp_name:
            add(node, "int8", "no zero point: ONNX then means uint8, TensorRT needs int8 with zero point 0")
        elif zp_name in inits:
            zp = inits[zp_name]
            if zp.data_type != onnx.TensorProto.INT8:
                add(node, "int8", f"zero point type is {onnx.TensorProto.DataType.Name(zp.data_type)}, TensorRT needs INT8")
            if np.any(numpy_helper.to_array(zp) != 0):
                add(node, "symmetric", "zero point is not 0 (TensorRT supports symmetric quantization only)")
        else:
            add(node, "constant-params", "zero point is computed at run time; TensorRT needs a constant")
        if scale is None:
            add(node, "constant-params", "scale is not a constant initializer")
            continue
        s = numpy_helper.to_array(scale)
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            add(node, "scale", "scale must be positive and finite")
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
        data_is_weight = node.input[0] in inits or (
            node.op_type == "DequantizeLinear"
            and node.input[0] in producer
            and producer[node.input[0]].op_type == "QuantizeLinear"
            and producer[node.input[0]].input[0] in inits
        )
        if node.op_type == "QuantizeLinear":
            after = consumers.get(node.output[0], [])
            if not after or any(c.op_type != "DequantizeLinear" for c, _ in after):
                add(node, "q-dq-pair", "QuantizeLinear must feed only DequantizeLinear (TensorRT fuses Q/DQ pairs)")
        if s.size > 1:
            if not data_is_weight:
                add(node, "per-tensor-activation", f"activation scale has {s.size} values; TensorRT needs one")
            elif node.op_type == "DequantizeLinear":
                for consumer, idx in consumers.get(node.output[0], []):
                    want = _weight_axis(consumer, idx)
                    rank = len(inits[node.input[0]].dims) if node.input[0] in inits else None
                    norm = axis % rank if rank else axis
                    want_norm = want % rank if (want is not None and rank) else want
                    if want is None or norm != want_norm:
                        add(node, "per-channel-axis", f"per-channel axis {axis} on input {idx} of {consumer.op_type} "
                            f"{consumer.name!r}; TensorRT wants axis {want}")
    for node in model.graph.node:
        if node.op_type not in _WEIGHTED or len(node.input) < 2:
            continue
        from_dq = [bool(n in producer and producer[n].op_type == "DequantizeLinear") for n in node.input[:2]]
        if from_dq[0] != from_dq[1]:
            which = "weight" if from_dq[1] else "activation"
            add(node, "fusable", f"only the {which} input is quantized; TensorRT runs this {node.op_type} in float", "warning")
    return issues


def _shapes_arg(shapes: Shapes) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def trtexec_command(model_file: str, engine_file: str, precision: str, shapes: Shapes, sparsity: bool) -> list[str]:
    """The trtexec invocation that builds the engine (int8 implies fp16 fallback for float layers)."""
    cmd = ["trtexec", f"--onnx={model_file}", f"--saveEngine={engine_file}", f"--shapes={_shapes_arg(shapes)}"]
    if precision in ("int8", "fp16"):
        cmd.append("--fp16")
    if precision == "int8":
        cmd.append("--int8")
    if sparsity:
        cmd.append("--sparsity=enable")
    return cmd


_BUILD_SCRIPT = '''"""Build a TensorRT engine from {model} (written by hwopt; run on the target with TensorRT installed)."""
import sys

import tensorrt as trt

PRECISION = {precision!r}
SPARSITY = {sparsity!r}
SHAPES = {shapes!r}

logger = trt.Logger(trt.Logger.WARNING)
builder = trt.Builder(logger)
network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
parser = trt.OnnxParser(network, logger)
with open({model!r}, "rb") as fh:
    if not parser.parse(fh.read()):
        for i in range(parser.num_errors):
            print(parser.get_error(i), file=sys.stderr)
        sys.exit(1)
config = builder.create_builder_config()
if PRECISION in ("fp16", "int8"):
    config.set_flag(trt.BuilderFlag.FP16)
if PRECISION == "int8":
    config.set_flag(trt.BuilderFlag.INT8)  # scales come from the model's Q/DQ nodes
if SPARSITY:
    config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
profile = builder.create_optimization_profile()
for name, dims in SHAPES.items():
    profile.set_shape(name, dims, dims, dims)
config.add_optimization_profile(profile)
engine = builder.build_serialized_network(network, config)
if engine is None:
    sys.exit("TensorRT could not build the engine")
with open({engine!r}, "wb") as fh:
    fh.write(engine)
print("wrote", {engine!r})
'''


def export_tensorrt(
    model: onnx.ModelProto,
    out: Path,
    *,
    precision: str,
    shapes: Shapes,
    device: DeviceProfile | None,
    reference: list,
    feeds: list[Feeds],
    vs_float: bool,
) -> ExportResult:
    """Write the model, a trtexec script and a TensorRT Python build script; build only if possible."""
    issues = check_tensorrt_qdq(model) if precision == "int8" else []
    errors = [i for i in issues if i.severity == "error"]
    sparsity = bool(device and "2:4" in device.sparse_kernels)
    save_model(model, out)
    engine = out.with_suffix(".engine")
    sh = out.with_name("build_engine.sh")
    py = out.with_name("build_engine.py")
    cmd = trtexec_command(out.name, engine.name, precision, shapes, sparsity)
    atomic_write_text("#!/bin/sh\n# Build the TensorRT engine on the target (written by hwopt)\nset -e\ncd \"$(dirname \"$0\")\"\n"
                      + shlex.join(cmd) + "\n", sh)
    sh.chmod(0o755)
    atomic_write_text(_BUILD_SCRIPT.format(model=out.name, engine=engine.name, precision=precision, sparsity=sparsity,
                                           shapes={k: list(v) for k, v in shapes.items()}), py)
    notes = [f"QDQ rules: {len(errors)} error(s), {len(issues) - len(errors)} warning(s)"]
    notes += [f"{i.severity}: {i.node}: {i.message}" for i in issues[:20]]
    rt = get_runtime("tensorrt")
    if errors:
        v = Verification(False, False, reason=f"QDQ graph breaks TensorRT rules ({errors[0].rule}: {errors[0].message})")
    elif rt.available():
        v = verify_session(rt.session(out, precision=precision), reference, feeds, precision, vs_float=vs_float,
                           reference_name="onnxruntime (source ONNX)")
    else:
        v = Verification(False, None, reason="engine not built, not run here: TensorRT is not installed on this machine")
    return ExportResult("tensorrt", precision, out, [out, sh, py], v, notes, [i.to_dict() for i in issues])
