"""`hwopt compress` (the whole pipeline) and `hwopt export` (one exporter on its own)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hwopt.cli.common import JSON_OPTION, SHAPE_OPTION, command, console, emit_json, err_console
from hwopt.graph.shapes import parse_shape_options


@command("compress")
def compress_cmd(
    model: Path = typer.Argument(..., help="ONNX model to compress (never modified)."),
    target: str = typer.Option(..., "--target", "-t", help="Device profile name (see `hwopt devices`)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: model/, baseline/, recipe.yaml, report.json, report.html."),
    calib: Path = typer.Option(None, "--calib", help="Calibration data (.npz keyed by input names)."),
    eval_data: Path = typer.Option(None, "--eval", help="Evaluation data (.npz, optional `labels`); default: the calibration data."),
    max_accuracy_drop: float = typer.Option(1.0, "--max-accuracy-drop", help="Accuracy budget in points."),
    latency_ms: float = typer.Option(None, "--latency-ms", help="Latency budget in ms (also enables pruning candidates)."),
    recipe: Path = typer.Option(None, "--recipe", help="Run this (edited) recipe.yaml instead of planning one."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan and predict only: write recipe.yaml, run nothing."),
    shape: list[str] = SHAPE_OPTION,
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Stage cache folder (default OUT/.cache); re-runs resume from it."),
    threads: int = typer.Option(1, "--threads", help="Threads for measured latency (1 is steadiest on shared machines)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    json_out: bool = JSON_OPTION,
) -> None:
    """The fastest model for a target within an accuracy budget, exported, verified and reported."""
    from hwopt.pipeline import compress

    show = not quiet and not json_out
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, disable=quiet, transient=True) as bar:
        task = bar.add_task("planning", total=None)

        def progress(i: int, n: int, name: str) -> None:
            bar.update(task, completed=i, total=n, description=f"candidate {name}")

        def log(msg: str) -> None:
            if not quiet:
                bar.console.print(f"[dim]{msg}[/]")

        result = compress(
            model, target=target, calib=calib, eval=eval_data, max_accuracy_drop=max_accuracy_drop, latency_ms=latency_ms,
            out_dir=out, recipe=recipe, dry_run=dry_run, shapes=parse_shape_options(shape), cache_dir=cache_dir,
            threads=threads, log=log, progress=progress,
        )
    if result.dry_run:
        if json_out:
            emit_json(result.recipe.to_dict() | {"recipe_path": str(result.recipe_path)})
            return
        table = Table(title=f"recipe for {result.recipe.target} (dry run; predicted, nothing was run)")
        for col in ("candidate", "runtime", "precision", "steps", "predicted ms"):
            table.add_column(col)
        for c in result.recipe.candidates:
            steps = " -> ".join(s.stage for s in c.steps) or "-"
            table.add_row(c.name, c.runtime, c.precision, steps, "-" if c.predicted_ms is None else f"{c.predicted_ms:.3f}")
        console.print(table)
        for note in result.recipe.notes:
            console.print(f"note: {note}")
        console.print(f"wrote {result.recipe_path}; edit it and run with --recipe")
        return
    if json_out:
        emit_json(result.report)
        return
    if show:
        _print_summary(result)


def _print_summary(result) -> None:
    rep = result.report
    guard = next(s for s in rep["stages"] if s["stage"] == "guard")
    counts = ", ".join(f"{n} {status}" for status, n in guard["candidates"].items())
    caption = f"candidates: {counts}" + (" -- SOME FAILED, see report.json" if guard["warning"] else "")
    table = Table(title=f"hwopt compress -> {rep['target']}", caption=caption,
                  caption_style="bold red" if guard["warning"] else "dim")
    for col in ("", "runtime", "precision", "latency ms", "source", "accuracy", "artifact"):
        table.add_column(col)
    for side in ("baseline", "result"):
        s = rep[side]
        lat = "-" if s["latency_ms"] is None else f"{s['latency_ms']:.3f}"
        table.add_row(side, s["runtime"], s["precision"], lat, s["latency_source"], f"{s['accuracy']:.2f}", s["artifact"])
    console.print(table)
    speed = "-" if rep["speedup"] is None else f"{rep['speedup']:.2f}x"
    console.print(f"speedup {speed}, accuracy drop {rep['accuracy_drop']:.2f} points")
    style = "bold red" if guard["warning"] else "green" if result.budget_met else "yellow"
    console.print(f"[{style}]{result.reason}[/]", highlight=False)
    console.print(f"report: {result.report_path}  {result.html_path}")


@command("export")
def export_cmd(
    model: Path = typer.Argument(..., help="ONNX model to export."),
    to: str = typer.Option(..., "--to", help="Runtime: onnxruntime, openvino, litert or tensorrt."),
    out: Path = typer.Option(..., "-o", "--out", help="Output file (with the runtime's suffix) or folder."),
    target: str = typer.Option(None, "--target", "-t", help="Device profile whose rules apply (QDQ, sparsity flags)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16, bf16 (OpenVINO) or int8."),
    calib: Path = typer.Option(None, "--calib", help="Calibration data: needed for int8 of a float model; also used to verify."),
    shape: list[str] = SHAPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Export to one runtime's format and verify the artifact by running it against the ONNX model."""
    from hwopt.exporters import export

    res = export(model, to, out, target=target, precision=precision, calib=calib, shapes=parse_shape_options(shape),
                 log=lambda m: err_console.print(f"[dim]{m}[/]"))
    if json_out:
        emit_json(res.to_dict())
    else:
        v = res.verification
        console.print(f"[bold]{res.runtime}[/] {res.precision}: {res.artifact}")
        for f in res.files:
            if f != res.artifact:
                console.print(f"  also {f}")
        if v.ran and v.max_abs_diff is None:
            console.print(f"[red]FAILED[/]: {v.reason}")
        elif v.ran:
            verdict = "[green]verified[/]" if v.passed else "[red]MISMATCH[/]"
            console.print(f"{verdict}: max abs diff {v.max_abs_diff:.3g}, cosine {v.cosine:.6f} over {v.samples} samples "
                          f"vs {v.reference}")
        else:
            console.print(f"[yellow]not verified[/]: {v.reason}")
        for note in res.notes:
            console.print(f"  {note}")
    if res.verification.ran and not res.verification.passed:
        raise typer.Exit(1)
