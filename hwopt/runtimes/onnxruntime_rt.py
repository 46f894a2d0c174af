"""onnxruntime: CPU everywhere, CUDA and TensorRT execution providers where installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from hwopt.errors import HwoptError, NotAvailableError
from hwopt.runtimes.base import ModelLike, Runtime, Session

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OrtSession(Session):
    def __init__(self, model: ModelLike, threads: int, precision: str, provider: str):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        wanted = _PROVIDERS[provider]
        if wanted[0] not in ort.get_available_providers():
            raise NotAvailableError(f"onnxruntime execution provider {wanted[0]} is not available here")
        src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
        try:
            self._sess = ort.InferenceSession(src, sess_options=opts, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
            raise HwoptError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from exc
        self.runtime = "onnxruntime"
        self.precision = precision
        self.threads = threads
        self.on_host_cpu = provider == "cpu"
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self.output_names = [o.name for o in self._sess.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._sess.run(None, feeds)


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def __init__(self, provider: str = "cpu"):
        self.provider = provider

    def available(self) -> bool:
        try:
            import onnxruntime as ort
        except ImportError:
            return False
        return _PROVIDERS[self.provider][0] in ort.get_available_providers()

    def version(self) -> str:
        import onnxruntime as ort

        return ort.__version__

    def session(self, model: ModelLike, *, threads: int = 1, precision: str = "fp32") -> Session:
        if not isinstance(model, onnx.ModelProto) and Path(model).suffix not in self.suffixes:
            raise HwoptError(f"onnxruntime runs .onnx models, got {Path(model).name}")
        # onnxruntime runs the precision stored in the model (fp32, QDQ int8, fp16); it has no switch
        return OrtSession(model, threads, precision, self.provider)
