"""16-bit float and mixed int8/16-bit candidates, and side-by-side latency of every candidate.

* fp16: the whole model converted with onnxconverter-common (inputs/outputs stay fp32) — the
  fast path on GPUs and ARMv8.2+ cores; on x86 CPUs onnxruntime runs it slower, so measure.
* bf16: not a model rewrite — OpenVINO runs a float model in bf16 when its precision hint says
  so (AVX512-BF16 / AMX CPUs).
* int8 + bf16: the QDQ model on OpenVINO with the bf16 hint (int8 where quantized, bf16 for the
  float layers mixed precision kept); int8 + fp16: the QDQ model with its float parts in fp16.

`measure_candidates` times every (runtime, precision) here in interleaved rounds with 1 thread,
so that load from other processes hits all candidates alike; the ratios are what to trust.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from hwopt.errors import HwoptError, NotAvailableError
from hwopt.runtimes import get_runtime, time_rounds, time_session

_QDQ_OPS = ["QuantizeLinear", "DequantizeLinear", "Clip"]


def to_fp16(model: onnx.ModelProto, *, keep_ops: list[str] = ()) -> onnx.ModelProto:
    """Copy of `model` computing in float16, with fp32 inputs/outputs and `keep_ops` left in fp32."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise NotAvailableError("fp16 conversion needs onnxconverter-common (pip install onnxconverter-common)") from exc
    block = list(float16.DEFAULT_OP_BLOCK_LIST) + list(keep_ops)
    src = onnx.ModelProto()
    src.CopyFrom(model)
    return float16.convert_float_to_float16(src, keep_io_types=True, op_block_list=block, disable_shape_infer=False)


def mixed_int8_fp16(qdq_model: onnx.ModelProto) -> onnx.ModelProto:
    """A QDQ model whose float (not quantized) parts run in fp16; Q/DQ stay fp32."""
    return to_fp16(qdq_model, keep_ops=_QDQ_OPS)


@dataclass
class Candidate:
    runtime: str
    precision: str  # fp32, fp16, bf16, int8, int8+bf16, int8+fp16
    p50_ms: float = float("nan")
    min_ms: float = float("nan")
    error: str = ""
    rounds_ms: list[float] = field(default_factory=list)  # median of each interleaved round (who won which round)

    def to_dict(self) -> dict:
        return asdict(self)


def candidate_models(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto | None, runtimes: list[str],
                     *, fp16: bool = False) -> list[tuple[Candidate, onnx.ModelProto, str]]:
    """(candidate, model, precision hint) for every runtime x precision worth timing here."""
    out = []
    for rt in runtimes:
        out.append((Candidate(rt, "fp32"), float_model, "fp32"))
        if rt == "openvino":
            out.append((Candidate(rt, "bf16"), float_model, "bf16"))
        if fp16 and rt != "openvino":
            out.append((Candidate(rt, "fp16"), to_fp16(float_model), "fp32"))
        if qdq_model is not None:
            out.append((Candidate(rt, "int8"), qdq_model, "int8"))
            if rt == "openvino":
                out.append((Candidate(rt, "int8+bf16"), qdq_model, "bf16"))
            if fp16 and rt != "openvino":
                out.append((Candidate(rt, "int8+fp16"), mixed_int8_fp16(qdq_model), "fp32"))
    return out


def measure_candidates(cands: list[tuple[Candidate, onnx.ModelProto, str]], feeds: dict[str, np.ndarray], *,
                       rounds: int = 5, runs: int = 10, warmup: int = 3) -> list[Candidate]:
    """p50 latency of each candidate, runs interleaved across candidates over `rounds`.

    Every round times all candidates in a new (seeded) order (`time_rounds`); 1-thread host
    sessions are timed on the process CPU clock (`timing_clock`), which other people's jobs on a
    shared machine disturb far less than wall time."""
    sessions = []
    for cand, model, hint in cands:
        rt = get_runtime(cand.runtime)
        if not rt.available():
            cand.error = f"{cand.runtime} not installed"
            continue
        try:
            s = rt.session(model, threads=1, precision=hint)
            time_session(s, feeds, warmup=warmup, runs=1)
            sessions.append((cand, s))
        except HwoptError as exc:
            cand.error = str(exc)
    times = time_rounds({i: s for i, (_, s) in enumerate(sessions)}, feeds, rounds=rounds, runs=runs)
    for i, (cand, _) in enumerate(sessions):
        t = np.concatenate(times[i])
        cand.p50_ms, cand.min_ms = float(np.median(t)), float(t.min())
        cand.rounds_ms = [round(float(np.median(r)), 5) for r in times[i]]
    return [c for c, _, _ in cands]
