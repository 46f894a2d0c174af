"""`prune_model`: groups -> importance -> selection -> (OBSPA compensation) -> apply -> validate.

The one entry point the CLI and the pipeline use. A latency budget is met by bisecting the
pruning ratio: measured on onnxruntime when the target is this machine, predicted by
`hwopt.latency.predict_latency` for other targets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from threadpoolctl import threadpool_limits

from hwopt.data import Dataset, check_dataset, load_dataset
from hwopt.devices import DeviceProfile, load_device
from hwopt.errors import HwoptError
from hwopt.graph.census import census, subgraphs
from hwopt.graph.load import load_model
from hwopt.graph.shapes import Shapes, fix_input_shapes, random_inputs, resolve_input_shapes
from hwopt.pruning import obspa
from hwopt.pruning.apply import apply_pruning
from hwopt.pruning.groups import ChannelGroup, build_groups, exclude_nodes, prepare_model
from hwopt.pruning.importance import importance, select_channels

PathLike = str | os.PathLike
CRITERION_NAMES = ("l1", "l2", "bn", "obs")
#: kept-channel multiple without a target: onnxruntime's blocked CPU kernels ran pruned models with
#: odd channel counts up to 2x slower than the unpruned model here; multiples of 8 run faster
DEFAULT_MULTIPLE = 8


@dataclass
class PruneResult:
    """The pruned model and what pruning did (JSON-ready `summary`)."""

    model: onnx.ModelProto
    summary: dict = field(default_factory=dict)


def measure_latency_ms(model: onnx.ModelProto, shapes: Shapes | None = None, *, runs: int = 20) -> float:
    """Median onnxruntime latency, 1 thread (steadiest on shared machines)."""
    from hwopt.runtimes import get_runtime, time_session

    concrete = resolve_input_shapes(model, shapes)
    session = get_runtime("onnxruntime").session(fix_input_shapes(model, concrete), threads=1)
    return float(np.median(time_session(session, random_inputs(model, concrete), warmup=3, runs=runs)))


def _dataset(calib: Dataset | PathLike | None, model: onnx.ModelProto) -> Dataset | None:
    if calib is None or isinstance(calib, Dataset):
        if calib is not None:
            check_dataset(calib, model)
        return calib
    return load_dataset(calib, model)


def _plan(
    model: onnx.ModelProto,
    groups: list[ChannelGroup],
    ratio: float,
    criterion: str,
    data: Dataset | None,
    multiple: int,
    global_ranking: bool,
    cache: dict,
) -> tuple[dict[int, np.ndarray], dict]:
    """Kept channels per group and OBSPA's compensated weights (empty for magnitude criteria)."""
    if criterion != "obs":
        if "scores" not in cache:
            cache["scores"] = importance(model, groups, criterion)
        return select_channels(groups, cache["scores"], ratio, global_ranking=global_ranking, multiple=multiple), {}
    if "scores" not in cache:
        cons = obspa.consumers(model, groups)
        hess = obspa.collect_hessians(model, cons, data) if data is not None else obspa.data_free_hessians(model, groups, cons)
        hinv = obspa.inverses(hess)
        cache.update(cons=cons, hinv=hinv, scores=obspa.obs_scores(model, groups, cons, hinv))
        for g in groups:  # groups without a consumer layer (e.g. feeding only a barrier) fall back to L2
            if g.prunable and not any(c.group == g.id for c in cons):
                cache["scores"][g.id] = importance(model, [g], "l2")[g.id]
    keep = select_channels(groups, cache["scores"], ratio, global_ranking=global_ranking, multiple=multiple)
    weights = obspa.obs_updates(model, cache["cons"], cache["hinv"], keep, {g.id: g.channels for g in groups})
    return keep, weights


