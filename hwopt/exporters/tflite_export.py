"""TFLite / LiteRT for ARM boards: fp32, fp16 and full-integer int8 `.tflite` files.

The conversion (onnx2tf + TensorFlow) runs in its own venv through `exporters/tflite/convert.py`;
this side prepares what that converter needs and checks what it returns:

* dynamic dims are fixed first (TFLite wants static shapes; batch 1): a `.tflite` runs at the
  one input size it was converted for (re-export for another OCR width),
* onnxruntime's basic rewrites fold what onnx2tf translates wrongly node by node (run-time
  shape arithmetic, biases reshaped to 1xCx1x1 and added after a Conv: PaddlePaddle exports),
* Slices that keep their whole input are removed: JAX exports wrap a 1-D conv in full-range
  Slices (Unsqueeze -> Slice -> Transpose -> Conv -> Slice -> Squeeze), and onnx2tf cut the
  conv's NHWC output along the wrong axis there (magika: cosine 0.008 to the ONNX model),
* node and tensor names get characters TensorFlow rejects in scope names replaced,
* 4-D (image) inputs become NHWC and their calibration samples are handed over so; inputs of
  other ranks keep their ONNX layout (`kept_layout_inputs`): onnx2tf would take a 3-D input for
  NCW and transpose it, which garbles sequence models whose last axis is the feature axis,
* every `.tflite` is run in LiteRT (XNNPACK) here and compared with the ONNX model, with the
  NCHW <-> NHWC transposes undone on inputs and outputs.

One onnx2tf run writes every precision (fp32, fp16, int8), so with a `cache` (the pipeline's
stage cache) the fp32 and int8 candidates of one model share a single conversion. When only the
int8 step fails (TensorFlow's quantizer on an LSTM), the float files are kept and verified, and
only an int8 request fails, with the converter's reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from hwopt.data import Dataset
from hwopt.errors import HwoptError
from hwopt.exporters.base import ExportResult, Verification
from hwopt.exporters.onnxruntime_export import basic_optimized
from hwopt.exporters.sessions import OnnxLayoutSession, to_nhwc
from hwopt.graph.normalize import drop_unused_initializers
from hwopt.exporters.toolenv import requirements_hash, tool_dir, tool_python
from hwopt.exporters.verify import Feeds, verify_session
from hwopt.graph.load import atomic_write_bytes, save_model
from hwopt.graph.shapes import Shapes, fix_input_shapes, input_specs
from hwopt.runtimes import get_runtime

PRECISIONS = ("fp32", "fp16", "int8")
#: calibration samples handed to the TFLite int8 converter
CALIB_SAMPLES = 100
CONVERT_TIMEOUT_S = 900
_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.\-/]")


class ConversionCache(Protocol):
    """Where finished conversions are kept (hwopt.pipeline.cache.StageCache fits)."""

    def get_or_run(self, stage: str, key: str, run: Callable[[Path], dict]) -> tuple[dict, Path]: ...


def sanitize_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy with node and tensor names TensorFlow accepts as scope names (`@`, `:`, spaces... -> `_`)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    names = {n for node in g.node for n in list(node.input) + list(node.output) if n}
    names |= {v.name for v in list(g.input) + list(g.output)}
    taken = set(names)
    mapping: dict[str, str] = {}
    for name in sorted(names):
        clean = _BAD_CHARS.sub("_", name)
        if not re.match(r"[A-Za-z0-9.]", clean):
            clean = "t" + clean
        if clean != name:
            while clean in taken:
                clean += "_"
            taken.add(clean)
            mapping[name] = clean
    rename = lambda n: mapping.get(n, n)  # noqa: E731
    for i, node in enumerate(g.node):
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        clean = _BAD_CHARS.sub("_", node.name) if node.name else f"node_{i}"
        node.name = clean if re.match(r"[A-Za-z0-9.]", clean) else f"n{clean}"
    for coll in (g.input, g.output, g.value_info, g.initializer):
        for v in coll:
            v.name = rename(v.name)
    return out


def drop_identity_slices(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy without the Slice nodes whose output is their whole input (static shapes, constant
    starts/ends/axes/steps covering every dim with step 1); their consumers read the input."""
    from onnx import numpy_helper

    out = onnx.shape_inference.infer_shapes(model)
    g = out.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in list(g.input) + list(g.value_info) if v.type.tensor_type.HasField("shape")}
    graph_outputs = {o.name for o in g.output}
    alias: dict[str, str] = {}
    keep = []
    for node in g.node:
        node.input[:] = [alias.get(n, n) for n in node.input]
        if node.op_type == "Slice" and node.output[0] not in graph_outputs and _keeps_all(node, consts, dims):
            alias[node.output[0]] = node.input[0]
            continue
        keep.append(node)
    if alias:
        del g.node[:]
        g.node.extend(keep)
        drop_unused_initializers(out)
    return out


