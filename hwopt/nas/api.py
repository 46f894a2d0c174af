"""`hwopt.nas.search`: pick the most accurate subnet under a latency budget, per target and budget.

One call builds the accuracy predictor once (measured subnets are cached), then runs one
evolutionary search per (target, budget) against that target's latency lookup table, extracts
and exports the winners, re-measures their real accuracy, and writes configs, ONNX models, a
Pareto plot and `search.json` into the output folder.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwopt.devices import DeviceProfile, load_device
from hwopt.errors import HwoptError
from hwopt.graph.load import atomic_write_text
from hwopt.nas.evolution import EvolutionResult, EvolutionSettings, check_budget, evolve, latency_range, spread_sample
from hwopt.nas.genes import AdditiveLatency, sizes
from hwopt.nas.latency_cache import cached_latency_model
from hwopt.nas.plot import pareto_plot
from hwopt.nas.predictor import PredictorQuality, fit_predictor, measure_subnets, measurement_cache
from hwopt.nas.refine import Candidate, PredictorRefit, onnx_timer, refine
from hwopt.nas.subnets import SubnetProblem, problem_for
from hwopt.nas.timers import make_timer

PathLike = str | os.PathLike
Progress = Callable[[str], None]


@dataclass
class SearchResult:
    target: str
    runtime: str
    budget_ms: float
    latency_ms: float  # predicted by the target's lookup table
    latency_source: str
    predicted_accuracy: float
    accuracy: float  # measured on the eval data after extraction
    config: dict
    config_file: str
    onnx: str
    search_seconds: float
    evaluated: int
    measured_latency_ms: float | None = None  # whole subnet, 1 thread, when the target is this machine
    refine_seconds: float = 0.0
    search_rounds: int = 1  # >1: the budget was bias-corrected after measuring the candidates
    candidates: list[dict] = field(default_factory=list)  # the measured top candidates

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class SearchReport:
    source: str  # supernet name or model path
    metric: str
    predictor: PredictorQuality
    latency_ranges: dict[str, list[float]]
    results: list[SearchResult]
    artifacts: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "metric": self.metric,
            "predictor": self.predictor.to_dict(),
            "latency_ranges": self.latency_ranges,
            "results": [r.to_dict() for r in self.results],
            "artifacts": self.artifacts,
            "settings": self.settings,
        }


def _targets(target: str | None, targets: list[str] | None) -> list[DeviceProfile]:
    names = list(dict.fromkeys(([target] if target else []) + list(targets or [])))
    if not names:
        raise HwoptError("give --target (and optionally --targets A,B)")
    return [load_device(n) for n in names]


def _runtime_for(dev: DeviceProfile, runtime: str | None) -> str:
    rt = runtime or dev.preferred_runtime
    if rt not in dev.runtimes:
        raise HwoptError(f"target {dev.name} has no runtime {rt!r}; its runtimes are {', '.join(dev.runtimes)}")
    return rt


def readable_json(doc: dict) -> str:
    """Indented JSON with short number lists kept on one line (a stage reads `"kernel": [7, 5, 3]`)."""
    text = json.dumps(doc, indent=2)
    return re.sub(r"\[\s+([-\d.,\s]+?)\s+\]", lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def sample_subnets(space, count: int, seed: int = 0) -> np.ndarray:
    """Distinct subnets for the predictor: the smallest, the largest, and a spread in between."""
    n = sizes(space.genes)
    rng = np.random.default_rng(seed)
    rows = np.concatenate([np.zeros((1, len(n)), np.int64), (n - 1)[None], spread_sample(rng, n, max(count - 2, 0))])
    return np.unique(space.canonical(rows), axis=0)


def search(
    model: PathLike | None = None,
    *,
    supernet: str | None = None,
    target: str | None = None,
    latency_ms: float | None = None,
    targets: list[str] | None = None,
    budgets: list[float] | None = None,
    runtime: str | None = None,
    eval_data: PathLike | None = None,
    out_dir: PathLike,
    seed: int = 0,
    settings: EvolutionSettings | None = None,
    n_subnets: int = 120,
    predictor: str = "mlp",
    latency_source: str = "auto",
    shapes: dict | None = None,
    finetune_epochs: int = 0,
    finetune_data: PathLike | None = None,
    finetune_lr: float = 1e-3,
    refine_top: int = 5,
    progress: Progress | None = None,
) -> SearchReport:
    """Search `model` (an ONNX file: its pruning/depth/resolution space) or a registered `supernet`.

    Budgets are `latency_ms` plus `budgets` (Pareto mode), each searched on every target (`target`
    plus `targets`); the runtime defaults to each target's preferred one. A budget outside a
    target's achievable latency range is refused with that range. `finetune_epochs` > 0 first
    fine-tunes all subnets of an ONNX model's space together on `finetune_data` (sandwich rule,
    KD from the original; see `hwopt.nas.finetune`), so subnets are judged with trained weights.
    `refine_top` > 0 measures that many top candidates per budget (real accuracy, and real latency
    when the target is this machine) and keeps the best one that meets the budget
    (`hwopt.nas.refine`); 0 keeps the predictors' favourite.
    """
    say = progress or (lambda msg: None)
    if (model is None) == (supernet is None):
        raise HwoptError("give either a MODEL or --supernet NAME (not both)")
    all_budgets = sorted(set(([latency_ms] if latency_ms is not None else []) + list(budgets or [])))
    if not all_budgets:
        raise HwoptError("give --latency-ms T and/or --budgets a,b,c")
    if any(b <= 0 for b in all_budgets):
        raise HwoptError("latency budgets must be positive milliseconds")
    if finetune_epochs and supernet is not None:
        raise HwoptError("--finetune-epochs applies to an ONNX model's space; registered supernets are already trained")
    if finetune_epochs and finetune_data is None:
        raise HwoptError("--finetune-epochs needs --finetune-data DATA (training .npz, kept apart from --eval)")
    settings = settings or EvolutionSettings(seed=seed)
    devices = _targets(target, targets)
    out = Path(out_dir)
    problem: SubnetProblem = problem_for(model=model, supernet=supernet, eval_data=eval_data, shapes=shapes, seed=seed)
    genes = problem.space.genes

    # latency models first: a budget nobody can meet should fail before minutes of measuring
    lat_models: dict[str, AdditiveLatency] = {}
    ranges: dict[str, list[float]] = {}
    for dev in devices:
        rt = _runtime_for(dev, runtime)
        say(f"latency table for {dev.name}/{rt}")
        lat_models[dev.name] = cached_latency_model(problem, dev, rt, latency_source)
        lo, hi = latency_range(genes, lat_models[dev.name])
        ranges[dev.name] = [lo, hi]
        for b in all_budgets:
            check_budget(genes, lat_models[dev.name], b, f" on {dev.name}/{rt}")

    finetune = None
    if finetune_epochs:
        say(f"weight-sharing fine-tune, {finetune_epochs} epoch(s) on {finetune_data}")
        finetune = problem.finetune(finetune_data, epochs=finetune_epochs, lr=finetune_lr, seed=seed, progress=say)

    say(f"measuring {n_subnets} subnets for the accuracy predictor")
    sample = sample_subnets(problem.space, n_subnets, seed)
    configs = [problem.space.decode(r) for r in sample]
    cache = measurement_cache(problem.cache_tag)
    acc = measure_subnets(configs, problem.accuracy, cache)
    pred, quality = fit_predictor(problem.space.features(sample), acc, kind=predictor, seed=seed)
    say(f"predictor held-out spearman {quality.spearman:.3f}, rmse {quality.rmse:.3f}")
    learner = PredictorRefit(problem.space, pred, sample, acc, kind=predictor, seed=seed)
    predict = learner.predict

    def measured_accuracy(cfg: dict) -> float:
        return cache.get_or_measure(cfg, problem.accuracy)

    results: list[SearchResult] = []
    artifacts: list[str] = []
    for dev in devices:
        lat = lat_models[dev.name]
        measure_ms = None
        if refine_top > 0 and lat.provenance.get("latency_source") == "measured":
            measure_ms = onnx_timer(problem.export, make_timer(dev, lat.runtime, "measured"))
        for b in all_budgets:
            def run(budget: float) -> EvolutionResult:
                return evolve(genes, predict, lat, budget, settings, problem.space.canonical)

            res = run(b)
            t0 = time.perf_counter()
            if refine_top > 0:
                ref = refine(res, decode=problem.space.decode, latency=lat, budget_ms=b, accuracy=measured_accuracy,
                             measure_ms=measure_ms, rerun=run, learn=learner.learn, top_k=refine_top, floor_ms=ranges[dev.name][0])
                chosen, rounds, measured_cands = ref.chosen, ref.rounds, [c.to_dict() for c in ref.candidates]
            else:
                chosen, rounds, measured_cands = Candidate(problem.space.decode(res.best), res.latency_ms, res.accuracy), 1, []
                chosen.accuracy = measured_accuracy(chosen.config)
            refine_s = time.perf_counter() - t0
            cfg = chosen.config
            stem = f"{dev.name}_{b:g}ms"
            onnx_path = problem.export(cfg, out / f"{stem}.onnx")
            doc = {"target": dev.name, "runtime": lat.runtime, "budget_ms": b, "predicted_latency_ms": chosen.predicted_ms,
                   "measured_latency_ms": chosen.measured_ms, "predicted_accuracy": chosen.predicted_accuracy,
                   "accuracy": chosen.accuracy, "source": problem.source, "config": cfg}
            atomic_write_text(readable_json(doc), out / f"{stem}.json")
            artifacts += [f"{stem}.json", onnx_path.name]
            results.append(SearchResult(dev.name, lat.runtime, b, chosen.predicted_ms, lat.provenance.get("latency_source", ""),
                                        chosen.predicted_accuracy, chosen.accuracy, cfg, f"{stem}.json", onnx_path.name,
                                        res.seconds, res.evaluated, chosen.measured_ms, refine_s, rounds, measured_cands))
            meas = f", measured {chosen.measured_ms:.3f} ms" if chosen.measured_ms is not None else ""
            say(f"{dev.name} {b:g} ms: predicted {chosen.predicted_ms:.3f} ms{meas}, accuracy {chosen.accuracy:.2f}% "
                f"(search {res.seconds:.1f} s, refine {refine_s:.1f} s)")
    cache.save()
    plot = pareto_plot({d: lat_models[d](sample) for d in lat_models}, acc, results, out / "pareto.png", problem.metric)
    artifacts.append(plot.name)
    report = SearchReport(problem.source, problem.metric, quality, ranges, results, artifacts,
                          {**vars(settings), "n_subnets": len(sample), "predictor": predictor, "refine_top": refine_top, "finetune": finetune, "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    atomic_write_text(json.dumps(report.to_dict(), indent=2) + "\n", out / "search.json")
    report.artifacts.append("search.json")
    return report
