"""Calibration and evaluation data sets, and the metrics that judge a compressed model.

A data set is an .npz whose keys are the model's input names (first axis = samples) plus an
optional `labels` array. Without labels, a candidate is judged by agreement with the original
model: top-1 agreement for classifiers, SQNR and cosine similarity of outputs otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from hwopt.errors import HwoptError
from hwopt.graph.shapes import input_specs


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batches(self, batch_size: int = 1, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of `batch_size` samples each (the last may be shorter), up to `limit` samples."""
        n = len(self) if limit is None else min(limit, len(self))
        for i in range(0, n, batch_size):
            yield {k: v[i : min(i + batch_size, n)] for k, v in self.inputs.items()}

    def subset(self, n: int) -> Dataset:
        return Dataset({k: v[:n] for k, v in self.inputs.items()}, None if self.labels is None else self.labels[:n], self.source)


def load_dataset(path: str | os.PathLike, model: onnx.ModelProto | None = None) -> Dataset:
    """Load an .npz data set and, given a model, check its names, ranks, static dims and values."""
    p = Path(path)
    if not p.is_file():
        raise HwoptError(f"data file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as exc:
        raise HwoptError(f"cannot read data file {p} (expected .npz): {exc}") from exc
    labels = arrays.pop("labels", None)
    if not arrays:
        raise HwoptError(f"data file {p} has no input arrays")
    ds = Dataset(arrays, labels, str(p))
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1 or (labels is not None and len(labels) != len(ds)):
        raise HwoptError(f"data file {p}: arrays have different sample counts {lengths}")
    if model is not None:
        check_dataset(ds, model)
    return ds


def check_dataset(ds: Dataset, model: onnx.ModelProto) -> None:
    """Clear errors for wrong input names, ranks, static dims, and non-finite values."""
    specs = {s.name: s for s in input_specs(model)}
    missing = sorted(set(specs) - set(ds.inputs))
    if missing:
        raise HwoptError(f"data file {ds.source} lacks model input(s) {missing}; it has {sorted(ds.inputs)}")
    extra = sorted(set(ds.inputs) - set(specs))
    if extra:
        raise HwoptError(f"data file {ds.source} has array(s) {extra} that are not model inputs {sorted(specs)}")
    for name, spec in specs.items():
        arr = ds.inputs[name]
        if arr.ndim != len(spec.dims):
            raise HwoptError(
                f"data {name!r} has per-sample shape {arr.shape[1:]} (rank {arr.ndim} with the sample axis); "
                f"model expects rank {len(spec.dims)} {spec.dims}"
            )
        for i, d in enumerate(spec.dims[1:], start=1):
            if isinstance(d, int) and arr.shape[i] != d:
                raise HwoptError(f"data {name!r} has shape {arr.shape}; model input dim {i} must be {d}")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise HwoptError(f"data {name!r} contains NaN or inf values")
        if arr.dtype != spec.dtype:
            ds.inputs[name] = arr.astype(spec.dtype)


def run_outputs(session, ds: Dataset, *, batch_size: int = 1, limit: int | None = None) -> list[np.ndarray]:
    """Run a runtime Session over a data set; outputs concatenated along the sample axis."""
    chunks: list[list[np.ndarray]] = []
    for feeds in ds.batches(batch_size, limit):
        chunks.append(session.run(feeds))
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    ref = reference.astype(np.float64).ravel()
    noise = ref - test.astype(np.float64).ravel()
    pn = float(np.mean(noise**2))
    ps = float(np.mean(ref**2))
    if pn == 0:
        return float("inf")
    return 10 * np.log10(max(ps, 1e-30) / pn)


def cosine(reference: np.ndarray, test: np.ndarray) -> float:
    a = reference.astype(np.float64).ravel()
    b = test.astype(np.float64).ravel()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den else 1.0


def is_classifier_output(y: np.ndarray) -> bool:
    """A (N, C) score matrix with C > 1 is treated as class scores."""
    return y.ndim == 2 and y.shape[1] > 1


def accuracy_metrics(outputs: list[np.ndarray], labels: np.ndarray | None, reference: list[np.ndarray] | None) -> dict:
    """Metrics of a candidate's outputs: `accuracy` in percent is the headline number.

    With labels and class scores: top-1 accuracy against the labels. Without labels: top-1
    agreement with the reference outputs for classifiers, else cosine similarity x 100.
    SQNR and cosine vs the reference are always added when a reference is given.
    """
    y = outputs[0]
    m: dict = {}
    if labels is not None and is_classifier_output(y):
        m["accuracy"] = float((y.argmax(1) == labels).mean() * 100)
        m["metric"] = "top1"
    elif reference is not None and is_classifier_output(y):
        m["accuracy"] = float((y.argmax(1) == reference[0].argmax(1)).mean() * 100)
        m["metric"] = "top1_agreement"
    elif reference is not None:
        m["accuracy"] = float(np.mean([cosine(r, o) for r, o in zip(reference, outputs)]) * 100)
        m["metric"] = "cosine_x100"
    else:
        raise HwoptError("cannot measure accuracy: no labels and no reference outputs")
    if reference is not None:
        m["sqnr_db"] = float(min(sqnr_db(r, o) for r, o in zip(reference, outputs)))
        m["cosine"] = float(min(cosine(r, o) for r, o in zip(reference, outputs)))
    return m
