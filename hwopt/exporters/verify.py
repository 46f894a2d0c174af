"""Run an exported artifact and the source ONNX model on the same inputs and compare.

Inputs come from the user's calibration data when given (real samples exercise the real value
ranges, which matters for int8) and are otherwise generated from the model's input shapes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from hwopt.data import Dataset
from hwopt.exporters.base import Verification, compare_outputs
from hwopt.graph.shapes import Shapes, random_inputs, resolve_input_shapes
from hwopt.runtimes import Session, get_runtime

Feeds = dict[str, np.ndarray]
#: samples used to verify an export (enough to catch a wrong layout or scale, quick on 1 thread)
VERIFY_SAMPLES = 8


def verification_feeds(model: onnx.ModelProto, data: Dataset | None, shapes: Shapes | None, n: int = VERIFY_SAMPLES) -> list[Feeds]:
    """Batch-1 feeds: the first `n` samples of `data`, else `n` random inputs of the model's shape."""
    if data is not None:
        return list(data.batches(1, limit=n))
    concrete = resolve_input_shapes(model, shapes)
    return [random_inputs(model, concrete, seed=i) for i in range(n)]


def run_all(session: Session, feeds: list[Feeds], adapt: Callable[[Feeds], Feeds] | None = None) -> list[np.ndarray]:
    """Outputs of `session` over every feed, stacked along the sample axis."""
    outs = [session.run(adapt(f) if adapt else f) for f in feeds]
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]


def onnx_reference(model: onnx.ModelProto, feeds: list[Feeds]) -> list[np.ndarray]:
    """What onnxruntime computes for the source model: the ground truth every export is held to."""
    return run_all(get_runtime("onnxruntime").session(model), feeds)


def verify_session(
    session: Session,
    reference: list[np.ndarray],
    feeds: list[Feeds],
    precision: str,
    *,
    vs_float: bool,
    reference_name: str,
    adapt: Callable[[Feeds], Feeds] | None = None,
    reorder: Callable[[list[np.ndarray], list[np.ndarray]], list[np.ndarray]] | None = None,
) -> Verification:
    """Run the artifact's session and compare with the reference outputs."""
    got = run_all(session, feeds, adapt)
    if reorder is not None:
        got = reorder(reference, got)
    v = compare_outputs(reference, got, precision, vs_float=vs_float)
    v.samples = len(feeds)
    v.reference = reference_name
    return v
