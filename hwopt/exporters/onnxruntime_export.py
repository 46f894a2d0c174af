"""onnxruntime: an offline-optimized ONNX model and the `.ort` flatbuffer for mobile builds.

Both are produced by onnxruntime itself (a session with `optimized_model_filepath`) at the
*basic* optimization level: basic rewrites (constant folding, redundant-node removal, BN and
activation fusions into Conv) are hardware independent, whereas the extended/layout levels bake
in x86-specific kernels (NCHWc) that would not load on an ARM board. The runtime applies its
remaining optimizations when it loads the file on the device.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from hwopt.exporters.base import ExportResult, dynamic_dims_note
from hwopt.exporters.verify import Feeds, verify_session
from hwopt.graph.load import atomic_write_bytes
from hwopt.runtimes import get_runtime
from hwopt.runtimes.onnxruntime_rt import OrtSession


def _optimize(model: onnx.ModelProto, out: Path, *, ort_format: bool) -> None:
    """Let onnxruntime write its basic-level optimized graph (ONNX or ORT format) atomically."""
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".ortopt.") as tmp:
        target = Path(tmp) / out.name
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(target)
        opts.log_severity_level = 3
        if ort_format:
            opts.add_session_config_entry("session.save_model_format", "ORT")
        ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        atomic_write_bytes(target.read_bytes(), out)


def basic_optimized(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` after onnxruntime's basic (portable, standard-ops-only) graph rewrites.

    Converters that translate node by node (onnx2tf) go wrong on exporter leftovers this folds
    away: shape arithmetic on static shapes (Shape -> Slice -> Concat -> Reshape), biases
    reshaped at run time and added after a Conv, BatchNormalization. The output keeps the
    graph's input and output names; opset imports of domains no node uses are dropped
    (onnxruntime lists all of its own).
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hwopt-ortopt-") as tmp:
        path = Path(tmp) / "model.onnx"
        _optimize(model, path, ort_format=False)
        out = onnx.load(str(path))
    used = {n.domain for n in out.graph.node} | {"", "ai.onnx"}
    keep = [o for o in out.opset_import if o.domain in used]
    del out.opset_import[:]
    out.opset_import.extend(keep)
    return out


def export_onnxruntime(
    model: onnx.ModelProto,
    out: Path,
    *,
    precision: str,
    reference: list,
    feeds: list[Feeds],
    vs_float: bool,
) -> ExportResult:
    """Write `<out>` (optimized .onnx) and `<out>.ort`; verify the .onnx on onnxruntime.

    The .ort file holds the same optimized graph; it is loaded once to prove it is readable.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    ort_path = out.with_suffix(".ort")
    _optimize(model, out, ort_format=False)
    _optimize(model, ort_path, ort_format=True)
    rt = get_runtime("onnxruntime")
    v = verify_session(rt.session(out), reference, feeds, precision, vs_float=vs_float, reference_name="onnxruntime (source ONNX)")
    # an int8 .ort runs its QDQ pairs as float emulation (its fusions into int8 kernels are not
    # saved at the portable level), so it is held to the int8-vs-float rule, not to elementwise equality
    ort_check = verify_session(OrtSession(ort_path, 1, precision, "cpu"), reference, feeds, precision,
                               vs_float=vs_float or precision == "int8", reference_name="onnxruntime")
    ort_diff = f"max abs diff {ort_check.max_abs_diff:.3g}, cosine {ort_check.cosine:.4f}"
    notes = [f"{ort_path.name}: ORT format, {ort_diff}", dynamic_dims_note(model)]
    notes = [n for n in notes if n]
    if not ort_check.passed:
        v.passed = False
        v.reason = f"{ort_path.name} does not match the source model ({ort_diff})"
    return ExportResult("onnxruntime", precision, out, [out, ort_path], v, notes)