def _keeps_all(node: onnx.NodeProto, consts: dict[str, np.ndarray], dims: dict[str, list]) -> bool:
    shape = dims.get(node.input[0])
    args = [consts.get(n) if n else None for n in list(node.input[1:]) + [""] * (5 - len(node.input))]
    starts, ends, axes, steps = args[:4]
    if not shape or None in shape or starts is None or ends is None or (len(node.input) > 3 and node.input[3] and axes is None) \
            or (len(node.input) > 4 and node.input[4] and steps is None):
        return False
    axes = range(len(starts)) if axes is None else axes
    steps = np.ones(len(starts), np.int64) if steps is None else steps
    for start, end, axis, step in zip(starts.tolist(), ends.tolist(), axes.tolist() if hasattr(axes, "tolist") else axes,
                                      steps.tolist()):
        n = shape[axis]
        if step != 1 or min(max(start + n if start < 0 else start, 0), n) != 0 or \
                min(max(end + n if end < 0 else end, 0), n) != n:
            return False
    return True


def kept_layout_inputs(prepared: onnx.ModelProto) -> list[str]:
    """Inputs onnx2tf must leave in their ONNX layout: the 3-D and 5-D ones (it takes no such list for other ranks)."""
    return [s.name for s in input_specs(prepared) if len(s.dims) in (3, 5)]


def prepare_for_tflite(model: onnx.ModelProto, shapes: Shapes) -> onnx.ModelProto:
    """The ONNX model onnx2tf is given: static shapes, exporter leftovers folded, clean names."""
    return sanitize_names(drop_identity_slices(basic_optimized(fix_input_shapes(model, shapes))))


def export_litert(
    model: onnx.ModelProto,
    out: Path,
    *,
    precision: str,
    shapes: Shapes,
    data: Dataset | None,
    reference: list,
    feeds: list[Feeds],
    cache: ConversionCache | None = None,
    log=None,
) -> ExportResult:
    """Convert to `.tflite` at `out` (plus the other precisions beside it) and verify in LiteRT.

    int8 is full-integer post-training quantization calibrated on `data`, so it needs data.
    """
    if precision not in PRECISIONS:
        raise HwoptError(f"LiteRT export precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and data is None:
        raise HwoptError("full-integer int8 TFLite needs calibration data: pass --calib DATA")
    wanted = list(PRECISIONS) if data is not None else ["fp32", "fp16"]
    python = tool_python("tflite", log=log)
    prepared = prepare_for_tflite(model, shapes)
    in_names = [s.name for s in input_specs(prepared)]
    if data is not None:
        calib = {new: to_nhwc(data.inputs[old][:CALIB_SAMPLES].astype(np.float32)) for old, new in zip(shapes, in_names)}
    else:
        calib = {new: to_nhwc(feeds[0][old].astype(np.float32)) for old, new in zip(shapes, in_names)}

    def convert(work: Path) -> dict:
        return _convert(python, prepared, calib, wanted, work)

    out.parent.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".tflite.") as scratch:
        if cache is not None:
            reply, entry = cache.get_or_run("tflite-convert", _conversion_key(prepared, calib, wanted), convert)
        else:
            entry = Path(scratch)
            reply = convert(entry)
        failed = reply.get("failed", {})
        if precision in failed:  # the other precisions stay in the cache for their own candidates
            raise HwoptError(f"TFLite {precision} conversion failed ({', '.join(reply['files'])} converted): {failed[precision]}")
        for p in reply["files"]:
            target = out if p == precision else out.with_name(f"{out.stem}_{p}.tflite")
            written[p] = atomic_write_bytes((entry / reply["files"][p]).read_bytes(), target)
    checks = _verify_all(written, shapes, reference, feeds)
    sizes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in shapes.items())
    kept = kept_layout_inputs(prepared)
    notes = [f"onnx2tf {reply.get('onnx2tf', '?')}; inputs are static in the .tflite ({sizes}): re-export for "
             "another input size; 4-D inputs are NHWC" + (f", {', '.join(kept)} kept their ONNX layout" if kept else "")]
    notes += [f"{written[p].name}: {p}, " + (f"max abs diff {v.max_abs_diff:.3g}, cosine {v.cosine:.4f}"
                                            if v.max_abs_diff is not None else v.reason) for p, v in checks.items()]
    notes += [f"{p}: conversion failed ({why})" for p, why in failed.items()]
    return ExportResult("litert", precision, out, list(written.values()), checks[precision], notes)


