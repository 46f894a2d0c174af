"""TensorRT, only where the tensorrt package and a CUDA GPU are present.

Everything that can be checked without a GPU (QDQ placement rules) lives in the exporter; this
adapter builds and runs an engine when it can and otherwise says plainly that it is not available.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from hwopt.errors import HwoptError, NotAvailableError
from hwopt.runtimes.base import ModelLike, Runtime, Session


def _trt():
    try:
        import tensorrt

        return tensorrt
    except ImportError:
        return None


class TensorRTSession(Session):
    """Runs through onnxruntime's TensorRT execution provider when present (engine cache on)."""

    def __init__(self, model: ModelLike, threads: int, precision: str):
        from hwopt.runtimes.onnxruntime_rt import OrtSession

        self._inner = OrtSession(model, threads, precision, "tensorrt")
        self.runtime = "tensorrt"
        self.precision = precision
        self.threads = threads
        self.on_host_cpu = False
        self.input_names = self._inner.input_names
        self.output_names = self._inner.output_names

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._inner.run(feeds)


class TensorRTRuntime(Runtime):
    name = "tensorrt"

    def available(self) -> bool:
        if _trt() is None:
            return False
        try:
            import onnxruntime as ort
        except ImportError:
            return False
        return "TensorrtExecutionProvider" in ort.get_available_providers()

    def version(self) -> str:
        trt = _trt()
        return trt.__version__ if trt else "not installed"

    def session(self, model: ModelLike, *, threads: int = 1, precision: str = "fp32") -> Session:
        if not self.available():
            raise NotAvailableError(
                "TensorRT is not available here (needs the tensorrt package, a CUDA GPU and onnxruntime-gpu)"
            )
        if not isinstance(model, onnx.ModelProto) and Path(model).suffix != ".onnx":
            raise HwoptError(f"the TensorRT adapter builds engines from .onnx models, got {Path(model).name}")
        return TensorRTSession(model, threads, precision)