def prune_model(
    model: onnx.ModelProto | PathLike,
    ratio: float | None = 0.3,
    *,
    criterion: str = "l1",
    calib: Dataset | PathLike | None = None,
    target: DeviceProfile | str | None = None,
    exclude: Sequence[str] = (),
    global_ranking: bool = False,
    shapes: Shapes | None = None,
    latency_ms: float | None = None,
    measure: bool = False,
    finetune_epochs: int = 0,
    multiple: int | None = None,
) -> PruneResult:
    """Structurally prune `model`: drop `ratio` of the channels of every prunable group.

    criterion: l1 | l2 | bn (BatchNorm scale) | obs (OBSPA; data-free without `calib`).
    target: rounds kept channel counts to its `channel_multiple` (`multiple` overrides it; without
    either, multiples of 8); with `latency_ms`, the ratio is
    searched (bisection) until the model meets the budget on that target. `exclude` fixes the
    groups touching the named nodes. `measure` adds onnxruntime latency before/after (1 thread).
    `finetune_epochs` > 0 distills the original into the pruned model on `calib` (needs torch).
    The input model is not modified; the result has passed onnx.checker and an onnxruntime run.
    """
    original = model if isinstance(model, onnx.ModelProto) else load_model(model)
    if criterion not in CRITERION_NAMES:
        raise HwoptError(f"unknown criterion {criterion!r}; choose from {', '.join(CRITERION_NAMES)}")
    if latency_ms is None and (ratio is None or not 0.0 <= ratio < 1.0):
        raise HwoptError(f"pruning ratio must be in [0, 1), got {ratio}")
    device = load_device(target) if isinstance(target, str) else target
    if multiple is None:
        multiple = device.channel_multiple if device is not None else DEFAULT_MULTIPLE
    if multiple < 1:
        raise HwoptError(f"channel multiple must be >= 1, got {multiple}")
    data = _dataset(calib, original)
    if finetune_epochs and data is None:
        raise HwoptError("fine-tuning needs calibration data (--calib)")
    prepared = prepare_model(original)
    groups = build_groups(prepared, shapes, prepared=True)
    if exclude:
        exclude_nodes(groups, prepared, list(exclude))
    if not any(g.prunable for g in groups):
        raise HwoptError(_nothing_prunable(prepared, groups))
    cache: dict = {}

    def build(r: float) -> tuple[onnx.ModelProto, dict]:
        keep, weights = _plan(prepared, groups, r, criterion, data, multiple, global_ranking, cache)
        return apply_pruning(prepared, keep, groups, shapes=shapes, weights=weights), keep

    # one BLAS thread: OBSPA's many small solves run ~8x faster than with threads fighting for cores
    with threadpool_limits(limits=1):
        if latency_ms is not None:
            ratio, pruned, keep = _search_ratio(build, latency_ms, device, shapes)
        else:
            pruned, keep = build(ratio)
    if finetune_epochs:
        from hwopt.graph.finetune import kd_finetune

        pruned = kd_finetune(pruned, prepared, data, epochs=finetune_epochs, quiet=True)
    summary = _summary(prepared, pruned, groups, keep, shapes)
    summary.update(criterion=criterion, ratio=ratio, global_ranking=global_ranking, channel_multiple=multiple,
                   calibrated=data is not None, finetune_epochs=finetune_epochs)
    if measure:
        summary["latency_ms_before"] = measure_latency_ms(original, shapes)
        summary["latency_ms_after"] = measure_latency_ms(pruned, shapes)
        summary["speedup"] = summary["latency_ms_before"] / summary["latency_ms_after"]
    return PruneResult(pruned, summary)


def _nothing_prunable(model: onnx.ModelProto, groups: list[ChannelGroup]) -> str:
    """The one-line refusal when no group can lose a channel, naming the cause (an already
    quantized graph: its integer weights are not channels pruning can slice)."""
    from hwopt.quant.qdq import quantized_ops

    quantized = sorted(quantized_ops(model))
    if quantized:
        return (f"the model is already quantized ({', '.join(quantized)}): prune the float model, "
                "then quantize the pruned one")
    reasons = list(dict.fromkeys(r for g in groups for r in g.reasons))
    bodies = [n.name or n.op_type for n in model.graph.node if subgraphs(n)]
    if bodies and not reasons:  # silero-vad: every layer sits inside the branches of one If
        reasons = [f"its layers are inside control-flow subgraphs ({', '.join(bodies[:3])}), which pruning does not enter"]
    return "the model has no prunable channel group" + (f" ({'; '.join(reasons[:3])})" if reasons else "")


def _latency_fn(device: DeviceProfile | None, shapes: Shapes | None):
    if device is None:
        raise HwoptError("--latency-ms needs --target")
    if device.present_here:
        return lambda m: measure_latency_ms(m, shapes)
    try:
        from hwopt.latency.predict import predict_latency
    except ImportError:
        raise HwoptError(f"target {device.name} is not present here and no latency predictor is installed") from None
    return lambda m: float(predict_latency(m, device, shapes=shapes).latency_ms)


def _search_ratio(build, budget: float, device: DeviceProfile | None, shapes: Shapes | None, steps: int = 6):
    """Smallest ratio (bisection over [0, 0.9]) whose pruned model meets the latency budget."""
    latency = _latency_fn(device, shapes)
    lo, hi = 0.0, 0.9
    best = build(hi)
    if latency(best[0]) > budget:
        raise HwoptError(f"even 90% pruning does not reach {budget} ms on {device.name} ({latency(best[0]):.3f} ms)")
    best_ratio = hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        cand = build(mid)
        if latency(cand[0]) <= budget:
            hi, best, best_ratio = mid, cand, mid
        else:
            lo = mid
    return best_ratio, best[0], best[1]


def _summary(prepared, pruned, groups: list[ChannelGroup], keep: dict[int, np.ndarray], shapes: Shapes | None) -> dict:
    """Census of the prepared model (weights from Constant nodes counted) against the pruned one."""
    before, after = census(prepared, shapes), census(pruned, shapes)
    return {
        "params_before": before.params,
        "params_after": after.params,
        "macs_before": before.macs,
        "macs_after": after.macs,
        "groups": len(groups),
        "groups_prunable": sum(g.prunable for g in groups),
        "groups_pruned": len(keep),
        "per_group": [
            {"id": g.id, "channels": g.channels, "kept": int(len(keep[g.id])), "members": g.node_names()[:4]}
            for g in groups
            if g.id in keep
        ],
    }
