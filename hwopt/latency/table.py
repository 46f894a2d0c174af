"""Latency tables on disk: one JSON per device + runtime, sorted and diff-friendly.

A table holds measured kernels (key -> their in-context ms and the fields that make the key), the
three numbers that turn a kernel sum into a network's time, the roofline factors used as a fallback, the
name of the trained predictor file beside it, and a provenance block saying where every number
came from. Parsed tables are cached by path and modification time, because a search predicts
thousands of models against the same table.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwopt.errors import HwoptError
from hwopt.graph.load import atomic_write_text
from hwopt.latency.analytical import Roofline
from hwopt.latency.kernels import Kernel
from hwopt.paths import data_dir

SCHEMA_VERSION = 1


@dataclass
class LatencyTable:
    device: str
    runtime: str
    threads: int | None
    method: str  # "measured" (profiled on the device) or "analytical" (calibrated roofline)
    provenance: dict
    roofline: Roofline
    entries: dict[str, float] = field(default_factory=dict)  # kernel key -> ms
    kernels: dict[str, Kernel] = field(default_factory=dict)  # kernel key -> Kernel
    # a network takes kernel_scale * sum(kernel ms) + kernel_overhead_ms per kernel + overhead_ms once:
    # fitted on the profiled training networks' end-to-end times (node events are per-node wall time
    # and leave out the executor's work between nodes and the per-inference cost)
    overhead_ms: float = 0.0
    kernel_scale: float = 1.0
    kernel_overhead_ms: float = 0.0
    predictor: str | None = None  # file name of the trained predictor, next to the table
    # predictor output x this factor per kernel class (`calibration_class`), fitted on how the predictor
    # did on kernel signatures it had not seen (out of fold on the training networks); 1 if absent
    predictor_calibration: dict[str, float] = field(default_factory=dict)
    path: Path | None = None

    def to_json(self) -> str:
        doc = {
            "schema_version": SCHEMA_VERSION,
            "device": self.device,
            "runtime": self.runtime,
            "threads": self.threads,
            "method": self.method,
            "provenance": self.provenance,
            "roofline": self.roofline.to_dict(),
            "overhead_ms": round(self.overhead_ms, 6),
            "kernel_scale": round(self.kernel_scale, 6),
            "kernel_overhead_ms": round(self.kernel_overhead_ms, 6),
            "predictor": self.predictor,
            "predictor_calibration": {k: round(v, 4) for k, v in sorted(self.predictor_calibration.items())},
            "entries": {k: {**self.kernels[k].to_dict(), "ms": round(ms, 6)} for k, ms in self.entries.items()},
        }
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        self.path = atomic_write_text(self.to_json(), path)
        return self.path

    def in_model_ms(self, kernel_ms: np.ndarray) -> np.ndarray:
        """Kernel times from the table or predictor -> each one's share of a network's time."""
        return self.kernel_scale * np.asarray(kernel_ms, float) + self.kernel_overhead_ms

    def calibrated(self, kernels, predicted_ms: np.ndarray) -> np.ndarray:
        """Predictor output corrected per kernel class (see `predictor_calibration`)."""
        if not self.predictor_calibration:
            return predicted_ms
        cal = self.predictor_calibration
        return np.asarray(predicted_ms, float) * np.array(
            [cal.get(calibration_class(k), cal.get(calibration_class(k, coarse=True), 1.0)) for k in kernels])

    def add(self, kernel: Kernel, ms: float) -> None:
        self.entries[kernel.key] = ms
        self.kernels[kernel.key] = kernel


def calibration_class(kernel: Kernel, *, coarse: bool = False) -> str:
    """`family/dtype` (`/DQweight` for onnxruntime's unpacked float convs between Q/DQ nodes, 2-4x
    slower than packed ones), and unless `coarse` `/small` for outputs of at most 4x4 positions: the
    groups whose predictor bias differs (fp32 depthwise convs were predicted 1.4x, tiny ones 1.8x,
    too slow)."""
    base = f"{kernel.family}/{kernel.dtype}" + ("/DQweight" if "DQweight" in kernel.fused else "")
    if coarse:
        return base
    out = kernel.output
    return base + ("/small" if len(out) == 4 and 0 < out[2] * out[3] <= 16 else "")


def tables_dir() -> Path:
    return data_dir("latency_tables")


def parse_table(text: str, source: str) -> LatencyTable:
    """Parse and validate a table document; every problem is one clear HwoptError line."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HwoptError(f"latency table {source} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(doc, dict):
        raise HwoptError(f"latency table {source} must be a JSON object")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise HwoptError(
            f"latency table {source} has schema version {version!r}; this hwopt reads version {SCHEMA_VERSION} "
            "(re-run `hwopt profile` to regenerate it)"
        )
    try:
        entries = doc.get("entries", {})
        kernels = {k: Kernel.from_dict(v) for k, v in entries.items()}
        return LatencyTable(
            device=doc["device"],
            runtime=doc["runtime"],
            threads=doc.get("threads"),
            method=doc["method"],
            provenance=doc.get("provenance", {}),
            roofline=Roofline.from_dict(doc["roofline"]),
            entries={k: float(v["ms"]) for k, v in entries.items()},
            kernels=kernels,
            overhead_ms=float(doc.get("overhead_ms", 0.0)),
            kernel_scale=float(doc.get("kernel_scale", 1.0)),
            kernel_overhead_ms=float(doc.get("kernel_overhead_ms", 0.0)),
            predictor=doc.get("predictor"),
            predictor_calibration={str(k): float(v) for k, v in doc.get("predictor_calibration", {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise HwoptError(f"latency table {source} is malformed: missing or bad field {exc}") from None


_CACHE: dict[tuple[str, float], LatencyTable] = {}


def load_table(path: str | os.PathLike, *, device: str | None = None, runtime: str | None = None) -> LatencyTable:
    """Load (cached) and check that the table is for `device` / `runtime` when given."""
    p = Path(path)
    if not p.is_file():
        raise HwoptError(f"latency table not found: {p}")
    key = (str(p.resolve()), p.stat().st_mtime)
    table = _CACHE.get(key)
    if table is None:
        table = parse_table(p.read_text(), str(p))
        table.path = p
        _CACHE[key] = table
    if device and table.device != device:
        raise HwoptError(f"latency table {p} is for device {table.device!r}, not {device!r}")
    if runtime and table.runtime != runtime:
        raise HwoptError(f"latency table {p} is for runtime {table.runtime!r}, not {runtime!r}")
    return table
