"""OpenVINO CPU (oneDNN). The inference precision is always set explicitly.

On CPUs with AVX512-BF16 or AMX, OpenVINO silently runs float models in bf16 unless told
otherwise; hwopt asks for the precision the caller wants and reports what the compiled model says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from hwopt.errors import HwoptError, NotAvailableError
from hwopt.runtimes.base import ModelLike, Runtime, Session

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
# int8 comes from FakeQuantize (QDQ) in the model; the float parts around it run at the hint's precision


class OvSession(Session):
    def __init__(self, model: ModelLike, threads: int, precision: str):
        import openvino as ov

        if precision not in PRECISION_HINTS:
            raise HwoptError(f"OpenVINO precision must be one of {sorted(PRECISION_HINTS)}, got {precision!r}")
        core = ov.Core()
        try:
            if isinstance(model, onnx.ModelProto):
                ov_model = core.read_model(model.SerializeToString(), b"")
            else:
                ov_model = core.read_model(str(model))
            config = {
                "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1,
                # OpenVINO pins its thread to one core by default; on a shared or busy machine that
                # core is often taken and latency swings 10x. Unpinned matches its benchmark_app.
                "ENABLE_CPU_PINNING": False,
            }
            self._compiled = core.compile_model(ov_model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with multi-line C++ context
            raise HwoptError(f"OpenVINO cannot load the model: {conversion_failure(str(exc))}") from exc
        self._request = self._compiled.create_infer_request()
        ran = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # e.g. "f32", "bf16"
        self.runtime = "openvino"
        # an int8 request runs FakeQuantize layers in int8; the float parts run at the reported hint
        self.precision = "int8" if precision == "int8" else {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(ran, ran)
        self.threads = threads
        self.input_names = [p.get_any_name() for p in self._compiled.inputs]
        self.output_names = [p.get_any_name() for p in self._compiled.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        res = self._request.infer(feeds)
        return [np.asarray(res[p]) for p in self._compiled.outputs]

    def runtime_precisions(self) -> dict[str, int]:
        """Histogram of the element types the compiled graph's layers run in (to prove int8 ran)."""
        counts: dict[str, int] = {}
        for op in self._compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "runtimePrecision" in info:
                p = info["runtimePrecision"].astype(str)  # rt_info values are OVAny wrappers
                counts[p] = counts.get(p, 0) + 1
        return counts


class OpenVINORuntime(Runtime):
    name = "openvino"
    suffixes = (".onnx", ".xml")

    def available(self) -> bool:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return False
        return True

    def version(self) -> str:
        import openvino as ov

        return ov.get_version()

    def session(self, model: ModelLike, *, threads: int = 1, precision: str = "fp32") -> Session:
        if not self.available():
            raise NotAvailableError("OpenVINO is not installed here (pip install 'hwopt[openvino]')")
        if not isinstance(model, onnx.ModelProto) and Path(model).suffix not in self.suffixes:
            raise HwoptError(f"OpenVINO runs .onnx or .xml models, got {Path(model).name}")
        return OvSession(model, threads, precision)


def conversion_failure(text: str) -> str:
    """The line of an OpenVINO frontend error that names what failed.

    Its first lines are only the C++ source location ("Exception from src/inference/...:105:");
    the summary at the end names the ops ("Conversion is failed for: Conv-16, ReduceMean-16").
    """
    lines = [ln.strip(" -") for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("Conversion is failed for"):
            why = next((x for x in lines if "rank has to be known" in x or x.startswith("Unsupported")), "")
            return f"{ln}{' (' + why + ')' if why else ''}"
    informative = [ln for ln in lines if not ln.startswith(("Exception from", "Check ")) and not ln.endswith(":")]
    return (informative or lines or ["unknown error"])[0][:300]
