"""LiteRT (TFLite) with XNNPACK. Runs .tflite files; ONNX must be exported first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from hwopt.errors import HwoptError, NotAvailableError
from hwopt.runtimes.base import ModelLike, Runtime, Session


def _interpreter_cls():
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except ImportError:
        return None


class LiteRTSession(Session):
    def __init__(self, path: Path, threads: int, precision: str):
        interp_cls = _interpreter_cls()
        try:
            self._interp = interp_cls(model_path=str(path), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise HwoptError(f"LiteRT cannot load {path.name}: {str(exc).splitlines()[0]}") from exc
        self._inputs = self._interp.get_input_details()
        self._outputs = self._interp.get_output_details()
        self.runtime = "litert"
        self.precision = precision
        self.threads = threads
        self.input_names = [d["name"] for d in self._inputs]
        self.output_names = [d["name"] for d in self._outputs]
        self.input_shapes = {d["name"]: tuple(int(x) for x in d["shape"]) for d in self._inputs}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        for d in self._inputs:
            x = feeds[d["name"]]
            scale, zero = d.get("quantization", (0.0, 0))
            if np.issubdtype(d["dtype"], np.integer) and np.issubdtype(x.dtype, np.floating) and scale:
                info = np.iinfo(d["dtype"])
                x = np.clip(np.round(x / scale + zero), info.min, info.max)
            self._interp.set_tensor(d["index"], x.astype(d["dtype"]))
        self._interp.invoke()
        outs = []
        for d in self._outputs:
            y = self._interp.get_tensor(d["index"])
            scale, zero = d.get("quantization", (0.0, 0))
            if np.issubdtype(y.dtype, np.integer) and scale:
                y = (y.astype(np.float32) - zero) * scale
            outs.append(y)
        return outs

    def delegated_ops(self) -> int:
        """How many nodes XNNPACK (or another delegate) took; 0 means plain reference kernels ran."""
        try:
            ops = self._interp._get_ops_details()  # noqa: SLF001 - the only way LiteRT exposes this
        except AttributeError:
            return 0
        return sum(1 for op in ops if "DELEGATE" in op.get("op_name", ""))


class LiteRTRuntime(Runtime):
    name = "litert"
    suffixes = (".tflite",)

    def available(self) -> bool:
        return _interpreter_cls() is not None

    def version(self) -> str:
        try:
            from importlib.metadata import version

            return version("ai-edge-litert")
        except Exception:  # noqa: BLE001 - any metadata problem just means unknown
            return "unknown"

    def session(self, model: ModelLike, *, threads: int = 1, precision: str = "fp32") -> Session:
        if not self.available():
            raise NotAvailableError("LiteRT is not installed here (pip install 'hwopt[litert]')")
        if isinstance(model, onnx.ModelProto) or Path(model).suffix != ".tflite":
            raise HwoptError("LiteRT runs .tflite files; convert first with `hwopt export MODEL --to litert`")
        return LiteRTSession(Path(model), threads, precision)
