"""Latency commands: `hwopt profile` (measure a table here) and `hwopt predict` (use one)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from hwopt.cli.common import JSON_OPTION, SHAPE_OPTION, command, console, emit_json, err_console, split_list
from hwopt.devices import list_devices, load_device
from hwopt.errors import HwoptError
from hwopt.graph.load import load_model
from hwopt.graph.shapes import parse_shape_options
from hwopt.latency.predict import predict_latency
from hwopt.latency.profiler import profile_table
from hwopt.latency.validate import validate_models


@command("profile")
def profile_cmd(
    target: str = typer.Option(..., "--target", "-t", help="Device profile to measure (must be present here)."),
    runtime: str = typer.Option(..., "--runtime", "-r", help="Runtime to measure: onnxruntime or openvino here."),
    out: Path = typer.Option(None, "-o", "--output", help="Table file to write (default ./<target>-<runtime>.json)."),
    budget_min: float = typer.Option(5.0, "--budget-min", help="Minutes of measuring (a partial run resumes)."),
    precision: str = typer.Option("fp32,int8", "--precision", help="Precisions to profile: fp32,int8."),
    threads: int = typer.Option(1, "--threads", help="Intra-op threads of the measured sessions."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampled configuration space (keep it to resume)."),
    retime: int = typer.Option(0, "--retime", help="Re-time the profiled networks this many round-robin passes "
                                                   "and scale each to its fastest (the machine's quiet state)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Time kernels inside random networks here; write a latency table and its trained predictor."""
    if budget_min <= 0:
        raise HwoptError("--budget-min must be positive")
    if retime < 0:
        raise HwoptError("--retime must be 0 or more passes")
    out = out or Path(f"{target}-{runtime}.json")
    with Progress(TextColumn("profiling {task.description}"), BarColumn(), TextColumn("{task.fields[n]} samples"),
                  TimeRemainingColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task(f"{target}/{runtime}", total=budget_min * 60, n=0)
        table = profile_table(target, runtime, out, budget_min=budget_min, precisions=tuple(split_list(precision)),
                              threads=threads, seed=seed, retime_passes=retime,
                              on_progress=lambda t, n: bar.update(task, completed=t, n=n))
    summary = {"table": str(out), "device": table.device, "runtime": table.runtime, "threads": table.threads,
               "entries": len(table.entries), "overhead_ms": table.overhead_ms,
               "kernel_scale": table.kernel_scale, "kernel_overhead_ms": table.kernel_overhead_ms,
               "provenance": table.provenance}
    if json_out:
        emit_json(summary)
        return
    console.print(f"wrote {out} ({len(table.entries)} kernel signatures from {table.provenance.get('networks')} "
                  f"networks, predictor {table.predictor}); network = {table.kernel_scale:.3f} x kernel sum "
                  f"+ {table.kernel_overhead_ms * 1e3:.2f} us/kernel + {table.overhead_ms:.4f} ms")


def _default_target(runtime: str | None) -> str:
    here = [d for d in list_devices().values() if d.present_here and (runtime is None or runtime in d.runtimes)]
    if not here:
        raise HwoptError("--target is required (no device profile is marked present_here for this runtime)")
    return here[0].name


@command("predict")
def predict_cmd(
    models: list[Path] = typer.Argument(..., help="ONNX model(s)."),
    target: str = typer.Option(None, "--target", "-t", help="Device profile (default: the one present here)."),
    runtime: str = typer.Option(None, "--runtime", "-r", help="Runtime (default: the target's preferred one)."),
    table: Path = typer.Option(None, "--table", help="Use this latency table instead of the target's own."),
    validate: bool = typer.Option(False, "--validate", help="Also measure the models here; print predicted vs measured."),
    layers: int = typer.Option(15, "--layers", help="Slowest layers to print (human output)."),
    threads: int = typer.Option(None, "--threads", min=1,
                                help="Threads on the target (analytical tables scale to any count; a measured "
                                     "table answers only for the count it was profiled at). Default: the table's."),
    shape: list[str] = SHAPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Predicted latency with a per-layer breakdown and where each number came from."""
    shapes = parse_shape_options(shape)
    target = target or _default_target(runtime)
    dev = load_device(target)
    runtime = runtime or dev.preferred_runtime
    if validate:
        _validate(models, dev.name, runtime, table, shapes, json_out)
        return
    preds = [predict_latency(load_model(m), dev, runtime, shapes, table=table, threads=threads) for m in models]
    if json_out:
        emit_json(preds[0].to_dict() if len(preds) == 1 else [p.to_dict() for p in preds])
        return
    for m, p in zip(models, preds):
        console.print(f"[bold]{m.name}[/] on {p.target}/{p.runtime} ({p.threads or '?'} thread(s)): "
                      f"[bold]{p.latency_ms:.3f} ms[/]  sources {p.sources}  table {p.provenance.get('table')} "
                      f"({p.provenance.get('method')})")
        t = Table(title=f"slowest {min(layers, len(p.layers))} of {len(p.layers)} kernels")
        for col in ("layer", "op", "ms", "share", "source", "kernel"):
            t.add_column(col, justify="right" if col in ("ms", "share") else "left")
        for layer in sorted(p.layers, key=lambda x: -x.latency_ms)[:layers]:
            t.add_row(layer.name, layer.op, f"{layer.latency_ms:.4f}", f"{layer.latency_ms / p.latency_ms:.0%}",
                      layer.source, layer.kernel)
        console.print(t)
        for note in p.provenance.get("control_flow", []):  # why some `fallback` rows are less certain
            console.print(f"note: {note}")


def _validate(models: list[Path], target: str, runtime: str, table: Path | None, shapes, json_out: bool) -> None:
    report = validate_models(models, target, runtime, shapes=shapes, table=table)
    if json_out:
        emit_json(report)
        return
    t = Table(title=f"predicted vs measured on {report['measured_on']} ({runtime}, {report['threads']} thread(s), "
                    f"{report['clock']})")
    for col in ("model", "predicted ms", "measured ms", "rel. error"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in report["models"]:
        t.add_row(Path(r["model"]).name, f"{r['predicted_ms']:.3f}", f"{r['measured_ms']:.3f}", f"{r['rel_error']:+.1%}")
    console.print(t)
    s = report["summary"]
    console.print(f"within ±10%: {s['within_10pct']:.0%}  mean |error| {s['mean_abs_rel_error']:.1%}"
                  + (f"  Spearman {s['spearman']:.3f}" if s.get("spearman") is not None else ""))
    d = report.get("drift_normalized") or {}
    if d.get("summary"):
        n = d["summary"]
        console.print(f"drift-normalized (x{d['drift']:.3f}: speed probe {d['probe_ms_now']:.4f} ms now, "
                      f"{d['probe_ms_at_table']:.4f} ms when the table was timed): within ±10%: "
                      f"{n['within_10pct']:.0%}  mean |error| {n['mean_abs_rel_error']:.1%}")
