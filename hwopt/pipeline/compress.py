"""`compress`: plan, try every candidate through the cached pipeline, guard accuracy, report.

    from hwopt.pipeline import compress
    r = compress("model.onnx", target="x86-avx512", calib="calib.npz", eval="eval.npz", out_dir="out")
    r.artifact, r.report["speedup"], r.budget_met, r.reason
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from hwopt.data import Dataset, accuracy_metrics, load_dataset, run_outputs
from hwopt.devices import DeviceProfile, load_device
from hwopt.errors import HwoptError
from hwopt.exporters import quantized_ops
from hwopt.graph.census import census
from hwopt.graph.load import atomic_write_bytes, custom_ops, load_model, save_model
from hwopt.graph.normalize import normalize_model
from hwopt.graph.shapes import Shapes, input_specs, random_inputs, resolve_input_shapes
from hwopt.pipeline.artifact import Artifact, data_digest, file_digest
from hwopt.pipeline.cache import StageCache, cache_key
from hwopt.pipeline.guard import Verdict, choose, failure_warning, meets_accuracy, search_needed, search_outcome
from hwopt.pipeline.recipe import Candidate, Recipe, is_search, load_recipe, plan_recipe, predict_recipe
from hwopt.pipeline.report import build_report, write_reports
from hwopt.pipeline.runner import Pipeline
from hwopt.pipeline.stages import StageContext, Step, predict
from hwopt.runtimes import get_runtime

PathLike = str | os.PathLike
#: samples generated to judge candidates when the user gives no data at all
RANDOM_EVAL_SAMPLES = 16


@dataclass
class Result:
    """What `compress` produced: the chosen deployable file, the report, and whether budgets hold."""

    out_dir: Path
    artifact: Path | None
    report: dict
    recipe: Recipe
    budget_met: bool
    reason: str
    report_path: Path | None = None
    html_path: Path | None = None
    recipe_path: Path | None = None
    dry_run: bool = False
    files: list[Path] = field(default_factory=list)


def _load_source(model: PathLike, cache: StageCache) -> Artifact:
    """The normalized copy of the input model, cached by the input's bytes (the input is only read)."""
    src = Path(model)
    proto = load_model(src)
    bad = custom_ops(proto)
    if bad:
        raise HwoptError(f"model uses custom ops no runtime here implements: {', '.join(bad)}")
    int8 = quantized_ops(proto)
    if int8:
        raise HwoptError(f"model is already quantized ({', '.join(int8)}): compress starts from the float model; "
                         "`hwopt export` converts a quantized model as it is")

    def run(work: Path) -> dict:
        return Artifact(save_model(normalize_model(proto), work / "model.onnx"), meta={"stage": "load", "source": str(src)}).to_dict(work)

    hits = cache.hits
    result, entry = cache.get_or_run("load", cache_key("load", [file_digest(src)], {}), run)
    art = Artifact.from_dict(result, entry)
    art.meta["cached"] = cache.hits > hits
    return art


def _eval_set(proto: onnx.ModelProto, calib: Dataset | None, eval_ds: Dataset | None, shapes: Shapes | None) -> Dataset:
    if eval_ds is not None:
        return eval_ds
    if calib is not None:
        return calib
    concrete = resolve_input_shapes(proto, shapes)
    feeds = [random_inputs(proto, concrete, seed=i) for i in range(RANDOM_EVAL_SAMPLES)]
    return Dataset({k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}, None, "random inputs")


