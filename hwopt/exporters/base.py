"""What every exporter returns, and the check that makes an export trustworthy.

An exported file is only useful if its runtime computes what the ONNX model computes. Every
exporter therefore runs its artifact on the target runtime (when that runtime is here) and
compares the outputs with onnxruntime running the source ONNX model on the same inputs. The
numbers (max abs diff, relative diff, cosine) go into the result so a report can show them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from hwopt.data import cosine
from hwopt.errors import HwoptError

PathLike = str | os.PathLike

#: relative tolerance (max abs diff / max |reference|) per precision of the artifact
FLOAT_TOLERANCE = {"fp32": 1e-3, "fp16": 3e-2, "bf16": 6e-2}
#: absolute differences this small always pass: an output that is ~0 everywhere (a detector's
#: sigmoid map on an input with nothing in it, max 1e-5) makes any relative measure meaningless
ABS_TOLERANCE = {"fp32": 1e-5, "fp16": 1e-4, "bf16": 1e-4, "int8": 1e-4}
#: a quantized artifact compared with a float reference is judged by output direction instead
INT8_MIN_COSINE = 0.97
#: fp16/bf16 artifacts that drift elementwise but keep the output direction this closely pass: bf16
#: keeps 8 mantissa bits, and through a deep detector (PicoDet, 878 layers) a few box logits moved by
#: 0.6 (over 6 % of their range) while the outputs as a whole kept cosine 0.9994; a broken export
#: (a wrong layout or scale) is far below this
REDUCED_MIN_COSINE = 0.999
#: an int8 artifact compared with its own QDQ model: runtimes round and requantize differently
#: (OpenVINO's FakeQuantize vs onnxruntime's QLinear kernels), which a deep attention model
#: amplifies elementwise; it must still point the same way this closely
INT8_SELF_MIN_COSINE = 0.99


@dataclass
class Verification:
    """How closely the artifact's outputs matched the reference ONNX model's."""

    ran: bool
    passed: bool | None
    max_abs_diff: float | None = None
    rel_diff: float | None = None
    cosine: float | None = None
    samples: int = 0
    reference: str = ""
    reason: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ExportResult:
    """The deployable file(s) for one runtime, and proof that they run correctly."""

    runtime: str
    precision: str
    artifact: Path
    files: list[Path]
    verification: Verification
    notes: list[str] = field(default_factory=list)
    #: rule checks that need no runtime (e.g. TensorRT QDQ rules), one dict per finding
    checks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "runtime": self.runtime,
            "precision": self.precision,
            "artifact": str(self.artifact),
            "files": [str(f) for f in self.files],
            "verification": self.verification.to_dict(),
            "notes": list(self.notes),
            "checks": list(self.checks),
        }


def compare_outputs(reference: list[np.ndarray], test: list[np.ndarray], precision: str, *, vs_float: bool) -> Verification:
    """Judge `test` against `reference` for an artifact of `precision`.

    Float artifacts must match within FLOAT_TOLERANCE of the output range (or within
    ABS_TOLERANCE outright, for outputs that are all near zero; fp16/bf16 ones also pass with a
    cosine of REDUCED_MIN_COSINE or more). An int8 artifact
    compared with a float model (`vs_float`) cannot match elementwise, so it must keep the output
    direction (cosine); compared with its own QDQ model it must match like a bf16 one does or
    keep the direction within INT8_SELF_MIN_COSINE.
    """
    if len(reference) != len(test):
        return Verification(True, False, reason=f"artifact has {len(test)} outputs, ONNX model has {len(reference)}")
    by_direction = precision == "int8" and vs_float
    rtol = FLOAT_TOLERANCE.get(precision, FLOAT_TOLERANCE["bf16"])
    atol = ABS_TOLERANCE.get(precision, ABS_TOLERANCE["bf16"])
    worst_abs, worst_rel, worst_cos, passed = 0.0, 0.0, 1.0, True
    for r, t in zip(reference, test):
        t = np.asarray(t, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if r.size != t.size:
            return Verification(True, False, reason=f"output sizes differ: {r.shape} vs {t.shape}")
        t = t.reshape(r.shape)
        diff = float(np.max(np.abs(r - t))) if r.size else 0.0
        rel = diff / max(float(np.max(np.abs(r))) if r.size else 0.0, 1e-12)
        cos = cosine(r, t)
        if by_direction:
            close = cos >= INT8_MIN_COSINE
        elif precision == "int8":
            close = rel <= rtol or cos >= INT8_SELF_MIN_COSINE
        else:
            close = rel <= rtol or (precision in ("fp16", "bf16") and cos >= REDUCED_MIN_COSINE)
        passed = passed and (close or diff <= atol)
        worst_abs, worst_rel, worst_cos = max(worst_abs, diff), max(worst_rel, rel), min(worst_cos, cos)
    return Verification(True, passed, worst_abs, worst_rel, worst_cos)


def quantized_ops(model: onnx.ModelProto) -> list[str]:
    """The int8 op types `model` already uses (sorted; empty for a float model); one definition, in hwopt.quant.qdq."""
    from hwopt.quant.qdq import quantized_ops as counted

    return sorted(counted(model))


def is_quantized(model: onnx.ModelProto) -> bool:
    """True when the graph carries int8 quantization already (QDQ, QOperator or dynamic int8 ops)."""
    return bool(quantized_ops(model))


def dynamic_dims_note(model: onnx.ModelProto) -> str | None:
    """Deploy note for formats that keep dynamic input dims (ONNX, OpenVINO IR); None if all are static.

    OCR and detection models are run on many input sizes, so these exports keep the source's
    dynamic dims instead of baking in the size they were verified at.
    """
    from hwopt.graph.shapes import input_specs

    dyn = [f"{s.name}[{','.join('?' if not isinstance(d, int) else str(d) for d in s.dims)}]"
           for s in input_specs(model) if any(not isinstance(d, int) for d in s.dims)]
    return f"dynamic input dims kept ({'; '.join(dyn)}): one file serves every input size" if dyn else None


def resolve_output(out: PathLike, suffix: str, stem: str = "model") -> Path:
    """`out` itself when it already ends in `suffix`, else `out/<stem><suffix>` (a folder)."""
    p = Path(out)
    if p.suffix.lower() == suffix:
        return p
    if p.suffix and not p.is_dir():
        raise HwoptError(f"output {p} must end in {suffix} or be a folder")
    return p / f"{stem}{suffix}"
