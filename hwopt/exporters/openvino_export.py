"""OpenVINO IR (.xml + .bin) for the x86 oneDNN target, with the precision stated explicitly.

Weights are stored as they are (`compress_to_fp16=False`): OpenVINO's default halves them to fp16,
which changes a float model's numbers before any precision decision was made. The inference
precision (fp32 or bf16) is a runtime setting, not part of the IR, so it is verified by compiling
with that hint and written into a small `deploy.json` beside the IR for the deployment script.
A QDQ model becomes FakeQuantize layers, which OpenVINO runs in int8.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import onnx

from hwopt.errors import HwoptError, NotAvailableError
from hwopt.exporters.base import ExportResult, dynamic_dims_note
from hwopt.exporters.verify import Feeds, verify_session
from hwopt.graph.load import atomic_write_bytes, atomic_write_text
from hwopt.runtimes import get_runtime
from hwopt.runtimes.openvino_rt import PRECISION_HINTS, conversion_failure


def export_openvino(
    model: onnx.ModelProto,
    out: Path,
    *,
    precision: str,
    reference: list,
    feeds: list[Feeds],
    vs_float: bool,
) -> ExportResult:
    """Convert to IR at `out` (.xml, .bin beside it) and verify it on OpenVINO at `precision`."""
    rt = get_runtime("openvino")
    if not rt.available():
        raise NotAvailableError("export tool missing: OpenVINO is not installed (pip install 'hwopt[openvino]')")
    import openvino as ov

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".ovexport.") as tmp:
        src = Path(tmp) / "source.onnx"
        src.write_bytes(model.SerializeToString())
        try:
            ov_model = ov.convert_model(str(src))
        except Exception as exc:  # noqa: BLE001 - the frontend raises bare RuntimeError/OpConversionFailure types
            raise HwoptError(f"OpenVINO cannot convert the model: {conversion_failure(str(exc))}") from exc
        staged = Path(tmp) / out.name
        ov.save_model(ov_model, str(staged), compress_to_fp16=False)
        # .bin first: an .xml that exists always has its weights next to it
        atomic_write_bytes(staged.with_suffix(".bin").read_bytes(), out.with_suffix(".bin"))
        atomic_write_bytes(staged.read_bytes(), out)
    deploy = out.with_name(out.stem + ".deploy.json")
    hint = PRECISION_HINTS[precision]
    atomic_write_text(
        json.dumps({"device": "CPU", "config": {"INFERENCE_PRECISION_HINT": hint}, "precision": precision}, indent=2) + "\n",
        deploy,
    )
    session = rt.session(out, precision=precision)
    v = verify_session(session, reference, feeds, precision, vs_float=vs_float, reference_name="onnxruntime (source ONNX)")
    notes = [f"OpenVINO {rt.version()} compiled it to run in {session.precision}", dynamic_dims_note(model)]
    notes = [n for n in notes if n]
    return ExportResult("openvino", precision, out, [out, out.with_suffix(".bin"), deploy], v, notes)
