"""The pipeline's stages: each is `Artifact -> Artifact` with its own options dataclass.

A stage reads its input artifact and the shared `StageContext` (target, data sets, reference
outputs) and writes its files into the folder it is given; the runner caches the result. Stages
never call each other. The heavy lifting lives in the feature packages (hwopt.pruning,
hwopt.quant, hwopt.exporters, hwopt.latency); a stage only adapts their APIs to artifacts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwopt.data import Dataset, accuracy_metrics, run_outputs
from hwopt.devices import DeviceProfile
from hwopt.errors import HwoptError
from hwopt.graph.load import load_model, save_model
from hwopt.graph.shapes import Shapes
from hwopt.pipeline.artifact import Artifact
from hwopt.pipeline.cache import StageCache
from hwopt.runtimes import get_runtime, time_session, timing_clock


@dataclass
class StageContext:
    """What every stage may read: the target, the data, and the original model's outputs."""

    device: DeviceProfile
    calib: Dataset | None
    eval: Dataset  # the data every candidate is judged on (eval data, else calib, else random inputs)
    data_digest: str
    shapes: Shapes
    reference: list[np.ndarray]  # the original model's outputs on `eval`, run by onnxruntime
    threads: int = 1
    log: Callable[[str], None] = lambda msg: None
    #: the run's stage cache, for work several candidates share (one TFLite conversion for all precisions)
    cache: StageCache | None = None


@dataclass(frozen=True)
class PruneOptions:
    """Structured channel pruning (hwopt.pruning)."""

    ratio: float = 0.25
    criterion: str = "l1"


@dataclass(frozen=True)
class QuantizeOptions:
    """int8 post-training quantization in `runtime`'s QDQ scheme (hwopt.quant).

    `max_accuracy_drop` turns on mixed precision: the most sensitive layers stay float until the
    drop is met (the strongest fallback before giving up on int8). `bias_correction` is none,
    analytic or empirical (True: analytic), see `hwopt.quant.api.BIAS_CORRECTION`.
    """

    runtime: str
    method: str = "minmax"
    reconstruct: str = "none"
    bias_correction: bool | str = False
    max_accuracy_drop: float | None = None


@dataclass(frozen=True)
class ExportOptions:
    """Export for `runtime` at `precision`, verified against the stage's input model."""

    runtime: str
    precision: str = "fp32"


@dataclass(frozen=True)
class EvaluateOptions:
    """Accuracy on the eval data and latency (measured on a runtime here, else predicted)."""

    runtime: str
    precision: str = "fp32"
    measure: bool = True
    warmup: int = 2  # the accuracy pass just ran the session over the eval data: it is warm
    runs: int = 30
    eval_limit: int | None = None
    #: wall seconds the timing may take: a 0.8 s-per-call detector gets fewer runs (at least min_runs)
    time_budget_s: float = 8.0
    min_runs: int = 5


@dataclass(frozen=True)
class SearchOptions:
    """Subnet search (hwopt.nas) for the most accurate subnet under `latency_ms` on `runtime`.

    Kept small (a dozen measured subnets, a short evolution) because compress only needs one
    subnet that fits; the search's latency table is `predicted` by default since the evaluate
    stage measures the chosen subnet itself on a present target.
    """

    runtime: str
    latency_ms: float
    subnets: int = 12
    population: int = 16
    generations: int = 30
    latency_source: str = "predicted"
    seed: int = 0


def prune(art: Artifact, opts: PruneOptions, ctx: StageContext, work: Path) -> Artifact:
    from hwopt.pruning import prune_model

    if ctx.calib is None and opts.criterion == "obs":
        raise HwoptError("OBS pruning needs calibration data (--calib)")
    result = prune_model(art.load_onnx(), opts.ratio, criterion=opts.criterion, calib=ctx.calib, target=ctx.device)
    out = save_model(result.model, work / "model.onnx")
    return Artifact(out, meta={"stage": "prune", "ratio": opts.ratio, "criterion": opts.criterion})


