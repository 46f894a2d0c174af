"""report.json (the DESIGN.md contract) and report.html (a self-contained page) for a compress run.

The JSON has exactly the top-level keys DESIGN.md fixes; everything a reader needs to trust it
(which numbers are measured and which predicted, the guard's reason, each export's verification)
sits inside `stages` and `candidates`. The HTML needs no network and no files beside it: the
Pareto plot is inline SVG.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from string import Template

from hwopt.devices import DeviceProfile
from hwopt.graph.load import atomic_write_text
from hwopt.pipeline.artifact import Artifact
from hwopt.pipeline.guard import Verdict
from hwopt.pipeline.recipe import Recipe

REPORT_KEYS = ("target", "baseline", "result", "accuracy_drop", "speedup", "stages", "candidates", "artifacts")
_STAGE_WHAT = {
    "prune": "structured channel pruning",
    "search": "subnet search (hwopt.nas) under the latency budget",
    "quantize": "int8 post-training quantization in the runtime's QDQ scheme",
    "export": "export to the runtime's format, verified against the ONNX model",
    "evaluate": "accuracy on the eval data; latency measured here or predicted",
}
#: rows of the per-layer breakdown shown in the HTML page
TOP_LAYERS = 25


def _side(rec: dict, art_path: Path, out: Path, census: dict) -> dict:
    return {
        "latency_ms": rec.get("latency_ms"),
        "latency_source": rec.get("latency_source"),
        "accuracy": rec.get("accuracy"),
        "params": census["params"],
        "macs": census["macs"],
        "runtime": rec["runtime"],
        "precision": rec["precision"],
        "artifact": str(art_path.relative_to(out)),
    }


def build_report(
    *,
    device: DeviceProfile,
    out: Path,
    records: list[dict],
    baseline: dict,
    verdict: Verdict,
    files: dict[str, list[Path]],
    source: Artifact,
    census_of: Callable[[Artifact], object],
    arts: dict[str, Artifact],
    layers,
    recipe: Recipe,
    commands: list[str],
    seconds: dict[str, float] | None = None,
) -> dict:
    """The report dict (DESIGN.md keys); `files` maps model/baseline to the copied files.

    `seconds`: wall time of the work outside the cached stages (plan: loading, planning and the
    reference outputs; guard: the latency re-timing; deploy: copying and the per-layer prediction).
    """
    took = {k: round(v, 1) for k, v in (seconds or {}).items()}
    chosen = next(r for r in records if r["name"] == verdict.chosen)
    cs = {name: census_of(arts[name]) for name in {baseline["name"], chosen["name"]}}
    sizes = {n: {"params": c.params, "macs": c.macs} for n, c in cs.items()}
    base = _side(baseline, files["baseline_main"][0], out, sizes[baseline["name"]])
    res = _side(chosen, files["model_main"][0], out, sizes[chosen["name"]])
    speedup = (base["latency_ms"] / res["latency_ms"]) if base["latency_ms"] and res["latency_ms"] else None
    traces = [t for r in records for t in r.get("trace", [])]
    stages = [{"stage": "load", "what": "normalized copy of the input model (input file never modified)",
               "cached": bool(source.meta.get("cached"))},
              {"stage": "plan", "what": f"{len(recipe.candidates)} candidates for {device.name}", "notes": recipe.notes,
               "latency": "measured on this machine" if recipe.measure else "predicted (target not present here)",
               "seconds": took.get("plan")}]
    for name, what in _STAGE_WHAT.items():
        runs = [t for t in traces if t["stage"] == name]
        if runs:
            stages.append({"stage": name, "what": what, "runs": len(runs), "cached": sum(t["cached"] for t in runs),
                           "seconds": round(sum(t.get("seconds", 0.0) for t in runs), 1)})
    stages.append({"stage": "guard", "chosen": verdict.chosen, "budget_met": verdict.budget_met, "reason": verdict.reason,
                   "rule": verdict.rule, "within_noise": verdict.within_noise, "warning": verdict.warning,
                   "candidates": _status_counts(records), "seconds": took.get("guard"),
                   "max_accuracy_drop": recipe.max_accuracy_drop, "latency_ms": recipe.latency_ms})
    stages.append({"stage": "deploy", "artifact": res["artifact"], "verification": chosen.get("verification"),
                   "layers": [] if layers is None else [
                       {"name": lay.name, "op": lay.op, "latency_ms": lay.latency_ms, "source": lay.source}
                       for lay in sorted(layers.layers, key=lambda x: -x.latency_ms)[:TOP_LAYERS]],
                   "layers_source": "predicted by hwopt.latency" if layers is not None else "no latency table",
                   "commands": commands, "seconds": took.get("deploy")})
    written = sorted({str(p.relative_to(out)) for k, ps in files.items() if not k.endswith("_main") for p in ps}
                     | {"recipe.yaml", "report.json", "report.html"})
    report = {
        "target": device.name,
        "baseline": base,
        "result": res,
        "accuracy_drop": None if base["accuracy"] is None else round(base["accuracy"] - res["accuracy"], 6),
        "speedup": None if speedup is None else round(speedup, 4),
        "stages": stages,
        "candidates": [{k: v for k, v in r.items() if k != "trace"} | {"cached_stages": sum(t["cached"] for t in r.get("trace", []))}
                       for r in records],
        "artifacts": written,
    }
    assert tuple(report) == REPORT_KEYS
    return report


def _status_counts(records: list[dict]) -> dict[str, int]:
    """How many candidates ended ok / failed / skipped / unavailable."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def write_reports(report: dict, out: Path, verdict: Verdict) -> tuple[Path, Path]:
    """Write report.json and report.html atomically."""
    rpath = atomic_write_text(json.dumps(report, indent=2, default=str) + "\n", out / "report.json")
    hpath = atomic_write_text(render_html(report, verdict), out / "report.html")
    return rpath, hpath


