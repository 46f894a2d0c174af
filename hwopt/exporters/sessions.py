"""Open any exported artifact as a Session that takes and returns what the ONNX model does.

A `.tflite` from onnx2tf has channels-last inputs and outputs (NHWC; NWC for 3-D tensors), TensorFlow-made tensor names and possibly
another output order. Verification and the accuracy guard both need to feed it the ONNX model's
NCHW inputs and compare outputs one-to-one, so this wrapper undoes those differences once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwopt.runtimes import Session, get_runtime


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW -> NHWC for 4-D arrays (onnx2tf makes image inputs NHWC; other ranks keep their layout,
    see `tflite_export.kept_layout_inputs`)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def _fit_layout(x: np.ndarray, want: tuple[int, ...] | None) -> np.ndarray:
    """`x` (ONNX layout) as the .tflite input wants it: as it is when the shapes agree, else with
    the channels moved last (how onnx2tf lays out the inputs it transposes)."""
    if want is None or x.ndim < 3 or tuple(x.shape[1:]) == tuple(want[1:]):
        return x
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def _match_outputs(expected: list[tuple[int, ...]], got: list[np.ndarray]) -> list[np.ndarray]:
    """LiteRT outputs in ONNX order and layout, matched by per-sample shape (channels-last ones moved back)."""
    pool = list(got)
    ordered = []
    for shape in expected:
        for j, g in enumerate(pool):
            if g.shape[1:] == tuple(shape):
                ordered.append(pool.pop(j))
                break
            if g.ndim >= 3 and np.moveaxis(g, -1, 1).shape[1:] == tuple(shape):
                ordered.append(np.moveaxis(pool.pop(j), -1, 1))
                break
        else:
            return got  # shapes do not line up; the comparison will report it
    return ordered


class OnnxLayoutSession(Session):
    """A LiteRT session addressed with the ONNX model's input names, NCHW layout and output order."""

    def __init__(self, inner: Session, onnx_inputs: list[str], output_shapes: list[tuple[int, ...]]):
        self._inner = inner
        self._names = {}
        for i, name in enumerate(onnx_inputs):
            hits = [n for n in inner.input_names if n == name or n.split(":")[0].endswith(name)]
            self._names[name] = hits[0] if len(hits) == 1 else inner.input_names[i]
        self._shapes = output_shapes
        self.runtime = inner.runtime
        self.precision = inner.precision
        self.threads = inner.threads
        self.on_host_cpu = inner.on_host_cpu
        self.input_names = list(onnx_inputs)
        self.output_names = list(inner.output_names)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        wanted = getattr(self._inner, "input_shapes", {})
        outs = self._inner.run({self._names[k]: _fit_layout(v.astype(np.float32), wanted.get(self._names[k]))
                                for k, v in feeds.items()})
        return _match_outputs(self._shapes, outs)


def open_artifact(
    runtime: str,
    path: Path,
    precision: str,
    *,
    onnx_inputs: list[str],
    output_shapes: list[tuple[int, ...]],
    threads: int = 1,
) -> Session:
    """A session for an exported file that behaves like the source ONNX model's session."""
    session = get_runtime(runtime).session(path, threads=threads, precision=precision)
    if runtime == "litert":
        return OnnxLayoutSession(session, onnx_inputs, output_shapes)
    return session
