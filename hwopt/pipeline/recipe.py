"""Plan the candidates worth trying for a model on a target, as an editable `recipe.yaml`.

The plan follows what the target really accelerates (its profile's `fast_precisions` and
runtimes) and the user's budgets:

* the float configurations of every runtime form the baseline (the fastest one is what
  `speedup` is measured against, so a slow runtime never inflates it);
* reduced-precision candidates only where the target has fast kernels (OpenVINO bf16 on
  AVX512-BF16/AMX, TensorRT fp16, int8 where listed) — except that on a target present here
  every runtime x precision pair is measured, since int8 is slower than fp32 on some of them;
* int8 candidates come in escalation levels (min-max PTQ, percentile + bias correction,
  AdaRound reconstruction, mixed precision with sensitive layers kept float): the accuracy
  guard stops at the first level of a group that meets the budget;
* pruning only when a latency budget asks for more than precision alone can give, and never
  sparsity on x86 (no sparse kernels there);
* with a latency budget, subnet-search candidates last (hwopt.nas: narrower layers, skipped
  blocks, smaller input): they run only when no earlier candidate met both budgets.

`--dry-run` writes the plan with each candidate's predicted latency and runs nothing;
`--recipe FILE` runs an edited plan.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx
import yaml

from hwopt.devices import DeviceProfile, load_device
from hwopt.errors import HwoptError
from hwopt.graph.load import atomic_write_text
from hwopt.graph.shapes import Shapes
from hwopt.pipeline.stages import STAGES, Step
from hwopt.runtimes import get_runtime

#: runtimes hwopt can export to (lce has no exporter yet)
EXPORTABLE = ("onnxruntime", "openvino", "litert", "tensorrt")
#: reduced float precisions each runtime can run, when the target lists them as fast
FLOAT_PRECISIONS = {"openvino": ("bf16",), "tensorrt": ("fp16",), "litert": ("fp16",)}
#: int8 escalation levels, weakest first (each a set of quantize-stage options)
INT8_LEVELS: list[tuple[str, dict]] = [
    ("minmax", {"method": "minmax"}),
    ("percentile", {"method": "percentile", "bias_correction": True}),
    ("adaround", {"method": "percentile", "reconstruct": "adaround"}),
    ("mixed", {"method": "percentile", "bias_correction": True, "max_accuracy_drop": None}),  # budget filled in
]
PRUNE_RATIOS = (0.25, 0.5)
#: above this many multiply-accumulates per inference the costly int8 levels (AdaRound, mixed
#: precision) are left out of the default plan: AdaRound alone ran over 14 minutes on PP-LCNet
#: (0.15 GMACs at 224x224) on a busy 2-core machine
HEAVY_MACS = 100_000_000
#: int8 levels planned for such a model (min-max, percentile + bias correction)
HEAVY_LEVELS = 2
#: bias correction of the first (min-max) int8 level on a model up to HEAVY_MACS: measured per
#: layer on the target runtime against the float model (hwopt.quant.biascorrect, what NNCF does
#: by default); it costs one pass of the QDQ model per layer depth over 32 inputs, so heavier
#: models go without. The later levels keep the analytic correction, so when the measured one
#: misfires (PP-OCR cls on OpenVINO: 96.9 % agreement vs 99.4 % analytic) the escalation has
#: the other to fall back on.
LIGHT_BIAS_CORRECTION = "empirical"


@dataclass
class Candidate:
    """One model to try: transform `steps`, then export for `runtime` at `precision` and judge it."""

    name: str
    group: str
    runtime: str
    precision: str
    steps: list[Step] = field(default_factory=list)
    predicted_ms: float | None = None
    #: meeting the budget ends the group's escalation even with some accuracy lost; False for a
    #: cheap first level of a light model, so the next (as cheap) level may win back that loss
    settles: bool = True

    def to_dict(self) -> dict:
        return {"name": self.name, "group": self.group, "runtime": self.runtime, "precision": self.precision,
                "steps": [{"stage": s.stage, **s.options} for s in self.steps], "predicted_ms": self.predicted_ms,
                **({} if self.settles else {"settles": False})}


@dataclass
class Recipe:
    """The whole plan: target, budgets, baseline float configurations and candidates in trial order."""

    target: str
    max_accuracy_drop: float = 1.0
    latency_ms: float | None = None
    measure: bool = True
    baseline: list[dict] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["candidates"] = [c.to_dict() for c in self.candidates]
        return d

    def to_yaml(self) -> str:
        head = ("# hwopt compress recipe: edit and run with `hwopt compress MODEL --recipe THIS_FILE ...`.\n"
                "# candidates run in order; within a group the guard stops at the first level that meets the budget.\n"
                "# steps use the stages: " + ", ".join(s for s in STAGES if s not in ("export", "evaluate")) +
                " (export and evaluate are added for every candidate).\n")
        return head + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(self.to_yaml(), path)


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate an (edited) recipe file; every mistake is one clear HwoptError."""
    p = Path(path)
    if not p.is_file():
        raise HwoptError(f"recipe file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise HwoptError(f"recipe {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or "target" not in raw:
        raise HwoptError(f"recipe {p} must be a mapping with at least `target` and `candidates`")
    device = load_device(raw["target"])
    cands = []
    for i, c in enumerate(raw.get("candidates") or []):
        try:
            steps = [Step(s["stage"], {k: v for k, v in s.items() if k != "stage"}) for s in c.get("steps") or []]
            cand = Candidate(str(c["name"]), str(c.get("group", c["name"])), c["runtime"], c.get("precision", "fp32"), steps,
                             c.get("predicted_ms"), bool(c.get("settles", True)))
        except (KeyError, TypeError, AttributeError) as exc:
            raise HwoptError(f"recipe {p}: candidate #{i + 1} is missing {exc} (needs name, runtime, precision, steps)") from None
        _check_candidate(cand, device, p)
        cands.append(cand)
    if not cands:
        raise HwoptError(f"recipe {p} has no candidates")
    baseline = raw.get("baseline") or [{"runtime": c.runtime, "precision": "fp32"} for c in cands[:1]]
    for b in baseline:
        if b.get("runtime") not in device.runtimes:
            raise HwoptError(f"recipe {p}: baseline runtime {b.get('runtime')!r} is not one of {device.name}'s {device.runtimes}")
    try:
        drop = float(raw.get("max_accuracy_drop", 1.0))
        latency = None if raw.get("latency_ms") is None else float(raw["latency_ms"])
    except (TypeError, ValueError):
        raise HwoptError(f"recipe {p}: max_accuracy_drop and latency_ms must be numbers") from None
    return Recipe(device.name, drop, latency, bool(raw.get("measure", device.present_here)), baseline, cands,
                  list(raw.get("notes") or []))


def _check_candidate(c: Candidate, device: DeviceProfile, where: Path) -> None:
    from hwopt.exporters import FORMATS

    if c.runtime not in EXPORTABLE or c.runtime not in device.runtimes:
        raise HwoptError(f"recipe {where}: candidate {c.name!r} runtime {c.runtime!r} is not an exportable runtime of "
                         f"{device.name} ({', '.join(r for r in device.runtimes if r in EXPORTABLE)})")
    if c.precision not in FORMATS[c.runtime][1]:
        raise HwoptError(f"recipe {where}: candidate {c.name!r}: {c.runtime} cannot run {c.precision}")
    for s in c.steps:
        if s.stage in ("export", "evaluate"):
            raise HwoptError(f"recipe {where}: candidate {c.name!r}: `{s.stage}` is added automatically; list only transforms")
        s.build()  # validates the stage name and its options


def candidate_runtimes(device: DeviceProfile) -> list[str]:
    """Runtimes to try: those runnable here for a present target; else those with a latency table."""
    rts = [r for r in device.runtimes if r in EXPORTABLE]
    if device.present_here:
        return [r for r in rts if get_runtime(r).available()]
    return [r for r in rts if r in device.latency_tables] or [device.preferred_runtime]


def plan_recipe(
    device: DeviceProfile,
    *,
    max_accuracy_drop: float = 1.0,
    latency_ms: float | None = None,
    has_calib: bool = True,
    pruning: bool | None = None,
    model_macs: int | None = None,
) -> Recipe:
    """The default plan for `device` under the budgets (see the module docstring for the rules).

    `model_macs` (from the census) bounds the work on big models: above HEAVY_MACS only the
    first HEAVY_LEVELS int8 levels are planned, and the recipe's notes say so.
    """
    runtimes = candidate_runtimes(device)
    if not runtimes:
        raise HwoptError(f"no runtime of {device.name} ({', '.join(device.runtimes)}) can be exported to or run here")
    measure = device.present_here
    r = Recipe(device.name, max_accuracy_drop, latency_ms, measure, baseline=[{"runtime": rt, "precision": "fp32"} for rt in runtimes])
    for rt in runtimes:
        r.candidates.append(Candidate(f"{rt}-fp32", f"{rt}-fp32", rt, "fp32"))
        for prec in FLOAT_PRECISIONS.get(rt, ()):
            if prec in device.fast_precisions:
                r.candidates.append(Candidate(f"{rt}-{prec}", f"{rt}-{prec}", rt, prec))
    int8_wanted = "int8" in device.fast_precisions or measure
    heavy = model_macs is not None and model_macs > HEAVY_MACS
    bias = None if heavy else LIGHT_BIAS_CORRECTION
    if int8_wanted and not has_calib:
        r.notes.append("int8 candidates skipped: they need calibration data (--calib)")
    elif int8_wanted:
        levels = None
        if heavy:
            levels = HEAVY_LEVELS
            skipped = ", ".join(name for name, _ in INT8_LEVELS[levels:])
            r.notes.append(f"large model ({model_macs / 1e9:.2f} GMACs): int8 levels {skipped} left out to bound the run "
                           "time; add them to the recipe and run it with --recipe to try them")
        for rt in runtimes:
            r.candidates += _int8_group(rt, f"{rt}-int8", [], max_accuracy_drop, levels, bias)
    if pruning is None:
        pruning = latency_ms is not None
    if pruning and has_calib:
        rt = device.preferred_runtime if device.preferred_runtime in runtimes else runtimes[0]
        for ratio in PRUNE_RATIOS:
            prune = Step("prune", {"ratio": ratio, "criterion": "l1"})
            r.candidates += _int8_group(rt, f"prune{int(ratio * 100)}-{rt}-int8", [prune], max_accuracy_drop, 1, bias)
    if latency_ms is not None:
        r.candidates += _search_group(runtimes, device, latency_ms, has_calib, max_accuracy_drop)
    if not device.sparse_kernels:
        r.notes.append(f"no sparsity candidates: {device.name} has no sparse kernels")
    return r


def _search_group(runtimes: list[str], device: DeviceProfile, latency_ms: float, has_calib: bool,
                  budget: float) -> list[Candidate]:
    """Subnet-search candidates, tried last and only when nothing before them met both budgets.

    The search's subnet is exported in float and, with calibration data, also in int8 (the
    search stage is cached, so the second candidate reuses the first's subnet).
    """
    rt = device.preferred_runtime if device.preferred_runtime in runtimes else runtimes[0]
    found = Step("search", {"runtime": rt, "latency_ms": latency_ms})
    out = [Candidate(f"search-{rt}-fp32", f"search-{rt}-fp32", rt, "fp32", [found])]
    if has_calib:
        out += _int8_group(rt, f"search-{rt}-int8", [found], budget, levels=1)
    return out


def is_search(c: Candidate) -> bool:
    """A fallback candidate: it runs only when no earlier candidate met both budgets."""
    return any(s.stage == "search" for s in c.steps)


def _int8_group(rt: str, group: str, pre: list[Step], budget: float, levels: int | None = None,
                bias_correction: str | None = None) -> list[Candidate]:
    """The int8 escalation levels for `rt`; `bias_correction`, when given, is the first level's."""
    if rt == "litert":  # the TFLite converter calibrates full-integer int8 itself, on our calibration data
        return [Candidate(group, group, rt, "int8", list(pre))]
    out = []
    for i, (level, opts) in enumerate(INT8_LEVELS[:levels]):
        o = dict(opts, runtime=rt)
        if "max_accuracy_drop" in o:
            o["max_accuracy_drop"] = budget
        if bias_correction and i == 0:
            o["bias_correction"] = bias_correction
        # on a light model min-max that lost accuracy is followed by percentile + bias correction
        # (seconds more): it often gives the loss back at the same speed, and the guard then
        # prefers the smaller drop
        out.append(Candidate(f"{group}-{level}", group, rt, "int8", [*pre, Step("quantize", o)],
                             settles=i > 0 or levels is not None))
    return out


def predict_recipe(recipe: Recipe, model: onnx.ModelProto, shapes: Shapes | None) -> None:
    """Fill each candidate's `predicted_ms` from hwopt.latency, without data and without running it.

    int8 is predicted on a min-max QDQ stand-in calibrated on synthetic inputs (the graph, not
    its accuracy, decides latency); transforms the predictor cannot see (pruning, subnet search) and float
    precisions it has no table for (bf16, fp16) stay unpredicted.
    """
    from hwopt.latency.predict import predict_latency
    from hwopt.pipeline.stages import int8_stand_in

    device = load_device(recipe.target)
    stand_ins: dict[str, onnx.ModelProto | None] = {}
    for c in recipe.candidates:
        if any(s.stage in ("prune", "search") for s in c.steps) or c.precision not in ("fp32", "int8"):
            continue
        m = model
        if c.precision == "int8":
            if c.runtime not in stand_ins:
                stand_ins[c.runtime] = int8_stand_in(model, None, c.runtime, device, shapes)
            m = stand_ins[c.runtime]
            if m is None:
                continue
        try:
            c.predicted_ms = round(predict_latency(m, device, c.runtime, shapes).latency_ms, 4)
        except HwoptError:
            c.predicted_ms = None
