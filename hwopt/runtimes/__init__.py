"""Runtime adapters behind one interface, looked up by name."""

from __future__ import annotations

from hwopt.errors import HwoptError
from hwopt.runtimes.base import BenchResult, Runtime, Session, summarize, time_rounds, time_session, timing_clock
from hwopt.runtimes.litert_rt import LiteRTRuntime
from hwopt.runtimes.onnxruntime_rt import OnnxRuntime
from hwopt.runtimes.openvino_rt import OpenVINORuntime
from hwopt.runtimes.tensorrt_rt import TensorRTRuntime

RUNTIMES: dict[str, type[Runtime]] = {
    "onnxruntime": OnnxRuntime,
    "openvino": OpenVINORuntime,
    "litert": LiteRTRuntime,
    "tensorrt": TensorRTRuntime,
}


def get_runtime(name: str) -> Runtime:
    """The adapter called `name`; an unknown name lists the known ones."""
    if name not in RUNTIMES:
        raise HwoptError(f"unknown runtime {name!r}; known runtimes: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]()


__all__ = ["BenchResult", "Runtime", "Session", "RUNTIMES", "get_runtime", "summarize", "time_rounds", "time_session", "timing_clock"]
