"""`quantize()`: target-aware PTQ with optional reconstruction, distillation and mixed precision.

The result is judged the way it will be deployed: accuracy by running the QDQ model on the
target's runtime where that runtime is present here (and on onnxruntime, for comparison), and
latency of float vs int8 (and bf16 / mixed) measured side by side on every runtime here.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from hwopt.data import Dataset, check_dataset, load_dataset
from hwopt.devices import DeviceProfile, load_device
from hwopt.errors import HwoptError
from hwopt.graph.load import load_model, save_model
from hwopt.graph.normalize import fold_conv_affine, normalize_model
from hwopt.graph.fold import fold_constants
from hwopt.graph.shapes import Shapes, fix_input_shapes, input_specs, random_inputs, resolve_input_shapes
from hwopt.quant.biascorrect import correct_biases
from hwopt.quant.calibrate import METHODS
from hwopt.quant.equalize import equalize as equalize_model
from hwopt.quant.equalize import has_depthwise
from hwopt.quant.precision import candidate_models, measure_candidates
from hwopt.quant.ptq import calibrate_plan, emit, float_tails, plan_quantization
from hwopt.quant.qdq import align_biases, check_bits, refuse_quantized, route_output_quantizers
from hwopt.quant.schemes import Scheme, scheme_for
from hwopt.quant.sensitivity import evaluate, layer_sensitivity, mixed_precision

RECONSTRUCT = ("none", "adaround", "qdrop", "metaaug")
#: bias correction modes: analytic removes the mean shift of weight rounding (from input means);
#: empirical measures each layer's mean output shift against the float model (hwopt.quant.biascorrect)
BIAS_CORRECTION = ("none", "analytic", "empirical")
DataLike = Dataset | str | os.PathLike | None


@dataclass
class QuantResult:
    model: onnx.ModelProto
    report: dict = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        return save_model(self.model, path)


def _dataset(data: DataLike, model: onnx.ModelProto, what: str) -> Dataset | None:
    if data is None:
        return None
    ds = data if isinstance(data, Dataset) else load_dataset(data, model)
    check_dataset(ds, model)
    if len(ds) == 0:
        raise HwoptError(f"{what} data set is empty")
    return ds


def synthetic_calibration(model: onnx.ModelProto, shapes: Shapes | None = None, samples: int = 32, seed: int = 0) -> Dataset:
    """Standard-normal inputs: ranges only roughly right, so accuracy must be checked on real data."""
    concrete = resolve_input_shapes(model, shapes)
    rng = np.random.default_rng(seed)
    inputs = {s.name: rng.standard_normal((samples, *concrete[s.name][1:])).astype(s.dtype) for s in input_specs(model)}
    return Dataset(inputs, None, "synthetic")


def _runtimes_here() -> list[str]:
    """The runtimes that can run a QDQ model on this machine (accuracy and latency are measured on them)."""
    from hwopt.runtimes import get_runtime

    return [r for r in ("onnxruntime", "openvino") if get_runtime(r).available()]


def quantize(
    model: onnx.ModelProto | str | os.PathLike,
    calib: DataLike = None,
    *,
    target: DeviceProfile | str = "x86-avx512",
    runtime: str | None = None,
    method: str = "minmax",
    wbits: int = 8,
    abits: int = 8,
    exclude_nodes: list[str] = (),
    exclude_ops: list[str] = (),
    keep_first_last: bool = False,
    keep_tails: bool = True,
    bias_correction: bool | str = False,
    equalize: bool | str = "auto",
    reconstruct: str = "none",
    iters: int = 500,
    distill: bool = False,
    epochs: int = 3,
    eval: DataLike = None,  # noqa: A002 - the documented keyword
    data_free: bool = False,
    max_accuracy_drop: float | None = None,
    sensitivity: bool = False,
    measure_latency: bool = True,
    shapes: Shapes | None = None,
    calib_limit: int | None = 512,
) -> QuantResult:
    """Quantize an ONNX model for `target` and report accuracy and latency measured here.

    `calib` is required unless `data_free` (synthetic inputs, with a warning). Weights are
    per-channel symmetric; activations follow the runtime's scheme (`hwopt.quant.schemes`).
    With `max_accuracy_drop` (points), the most sensitive layers stay float until it is met.
    `bias_correction` is one of BIAS_CORRECTION (True means "analytic", False "none").

    `shapes` ({input: dims}, as from --shape) fixes dynamic input dims where concrete ones are
    needed (graph analysis, synthetic data, the latency measurement); inputs it does not name
    take batch 1 and the calibration data's sample shape. The QDQ model keeps the input's
    dynamic dims. An already quantized model is refused.
    """
    check_bits(wbits, "--wbits")
    check_bits(abits, "--abits")
    if method not in METHODS:
        raise HwoptError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if reconstruct not in RECONSTRUCT:
        raise HwoptError(f"unknown --reconstruct {reconstruct!r}; choose one of {', '.join(RECONSTRUCT)}")
    bias_mode = bias_correction_mode(bias_correction)
    if equalize not in (True, False, "auto"):
        raise HwoptError("equalize must be True, False or 'auto'")
    device = target if isinstance(target, DeviceProfile) else load_device(target)
    runtime = runtime or device.preferred_runtime
    if runtime not in device.runtimes:
        raise HwoptError(f"runtime {runtime!r} is not one of {device.name}'s runtimes {device.runtimes}")
    scheme = scheme_for(runtime, device)
    original = model if isinstance(model, onnx.ModelProto) else load_model(model)
    refuse_quantized(original)
    float_model = normalize_model(original)
    fold_constants(float_model)  # PaddlePaddle's Reshape(bias) branches become initializers
    folded = fold_conv_affine(float_model)  # ... and its separate BatchNormalization / bias Add nodes join the Conv

    calib_ds = _dataset(calib, float_model, "calibration")
    if calib_ds is None:
        if not data_free:
            raise HwoptError("no calibration data: pass --calib DATA, or --data-free to calibrate on synthetic inputs")
        warnings.warn("data-free quantization: calibrating on synthetic inputs; check accuracy on real data", stacklevel=2)
        calib_ds = synthetic_calibration(float_model, shapes)
    eval_ds = _dataset(eval, float_model, "evaluation") or calib_ds.subset(min(len(calib_ds), 256))
    concrete = resolve_input_shapes(float_model, shapes, data=calib_ds.inputs)

    report: dict = {"target": device.name, "runtime": runtime, "scheme": scheme.note, "method": method,
                    "wbits": wbits, "abits": abits, "data_free": calib_ds.source == "synthetic",
                    "stages": [{"stage": "fold", "conv_affine": folded}]}
    if equalize is True or (equalize == "auto" and has_depthwise(float_model)):
        float_model, pairs = equalize_model(float_model)
        report["stages"].append({"stage": "equalize", "pairs": pairs})

    plan = plan_quantization(float_model, scheme, exclude_nodes=list(exclude_nodes), exclude_ops=list(exclude_ops),
                             keep_first_last=keep_first_last, shapes=concrete)
    stats = calibrate_plan(plan, calib_ds, method, limit=calib_limit)
    tails = float_tails(plan, stats) if keep_tails else set()
    qdq = emit(plan, stats, wbits=wbits, abits=abits, float_nodes=tails, bias_correction=bias_mode == "analytic")
    report["stages"].append({"stage": "ptq", "samples": stats.samples, "layers": len(plan.layers),
                             "float_tails": sorted(tails), "bias_correction": bias_mode})
    runtimes = _runtimes_here()
    judge = runtime if runtime in runtimes else "onnxruntime"
    if bias_mode == "empirical":
        qdq, bc = correct_biases(plan.model, qdq, calib_ds, runtime=judge)
        report["stages"].append({"stage": "bias_correction", **bc.to_dict()})

    if reconstruct != "none":
        try:
            from hwopt.quant.reconstruct import reconstruct as run_reconstruct
        except ImportError as exc:
            raise HwoptError(f"--reconstruct {reconstruct} is not available in this build ({exc})") from exc
        qdq = run_reconstruct(float_model, qdq, calib_ds, method=reconstruct, wbits=wbits, abits=abits,
                               iters=iters)
        report["stages"].append({"stage": "reconstruct", "method": reconstruct, "iters": iters})
    if distill:
        try:
            from hwopt.quant.distill import distill_qat
        except ImportError as exc:
            raise HwoptError(f"--distill is not available in this build ({exc})") from exc
        qdq = distill_qat(float_model, qdq, calib_ds, epochs)
        report["stages"].append({"stage": "distill", "epochs": epochs})

    # last, after every stage that moves scales: onnxruntime then runs exactly this arithmetic
    qdq = finish_qdq(qdq, scheme)
    report["accuracy_runtime"] = judge
    f_metrics, reference = evaluate(float_model, eval_ds, judge)
    q_metrics, _ = evaluate(qdq, eval_ds, judge, reference)
    report["float"] = f_metrics
    report["quantized"] = {judge: q_metrics}
    for rt in runtimes:
        if rt != judge:
            report["quantized"][rt] = evaluate(qdq, eval_ds, rt, reference)[0]

    ranking = []
    if sensitivity or max_accuracy_drop is not None:
        ranking = layer_sensitivity(plan, stats, eval_ds, wbits=wbits, abits=abits, runtime=judge)
        report["sensitivity"] = [s.to_dict() for s in ranking]
    report["float_layers"] = sorted(plan.user_excluded | tails)
    drop = f_metrics["accuracy"] - q_metrics["accuracy"]
    if max_accuracy_drop is not None and drop > max_accuracy_drop:
        if reconstruct != "none" or distill:
            warnings.warn("mixed precision re-emits plain PTQ layers; reconstruction/distillation results are not reused",
                          stacklevel=2)
        mp = mixed_precision(plan, stats, eval_ds, ranking, float_accuracy=f_metrics["accuracy"], max_drop=max_accuracy_drop,
                             wbits=wbits, abits=abits, runtime=judge, bias_correction=bias_mode == "analytic")
        qdq = mp.model
        if bias_mode == "empirical":
            qdq = correct_biases(plan.model, qdq, calib_ds, runtime=judge)[0]
        qdq = finish_qdq(qdq, scheme)
        report["quantized"][judge] = evaluate(qdq, eval_ds, judge, reference)[0]
        report["mixed_precision"] = {"float_layers": mp.float_layers, "met_budget": mp.met_budget, "tried": mp.tried}
        report["float_layers"] = sorted(set(report["float_layers"]) | set(mp.float_layers))
        drop = f_metrics["accuracy"] - report["quantized"][judge]["accuracy"]
    report["accuracy_drop"] = drop

    if measure_latency and runtimes:
        concrete = resolve_input_shapes(float_model, shapes, data=eval_ds.inputs)
        feeds = _latency_feeds(float_model, eval_ds, concrete)
        report["latency_shapes"] = {k: list(v) for k, v in concrete.items()}
        cands = candidate_models(fix_input_shapes(float_model, concrete), fix_input_shapes(qdq, concrete), runtimes)
        report["latency"] = [c.to_dict() for c in measure_candidates(cands, feeds)]
        report["speedup"] = _speedups(report["latency"])
    qdq, report["weight_storage"] = _weight_storage(qdq, wbits, runtime)
    return QuantResult(qdq, report)


def finish_qdq(qdq: onnx.ModelProto, scheme: Scheme) -> onnx.ModelProto:
    """The last rewrites of a QDQ model, after every stage that moves scales: biases on the
    int32 grid, and the scheme's graph outputs routed through their quantizers."""
    qdq = align_biases(qdq)
    return route_output_quantizers(qdq) if scheme.route_outputs else qdq