def search(art: Artifact, opts: SearchOptions, ctx: StageContext, work: Path) -> Artifact:
    """The subnet `hwopt.nas.search` finds under the budget, taking the original model's input.

    The search may pick a smaller input resolution; a Resize in front keeps the input contract
    (so the same eval data judges it and the resize is paid for in its latency). A budget no
    subnet can reach is an HwoptError naming the achievable range, so the candidate's record says so.
    """
    import tempfile

    from hwopt.nas import EvolutionSettings
    from hwopt.nas import search as run_search

    settings = EvolutionSettings(population=opts.population, generations=opts.generations, seed=opts.seed)
    with tempfile.TemporaryDirectory(prefix="hwopt-search-") as tmp:
        data = Path(tmp) / "eval.npz"  # nas reads its eval data from a file
        labels = {} if ctx.eval.labels is None else {"labels": ctx.eval.labels}
        np.savez(data, **ctx.eval.inputs, **labels)
        report = run_search(art.path, target=ctx.device.name, latency_ms=opts.latency_ms, runtime=opts.runtime,
                            eval_data=data, out_dir=work / "search", seed=opts.seed, settings=settings,
                            n_subnets=opts.subnets, latency_source=opts.latency_source, shapes=ctx.shapes,
                            progress=ctx.log)
    res = report.results[0]
    model = resize_front(load_model(work / "search" / res.onnx), ctx.shapes)
    out = save_model(model, work / "model.onnx")
    return Artifact(out, meta={"stage": "search", "config": res.config, "search_latency_ms": res.latency_ms,
                               "search_latency_source": res.latency_source, "search_accuracy": res.accuracy,
                               "predictor_spearman": report.predictor.spearman, "evaluated": res.evaluated})