def _conversion_key(prepared: onnx.ModelProto, calib: dict[str, np.ndarray], wanted: list[str]) -> str:
    """Same model bytes, calibration samples, precisions and converter venv -> same .tflite files."""
    h = hashlib.sha256(prepared.SerializeToString())
    for name in sorted(calib):
        h.update(name.encode())
        h.update(np.ascontiguousarray(calib[name]).tobytes())
    h.update(",".join(wanted).encode())
    h.update(requirements_hash("tflite").encode())
    return h.hexdigest()[:24]


def _convert(python: Path, prepared: onnx.ModelProto, calib: dict[str, np.ndarray], wanted: list[str], work: Path) -> dict:
    """Run onnx2tf in its venv; keep only the .tflite files in `work`. Returns {files: {precision: name}}."""
    with tempfile.TemporaryDirectory(dir=work, prefix=".onnx2tf.") as tmp_name:
        tmp = Path(tmp_name).resolve()  # the worker runs with cwd=tmp, so every path must be absolute
        src = tmp / "model.onnx"
        save_model(prepared, src)
        np.savez(tmp / "calib.npz", **calib)
        cmd = [str(python), str(tool_dir("tflite") / "convert.py"), "--onnx", str(src), "--out", str(tmp / "tf"),
               "--calib", str(tmp / "calib.npz"), "--precisions", ",".join(wanted),
               "--keep-layout", ",".join(kept_layout_inputs(prepared))]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise HwoptError(f"TFLite conversion timed out after {CONVERT_TIMEOUT_S} s") from None
        reply = _last_json(proc.stdout)
        if proc.returncode != 0 or "files" not in reply:
            why = reply.get("error") or _last_error_line(proc.stderr)
            if reply.get("error", "").startswith("the converter exited"):
                why += f": {_last_error_line(proc.stderr)}"
            raise HwoptError(f"TFLite conversion (onnx2tf) failed: {why}")
        files = {}
        for p, path in reply["files"].items():
            files[p] = f"model_{p}.tflite"
            Path(path).replace(work / files[p])
        failed = {p: why + (f": {_last_error_line(proc.stderr)}" if why.startswith("the converter exited") else "")
                  for p, why in reply.get("failed", {}).items()}
    return {"files": files, "failed": failed, "onnx2tf": reply.get("onnx2tf", "?")}


def _verify_all(written: dict[str, Path], shapes: Shapes, reference: list, feeds: list[Feeds]) -> dict[str, Verification]:
    """Run every written precision in LiteRT against the ONNX model's outputs.

    A file LiteRT cannot load (e.g. an int8 op XNNPACK rejects) fails its own check only, so the
    precisions that do work are still delivered and judged.
    """
    rt = get_runtime("litert")
    checks: dict[str, Verification] = {}
    for p, path in written.items():
        if not rt.available():
            checks[p] = Verification(False, None, reason="not run here: LiteRT (ai-edge-litert) is not installed")
            continue
        try:
            session = OnnxLayoutSession(rt.session(path, precision=p), list(shapes), [r.shape[1:] for r in reference])
        except HwoptError as exc:
            checks[p] = Verification(True, False, reason=str(exc))
            continue
        checks[p] = verify_session(session, reference, feeds, p, vs_float=True, reference_name="onnxruntime (source ONNX)")
    return checks


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    return {}


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*")
#: TensorFlow's C++ log lines (W0000 00:00:... file.cc:123] ...) are noise, never the reason
_TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} ")


def _last_error_line(stderr: str) -> str:
    """The converter's reason: the last Python exception line, else the last line naming an error."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not _TF_LOG_LINE.match(ln.strip())]
    exceptions = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    errs = exceptions or [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errs or lines or ["no output"])[-1][:300]