def bias_correction_mode(value: bool | str) -> str:
    """One of BIAS_CORRECTION from the API's bool-or-name `bias_correction` (True: analytic)."""
    mode = ("analytic" if value else "none") if isinstance(value, bool) else value
    if mode not in BIAS_CORRECTION:
        raise HwoptError(f"unknown bias correction {value!r}; choose one of {', '.join(BIAS_CORRECTION)}")
    return mode


def _weight_storage(qdq: onnx.ModelProto, wbits: int, runtime: str) -> tuple[onnx.ModelProto, str]:
    """Store <=4-bit weights as opset-21 INT4 where the target runtime reads it (onnxruntime only).

    Accuracy and latency above were measured on the int8-storage model, which computes the same
    integers; OpenVINO and the other runtimes get that model, and the report says so.
    """
    if wbits > 4:
        return qdq, "int8"
    if runtime != "onnxruntime":
        return qdq, f"int8 (holding {wbits}-bit values: {runtime} does not read INT4 tensors)"
    from hwopt.quant.int4 import int4_export

    try:
        return int4_export(qdq), "int4"
    except HwoptError as exc:
        return qdq, f"int8 (holding {wbits}-bit values: {exc})"


def _latency_feeds(model: onnx.ModelProto, ds: Dataset, shapes: Shapes) -> dict[str, np.ndarray]:
    """The first evaluation sample, or generated inputs where --shape asks for another size."""
    first = {k: v[:1] for k, v in ds.inputs.items()}
    if all(first[k].shape == tuple(v) for k, v in shapes.items()):
        return first
    return random_inputs(model, shapes)


def _speedups(latency: list[dict]) -> dict:
    """int8 vs fp32 on each runtime, and the fastest candidate vs the fastest fp32 (honest baseline)."""
    by = {(c["runtime"], c["precision"]): c["p50_ms"] for c in latency if not c["error"]}
    out = {rt: by[(rt, "fp32")] / by[(rt, "int8")] for rt, p in by if p == "int8" and (rt, "fp32") in by}
    fp32 = [v for (rt, p), v in by.items() if p == "fp32"]
    if fp32 and by:
        best = min(by.items(), key=lambda kv: kv[1])
        out["best"] = {"runtime": best[0][0], "precision": best[0][1], "vs_best_fp32": min(fp32) / best[1]}
    return out