def pareto_svg(candidates: list[dict], width: int = 640, height: int = 360) -> str:
    """Latency (x) vs accuracy (y) of every judged candidate; the Pareto front joined, the chosen one starred."""
    pts = [c for c in candidates if c.get("status") == "ok" and c.get("latency_ms") is not None]
    if not pts:
        return "<p>No candidate has a latency to plot.</p>"
    pad_l, pad_r, pad_t, pad_b = 60, 20, 20, 45
    xs = [c["latency_ms"] for c in pts]
    ys = [c["accuracy"] for c in pts]
    x0, x1 = min(xs) * 0.9, max(xs) * 1.1
    y0, y1 = min(ys) - 1.0, max(ys) + 1.0
    sx = lambda v: pad_l + (v - x0) / (x1 - x0 or 1) * (width - pad_l - pad_r)  # noqa: E731
    sy = lambda v: height - pad_b - (v - y0) / (y1 - y0 or 1) * (height - pad_t - pad_b)  # noqa: E731
    front, best = [], -float("inf")
    for c in sorted(pts, key=lambda c: (c["latency_ms"], -c["accuracy"])):
        if c["accuracy"] > best:
            front.append(c)
            best = c["accuracy"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="latency vs accuracy of every candidate">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
             f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" stroke="#333"/>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="#333"/>']
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        yv = y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{sx(xv):.1f}" y="{height - pad_b + 16}" font-size="11" text-anchor="middle">{xv:.3g}</text>')
        parts.append(f'<text x="{pad_l - 6}" y="{sy(yv) + 4:.1f}" font-size="11" text-anchor="end">{yv:.1f}</text>')
    parts.append(f'<text x="{(width + pad_l) / 2}" y="{height - 8}" font-size="12" text-anchor="middle">latency (ms)</text>')
    parts.append(f'<text x="14" y="{height / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {height / 2})">accuracy (%)</text>')
    if len(front) > 1:
        path = " ".join(f"{sx(c['latency_ms']):.1f},{sy(c['accuracy']):.1f}" for c in front)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#999" stroke-dasharray="4 3"/>')
    for c in pts:
        x, y = sx(c["latency_ms"]), sy(c["accuracy"])
        tip = html.escape(f"{c['name']}: {c['latency_ms']:.3f} ms, {c['accuracy']:.2f}% ({c.get('latency_source')})")
        if c.get("chosen"):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="none" stroke="#d62728" stroke-width="2.5">'
                         f'<title>{tip} (chosen)</title></circle>')
        color = "#1f77b4" if c["precision"] == "int8" else "#2ca02c"
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{color}"><title>{tip}</title></circle>')
        parts.append(f'<text x="{x + 7:.1f}" y="{y - 6:.1f}" font-size="10" fill="#444">{html.escape(c["name"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[list], head: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def render_html(report: dict, verdict: Verdict) -> str:
    """The self-contained report page."""
    b, r = report["baseline"], report["result"]
    summary = _table(
        [[k, b.get(k), r.get(k)] for k in ("runtime", "precision", "latency_ms", "latency_source", "accuracy", "params", "macs", "artifact")],
        ["", "baseline (best float)", "result"],
    )
    cands = _table(
        [[c["name"], c["runtime"], c["precision"], " -> ".join(c["steps"]) or "-", c["status"], c.get("accuracy"),
          c.get("accuracy_drop"), c.get("latency_ms"), c.get("latency_source"), c.get("predicted_ms"),
          (c.get("verification") or {}).get("max_abs_diff"), "yes" if c.get("chosen") else "", c.get("reason")]
         for c in report["candidates"]],
        ["candidate", "runtime", "precision", "steps", "status", "accuracy", "drop", "latency ms", "source", "predicted ms",
         "export max abs diff", "chosen", "note"],
    )
    stage_rows = []
    for s in report["stages"]:
        detail = {k: v for k, v in s.items() if k not in ("stage", "layers", "commands", "verification")}
        stage_rows.append([s["stage"], "; ".join(f"{k}: {_fmt(v)}" for k, v in detail.items())])
    deploy = report["stages"][-1]
    layers = _table([[x["name"], x["op"], x["latency_ms"], x["source"]] for x in deploy["layers"]],
                    ["layer", "op", "latency ms", "source"]) if deploy["layers"] else "<p>No per-layer prediction available.</p>"
    tpl = Template((Path(__file__).with_name("report.html")).read_text())
    return tpl.substitute(
        target=html.escape(report["target"]),
        verdict_class="ok" if verdict.budget_met and not verdict.warning else "warn",
        verdict=html.escape(verdict.reason),
        speedup=_fmt(report["speedup"]),
        accuracy_drop=_fmt(report["accuracy_drop"]),
        predicted_note=html.escape(_predicted_note(report)),
        summary=summary,
        pareto=pareto_svg(report["candidates"]),
        candidates=cands,
        stages=_table(stage_rows, ["stage", "what happened"]),
        layers_source=html.escape(deploy["layers_source"]),
        layers=layers,
        commands=html.escape("\n".join(deploy["commands"])),
        artifacts="".join(f"<li>{html.escape(a)}</li>" for a in report["artifacts"]),
    )


def _predicted_note(report: dict) -> str:
    srcs = {report["baseline"]["latency_source"], report["result"]["latency_source"]}
    if srcs == {"measured"}:
        return "All latencies were measured on this machine (1 thread, median of timed runs)."
    return ("Latencies marked 'predicted' come from hwopt.latency's model of the target (it is not present here); "
            "accuracies were measured here by running the exported models.")