def resize_front(model: onnx.ModelProto, shapes: Shapes) -> onnx.ModelProto:
    """`model` taking its inputs at `shapes`, bilinearly resized to the (smaller) size it was cut for."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in out.graph.input:
        full = shapes.get(vi.name)
        small = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if full is None or len(full) != 4 or list(full) == small:
            continue
        inner, sizes = f"{vi.name}__resized", f"{vi.name}__resize_sizes"
        for node in out.graph.node:
            node.input[:] = [inner if i == vi.name else i for i in node.input]
        out.graph.initializer.append(numpy_helper.from_array(np.asarray(small, np.int64), sizes))
        out.graph.node.insert(0, helper.make_node("Resize", [vi.name, "", "", sizes], [inner], name=f"{vi.name}__resize",
                                                  mode="linear", coordinate_transformation_mode="half_pixel"))
        for dim, size in zip(vi.type.tensor_type.shape.dim, full):
            dim.dim_value = int(size)
    onnx.checker.check_model(out)
    return out


def quantize(art: Artifact, opts: QuantizeOptions, ctx: StageContext, work: Path) -> Artifact:
    from hwopt.quant.api import quantize as run_quantize

    if ctx.calib is None:
        raise HwoptError("int8 candidates need calibration data: pass --calib DATA")
    labeled = ctx.eval if ctx.eval.labels is not None else None
    res = run_quantize(
        art.load_onnx(), ctx.calib, target=ctx.device, runtime=opts.runtime, method=opts.method,
        reconstruct=opts.reconstruct, bias_correction=opts.bias_correction, eval=labeled,
        max_accuracy_drop=opts.max_accuracy_drop, measure_latency=False, shapes=ctx.shapes,
    )
    out = save_model(res.model, work / "model.onnx")
    meta = {"stage": "quantize", "runtime": opts.runtime, "method": opts.method, "reconstruct": opts.reconstruct,
            "bias_correction": next(s["bias_correction"] for s in res.report["stages"] if s["stage"] == "ptq"),
            "float_layers": res.report.get("float_layers", [])}
    return Artifact(out, precision="int8", meta=meta)


def export(art: Artifact, opts: ExportOptions, ctx: StageContext, work: Path) -> Artifact:
    from hwopt.exporters import export as run_export

    res = run_export(art.load_onnx(), opts.runtime, work, target=ctx.device, precision=opts.precision, calib=ctx.calib,
                     shapes=ctx.shapes, cache=ctx.cache, log=ctx.log)
    v = res.verification
    if v.ran and not v.passed and v.max_abs_diff is None:
        raise HwoptError(f"{opts.runtime} {opts.precision} export could not be run to verify it: {v.reason}")
    if v.ran and not v.passed:
        raise HwoptError(f"{opts.runtime} {opts.precision} export does not match its ONNX model "
                         f"(max abs diff {v.max_abs_diff:.3g}, cosine {v.cosine:.4f}): {v.reason or 'outputs differ'}")
    return Artifact(res.artifact, opts.runtime, opts.precision, list(res.files), onnx_path=art.onnx_path or art.path,
                    meta={"stage": "export", "verification": v.to_dict(), "notes": res.notes, "checks": res.checks})


def evaluate(art: Artifact, opts: EvaluateOptions, ctx: StageContext, work: Path) -> Artifact:
    """Judge the artifact on the runtime it is for; record accuracy and latency in its meta."""
    from hwopt.exporters.sessions import open_artifact

    here = get_runtime(opts.runtime).available() if opts.runtime in ("onnxruntime", "openvino", "litert", "tensorrt") else False
    onnx_inputs = list(ctx.eval.inputs)
    out_shapes = [r.shape[1:] for r in ctx.reference]
    if here:
        session = open_artifact(opts.runtime, art.path, opts.precision, onnx_inputs=onnx_inputs, output_shapes=out_shapes,
                                threads=ctx.threads)
        accuracy_runtime = opts.runtime
    else:  # e.g. TensorRT without a GPU: judge accuracy on the same ONNX with onnxruntime, say so
        session = get_runtime("onnxruntime").session(art.onnx_path or art.path, threads=ctx.threads)
        accuracy_runtime = "onnxruntime (proxy)"
    ds = ctx.eval if opts.eval_limit is None else ctx.eval.subset(opts.eval_limit)
    outs = run_outputs(session, ds)
    # rows per sample: 1 for batch-first outputs, the sequence length for time-major ones (an LSTM's [T, N, C])
    ref = [r[: len(ds) * (r.shape[0] // len(ctx.eval))] for r in ctx.reference]
    if [o.shape for o in outs] != [r.shape for r in ref]:
        raise HwoptError(f"{opts.runtime} {opts.precision} outputs have shapes {[o.shape for o in outs]}, the ONNX model's "
                         f"{[r.shape for r in ref]} on the same {len(ds)} samples")
    metrics = accuracy_metrics(outs, ds.labels, ref)
    meta = dict(art.meta)
    meta.update({"accuracy": metrics["accuracy"], "metric": metrics["metric"], "sqnr_db": metrics.get("sqnr_db"),
                 "accuracy_runtime": accuracy_runtime, "eval_samples": len(ds)})
    if opts.measure and here and ctx.device.present_here:
        feeds = next(ds.batches(1))
        # the budget is wall time (what the user waits for; under load a call takes several times its CPU time)
        probe_ms = float(time_session(session, feeds, warmup=opts.warmup, runs=1, clock="wall")[0])
        runs = int(np.clip(opts.time_budget_s * 1e3 / max(probe_ms, 1e-3), opts.min_runs, opts.runs))
        clock = timing_clock(session)
        times = time_session(session, feeds, warmup=0, runs=runs, clock=clock)
        meta.update({"latency_ms": float(np.median(times)), "latency_source": "measured", "latency_runs": runs,
                     "latency_clock": clock})
    else:
        pred = predict(art, opts.runtime, ctx)
        meta.update({"latency_ms": pred.latency_ms if pred else None, "latency_source": "predicted",
                     "latency_note": "" if pred else "no latency table for this target and runtime"})
    return Artifact(art.path, art.runtime, art.precision, art.files, art.onnx_path, meta)


def predict(art: Artifact, runtime: str, ctx: StageContext):
    """hwopt.latency's prediction for the artifact's ONNX form on the target (None if no table).

    A LiteRT int8 file is quantized inside the TFLite converter, so its ONNX form is float;
    the prediction then reads an int8 QDQ stand-in made with the LiteRT scheme.
    """
    from hwopt.latency.predict import predict_latency

    from hwopt.exporters import is_quantized

    model = art.load_onnx()
    if art.precision == "int8" and not is_quantized(model):
        model = int8_stand_in(model, ctx.calib, runtime, ctx.device, ctx.shapes)
    if model is None:
        return None
    try:
        return predict_latency(model, ctx.device, runtime, ctx.shapes)
    except HwoptError:
        return None


def int8_stand_in(model, calib: Dataset | None, runtime: str, device: DeviceProfile, shapes: Shapes | None):
    """A plain min-max QDQ version of `model` for predicting int8 latency (its accuracy does not matter).

    Synthetic inputs calibrate it when no data is given (graph structure, not ranges, sets latency).
    If the runtime's own scheme cannot be emitted, onnxruntime's (also all-int8 kernels) stands in.
    Returns None when neither works.
    """
    from hwopt.quant.api import quantize, synthetic_calibration

    data = calib if calib is not None else synthetic_calibration(model, shapes)
    for scheme in dict.fromkeys((runtime, "onnxruntime")):
        if scheme not in device.runtimes:
            continue
        try:
            return quantize(model, data, target=device, runtime=scheme, measure_latency=False).model
        except HwoptError:
            continue
    return None


STAGES: dict[str, tuple[type, Callable[[Artifact, object, StageContext, Path], Artifact]]] = {
    "prune": (PruneOptions, prune),
    "search": (SearchOptions, search),
    "quantize": (QuantizeOptions, quantize),
    "export": (ExportOptions, export),
    "evaluate": (EvaluateOptions, evaluate),
}


@dataclass
class Step:
    """One stage with its options, as written in a recipe."""

    stage: str
    options: dict = field(default_factory=dict)

    def build(self) -> tuple[object, Callable]:
        if self.stage not in STAGES:
            raise HwoptError(f"unknown stage {self.stage!r} in recipe; stages are {', '.join(STAGES)}")
        cls, fn = STAGES[self.stage]
        try:
            return cls(**self.options), fn
        except TypeError as exc:
            raise HwoptError(f"bad options for stage {self.stage}: {exc}") from None