def compress(
    model: PathLike,
    *,
    target: str,
    calib: PathLike | None = None,
    eval: PathLike | None = None,  # noqa: A002 - the documented keyword
    max_accuracy_drop: float = 1.0,
    latency_ms: float | None = None,
    out_dir: PathLike = "hwopt-out",
    recipe: PathLike | Recipe | None = None,
    dry_run: bool = False,
    shapes: Shapes | None = None,
    cache_dir: PathLike | None = None,
    threads: int = 1,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> Result:
    """Return the fastest model for `target` within the accuracy budget, exported, verified, reported.

    `max_accuracy_drop` is in points (top-1 %, or agreement % with the original without labels).
    Every stage result is cached under `cache_dir` (default OUT_DIR/.cache): a re-run, or a run
    after a crash, resumes and produces the same report. The input model is never modified.
    """
    say = log or (lambda msg: None)
    if max_accuracy_drop < 0:
        raise HwoptError("--max-accuracy-drop must be >= 0 (points)")
    if latency_ms is not None and latency_ms <= 0:
        raise HwoptError("--latency-ms must be > 0")
    device = load_device(target)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise HwoptError(f"output {out} exists and is not a folder")
    cache = StageCache(Path(cache_dir) if cache_dir else out / ".cache")
    clock = time.perf_counter()
    source = _load_source(model, cache)
    proto = source.load_onnx()
    calib_ds = load_dataset(calib, proto) if calib else None
    eval_ds = load_dataset(eval, proto) if eval else None
    if calib_ds is not None or eval_ds is not None:
        ds0 = eval_ds or calib_ds
        concrete = {s.name: (1, *ds0.inputs[s.name].shape[1:]) for s in input_specs(proto)}
    else:
        concrete = resolve_input_shapes(proto, shapes)

    if isinstance(recipe, Recipe):
        plan = recipe
    elif recipe is not None:
        plan = load_recipe(recipe)
    else:
        plan = plan_recipe(device, max_accuracy_drop=max_accuracy_drop, latency_ms=latency_ms, has_calib=calib_ds is not None,
                           model_macs=census(proto, concrete).macs)
    if plan.target != device.name:
        raise HwoptError(f"recipe is for target {plan.target}, but --target is {device.name}")
    out.mkdir(parents=True, exist_ok=True)
    if dry_run:
        predict_recipe(plan, proto, concrete)
        path = plan.save(out / "recipe.yaml")
        return Result(out, None, {}, plan, True, "dry run: nothing was run", recipe_path=path, dry_run=True, files=[path])
    recipe_path = plan.save(out / "recipe.yaml")

    judge = _eval_set(proto, calib_ds, eval_ds, concrete)
    reference = run_outputs(get_runtime("onnxruntime").session(proto), judge)
    ctx = StageContext(device, calib_ds, judge, data_digest(calib, eval) + ("" if (calib or eval) else str(concrete)),
                       concrete, reference, threads, say, cache)
    original_accuracy = accuracy_metrics(reference, judge.labels, reference)["accuracy"]
    #: wall seconds of the work outside the cached stages (see report.json stages[].seconds)
    seconds = {"plan": time.perf_counter() - clock}
    records, arts = [], {}
    met_groups: set[str] = set()
    for i, cand in enumerate(plan.candidates):
        if progress:
            progress(i, len(plan.candidates), cand.name)
        skip = search_needed(records, plan.max_accuracy_drop, plan.latency_ms) if is_search(cand) else None
        if skip is not None:
            records.append(_record(cand) | {"status": "skipped", "reason": f"subnet search {skip}"})
            continue
        rec, art = _try(cand, source, cache, ctx, plan, met_groups, say)
        records.append(rec)
        if art is not None:
            arts[cand.name] = art
            rec["accuracy_drop"] = round(original_accuracy - rec["accuracy"], 6)
            if meets_accuracy(rec["accuracy_drop"], plan.max_accuracy_drop) and (cand.settles or rec["accuracy_drop"] <= 0):
                met_groups.add(cand.group)
    if progress:
        progress(len(plan.candidates), len(plan.candidates), "done")

    clock = time.perf_counter()
    if plan.measure:
        _confirm_latencies(records, arts, plan, cache, ctx)
    seconds["guard"] = time.perf_counter() - clock
    base = _baseline(records, plan, device)
    verdict = choose(records, base, plan.max_accuracy_drop, plan.latency_ms, prefer=lambda r: _preference(r, device))
    if not verdict.budget_met and plan.latency_ms is not None:
        verdict.reason += search_outcome(records, plan.max_accuracy_drop, plan.latency_ms)
    verdict.warning = failure_warning(records)
    if verdict.warning:
        verdict.reason += f"; {verdict.warning}"
    for rec in records:
        rec["chosen"] = rec["name"] == verdict.chosen
    clock = time.perf_counter()
    files = _deploy(out, arts, base["name"], verdict.chosen)
    chosen_art = arts[verdict.chosen]
    layers = predict(chosen_art, chosen_art.runtime, ctx)
    seconds["deploy"] = time.perf_counter() - clock
    report = build_report(
        device=device, out=out, records=records, baseline=base, verdict=verdict, files=files, source=source,
        census_of=lambda a: census(a.load_onnx(), concrete), arts=arts, layers=layers, recipe=plan,
        commands=_commands(model, device.name, calib, eval, plan, out, records, verdict, files["model_main"][0]),
        seconds=seconds,
    )
    rpath, hpath = write_reports(report, out, verdict)
    return Result(out, out / report["result"]["artifact"], report, plan, verdict.budget_met, verdict.reason,
                  rpath, hpath, recipe_path, False, [*files, recipe_path, rpath, hpath])


def _record(cand: Candidate) -> dict:
    """The report record of a candidate before it runs."""
    return {"name": cand.name, "group": cand.group, "runtime": cand.runtime, "precision": cand.precision,
            "steps": [s.stage + (f"({', '.join(f'{k}={v}' for k, v in s.options.items() if k != 'runtime')})" if s.options else "")
                      for s in cand.steps], "predicted_ms": cand.predicted_ms, "search": is_search(cand), "status": "ok", "reason": ""}


def _try(cand: Candidate, source: Artifact, cache: StageCache, ctx: StageContext, plan: Recipe, met_groups: set[str],
         say: Callable[[str], None]) -> tuple[dict, Artifact | None]:
    """Run one candidate through steps + export + evaluate; failures become a record, not a crash."""
    rec = _record(cand)
    if cand.group in met_groups:
        rec.update(status="skipped", reason=f"an earlier level of {cand.group} met the accuracy budget")
        return rec, None
    steps = [*cand.steps, Step("export", {"runtime": cand.runtime, "precision": cand.precision}),
             Step("evaluate", {"runtime": cand.runtime, "precision": cand.precision, "measure": plan.measure})]
    pipe = Pipeline(steps, cache, ctx)
    say(f"candidate {cand.name}")
    try:
        art = pipe.run(source)
    except HwoptError as exc:
        rec.update(status="unavailable" if "tool missing" in str(exc) or "not available" in str(exc) else "failed",
                   reason=str(exc))
        rec["trace"] = pipe.trace
        return rec, None
    except Exception as exc:  # noqa: BLE001 - a runtime's or converter's own crash on one candidate
        # must not lose the others' results; it is recorded as failed, by type, and the run warns
        stage = steps[min(len(pipe.trace), len(steps) - 1)].stage
        rec.update(status="failed", reason=f"internal error in the {stage} stage: {type(exc).__name__}: "
                   f"{' '.join(str(exc).split())[:300]}")
        rec["trace"] = pipe.trace
        return rec, None
    m = art.meta
    rec.update({k: m.get(k) for k in ("accuracy", "metric", "sqnr_db", "eval_samples", "latency_ms", "latency_source",
                                      "latency_clock", "accuracy_runtime")})
    rec["trace"] = pipe.trace
    v = m.get("verification") or {}
    rec["verification"] = {k: v.get(k) for k in ("ran", "passed", "max_abs_diff", "cosine", "reason")}
    return rec, art


#: candidates re-timed side by side before the guard decides, and how
CONFIRM_TOP, CONFIRM_ROUNDS, CONFIRM_MIN_ROUNDS, CONFIRM_RUNS = 4, 5, 3, 30
#: wall seconds the re-timing may take: slow models get fewer runs per round (at least 3) and, on a
#: loaded machine where a call takes several times its CPU time, fewer rounds (at least 3)
CONFIRM_BUDGET_S, CONFIRM_MIN_RUNS = 40.0, 3
#: fast models get up to CONFIRM_MAX_ROUNDS rounds while the re-timing stays under CONFIRM_EXTRA_S:
#: a load blip then spoils a few rounds of many, not 2 of 5 (a 0.2 ms model's 26 % lead was
#: called noise when two of five rounds caught one)
CONFIRM_MAX_ROUNDS, CONFIRM_EXTRA_S = 15, 5.0


def _confirm_latencies(records: list[dict], arts: dict[str, Artifact], plan: Recipe, cache: StageCache,
                       ctx: StageContext) -> None:
    """Re-time the contenders interleaved and keep every round's median for the guard.

    Each candidate was first timed alone; the load drifts between those runs, so the float
    baselines and the fastest candidates within the budget are timed again in rounds, side by
    side. The latency becomes the median of the per-round medians; `latency_rounds_ms` lets the
    guard see how much the rounds disagree (its noise) and who won each round. 1-thread sessions
    are timed on the process CPU clock (`timing_clock`), but the budget is wall time: under load
    a 0.1 s call took 1 s of wall time and the re-timing about 5 minutes before it was bounded so.
    Cached like a stage, so a resumed run decides the same way.
    """
    floats = {f"{b['runtime']}-{b.get('precision', 'fp32')}" for b in plan.baseline}
    timed = [r for r in records if r["status"] == "ok" and r.get("latency_source") == "measured"]
    eligible = sorted((r for r in timed if meets_accuracy(r["accuracy_drop"], plan.max_accuracy_drop)),
                      key=lambda r: r["latency_ms"])
    names = sorted({r["name"] for r in timed if r["name"] in floats} | {r["name"] for r in eligible[:CONFIRM_TOP]})
    if len(names) < 2:
        return
    key = cache_key("confirm", [arts[n].digest for n in names] + [ctx.data_digest],
                    {"names": names, "threads": ctx.threads, "rounds": [CONFIRM_ROUNDS, CONFIRM_MAX_ROUNDS, CONFIRM_EXTRA_S],
                     "budget_s": CONFIRM_BUDGET_S,
                     "clock": "auto"})
    confirmed, _ = cache.get_or_run("confirm", key, lambda work: _time_rounds(names, arts, ctx))
    for r in records:
        if r["name"] in confirmed:
            c = confirmed[r["name"]]
            r.update(screen_ms=r["latency_ms"], latency_ms=float(np.median(c["rounds_ms"])), latency_rounds_ms=c["rounds_ms"],
                     latency_clock=c["clock"])


def _time_rounds(names: list[str], arts: dict[str, Artifact], ctx: StageContext) -> dict:
    """Per-round median latency of each artifact, all timed in every round, within CONFIRM_BUDGET_S of wall time."""
    from hwopt.exporters.sessions import open_artifact
    from hwopt.runtimes import time_rounds, timing_clock

    out_shapes = [r.shape[1:] for r in ctx.reference]
    sessions = {n: open_artifact(arts[n].runtime, arts[n].path, arts[n].precision, onnx_inputs=list(ctx.eval.inputs),
                                 output_shapes=out_shapes, threads=ctx.threads) for n in names}
    feeds = next(ctx.eval.batches(1))
    start = time.perf_counter()
    for sess in sessions.values():
        sess.run(feeds)  # warm up
    probe = time.perf_counter()
    for sess in sessions.values():
        sess.run(feeds)  # what one call of each costs in wall time now
    round_s = time.perf_counter() - probe
    runs = int(np.clip(CONFIRM_BUDGET_S / (CONFIRM_ROUNDS * max(round_s, 1e-6)), CONFIRM_MIN_RUNS, CONFIRM_RUNS))
    def keep_going(done: int, round_s: float) -> bool:  # stop before a next round would pass a budget
        after_next = time.perf_counter() + round_s
        return not ((done >= CONFIRM_MIN_ROUNDS and after_next > start + CONFIRM_BUDGET_S)
                    or (done >= CONFIRM_ROUNDS and after_next > start + CONFIRM_EXTRA_S))

    per = time_rounds(sessions, feeds, rounds=CONFIRM_MAX_ROUNDS, runs=runs, keep_going=keep_going)
    return {n: {"rounds_ms": [round(float(np.median(t)), 5) for t in v], "clock": timing_clock(sessions[n]), "runs": runs}
            for n, v in per.items()}


def _preference(rec: dict, device: DeviceProfile) -> tuple:
    """Ranking when no latency is known: preferred runtime, then a precision the profile calls fast."""
    return (rec["runtime"] == device.preferred_runtime, rec["precision"] in device.fast_precisions)


def _baseline(records: list[dict], plan: Recipe, device: DeviceProfile) -> dict:
    """The fastest float configuration of the original model (the honest reference for speedup).

    Without any latency (no table for an absent target) it is the preferred runtime's float one.
    """
    names = {f"{b['runtime']}-{b.get('precision', 'fp32')}" for b in plan.baseline}
    floats = [r for r in records if r["status"] == "ok" and r["name"] in names]
    if not floats:
        failed = [f"{r['name']}: {r['reason']}" for r in records if r["name"] in names]
        raise HwoptError("no baseline float configuration could be exported and judged" + (f" ({failed[0]})" if failed else ""))
    timed = [r for r in floats if r.get("latency_ms") is not None]
    if timed:
        return min(timed, key=lambda r: r["latency_ms"])
    return max(floats, key=lambda r: _preference(r, device))


def _deploy(out: Path, arts: dict[str, Artifact], base: str, chosen: str) -> dict[str, list[Path]]:
    """Copy the chosen (and baseline) artifact files from the cache into OUT/model and OUT/baseline."""
    copied: dict[str, list[Path]] = {}
    for name, folder in ((chosen, "model"), (base, "baseline")):
        dest = out / folder
        shutil.rmtree(dest, ignore_errors=True)
        copied[folder] = [atomic_write_bytes(f.read_bytes(), dest / f.name) for f in arts[name].files]
        copied[folder + "_main"] = [dest / arts[name].path.name]
    return copied


def _commands(model, target, calib, eval_, plan: Recipe, out: Path, records, verdict: Verdict, artifact: Path) -> list[str]:
    """The exact command lines that reproduce this run and re-measure its result."""
    import shlex

    base = ["hwopt", "compress", str(model), "--target", target]
    for flag, val in (("--calib", calib), ("--eval", eval_)):
        if val:
            base += [flag, str(val)]
    base += ["--max-accuracy-drop", f"{plan.max_accuracy_drop:g}"]
    if plan.latency_ms is not None:
        base += ["--latency-ms", f"{plan.latency_ms:g}"]
    cmds = [shlex.join([*base, "-o", str(out)]), shlex.join([*base, "--recipe", str(out / "recipe.yaml"), "-o", str(out)])]
    chosen = next(r for r in records if r["name"] == verdict.chosen)
    if chosen.get("latency_source") == "measured":
        cmds.append(shlex.join(["hwopt", "bench", str(artifact), "--runtime", chosen["runtime"], "--precision", chosen["precision"]]
                               + (["--data", str(eval_ or calib)] if (eval_ or calib) else [])))
    return cmds


__all__ = ["Result", "compress", "meets_accuracy"]
