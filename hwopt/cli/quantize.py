"""`hwopt quantize`: target-aware PTQ (+ reconstruction / KD-QAT / mixed precision) with a report."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.table import Table

from hwopt.cli.common import JSON_OPTION, SHAPE_OPTION, command, console, emit_json, err_console, split_list
from hwopt.graph.load import atomic_write_text
from hwopt.graph.shapes import parse_shape_options


@command("quantize")
def quantize_cmd(
    model: Path = typer.Argument(..., help="ONNX model to quantize."),
    calib: Path = typer.Option(None, "--calib", help="Calibration data (.npz keyed by input names)."),
    eval_data: Path = typer.Option(None, "--eval", help="Evaluation data (.npz, optional `labels`)."),
    target: str = typer.Option("x86-avx512", "--target", help="Device profile (see `hwopt devices`)."),
    runtime: str = typer.Option(None, "--runtime", help="Deployment runtime (default: the target's preferred one)."),
    method: str = typer.Option("minmax", "--method", help="Calibrator: minmax, percentile, entropy, mse."),
    reconstruct: str = typer.Option("none", "--reconstruct", help="none, adaround, qdrop, metaaug."),
    iters: int = typer.Option(500, "--iters", min=1, help="Reconstruction steps per block (100 converges on small models)."),
    wbits: int = typer.Option(8, "--wbits", help="Weight bits: 8, 4, 3, 2."),
    abits: int = typer.Option(8, "--abits", help="Activation bits: 8, 4, 3, 2."),
    distill: bool = typer.Option(False, "--distill", help="Distillation-aware QAT after PTQ."),
    epochs: int = typer.Option(3, "--epochs", help="QAT epochs with --distill."),
    exclude: str = typer.Option(None, "--exclude", help="Node names to keep in float, comma-separated."),
    exclude_ops: str = typer.Option(None, "--exclude-ops", help="Op types to keep in float, comma-separated."),
    keep_first_last: bool = typer.Option(False, "--keep-first-last", help="Keep the first and last weighted layers float."),
    bias_correction: str = typer.Option("none", "--bias-correction",
                                        help="none; analytic (weight rounding's mean shift, from input means); empirical "
                                             "(each layer's measured mean output shift vs the float model, layer by layer)."),
    data_free: bool = typer.Option(False, "--data-free", help="Calibrate on synthetic inputs (warns; check accuracy)."),
    max_accuracy_drop: float = typer.Option(None, "--max-accuracy-drop", help="Keep sensitive layers float until the drop (points) fits."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="Also report per-layer sensitivity."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip the latency measurement."),
    shape: list[str] = SHAPE_OPTION,
    out: Path = typer.Option(..., "-o", "--output", help="Where to write the QDQ model (.onnx); the report goes next to it."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Quantize MODEL for a target; accuracy and latency are measured on the runtimes here."""
    from hwopt.quant.api import quantize

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = quantize(
            model, calib, target=target, runtime=runtime, method=method, wbits=wbits, abits=abits,
            exclude_nodes=split_list(exclude), exclude_ops=split_list(exclude_ops), keep_first_last=keep_first_last,
            bias_correction=bias_correction, reconstruct=reconstruct, iters=iters, distill=distill, epochs=epochs, eval=eval_data,
            data_free=data_free, max_accuracy_drop=max_accuracy_drop, sensitivity=sensitivity,
            measure_latency=not no_latency, shapes=parse_shape_options(shape),
        )
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {w.message}")
    result.save(out)
    report_path = out.with_suffix(".report.json")
    import json

    atomic_write_text(json.dumps(result.report, indent=2, default=float), report_path)
    rep = dict(result.report, output=str(out), report=str(report_path))
    if json_out:
        emit_json(rep)
        return
    _print_report(rep)


def _print_report(rep: dict) -> None:
    console.print(f"[bold]{rep['output']}[/]  target {rep['target']}  runtime {rep['runtime']}  "
                  f"W{rep['wbits']}A{rep['abits']}  method {rep['method']}")
    acc = Table(title=f"accuracy ({rep['float']['metric']})")
    for col in ("model", "runtime", "accuracy", "SQNR dB"):
        acc.add_column(col)
    acc.add_row("float", rep["accuracy_runtime"], f"{rep['float']['accuracy']:.2f}", "")
    for rt, m in rep["quantized"].items():
        acc.add_row("quantized", rt, f"{m['accuracy']:.2f}", f"{m.get('sqnr_db', float('nan')):.1f}")
    console.print(acc)
    if rep.get("latency"):
        lat = Table(title="latency, batch 1, 1 thread (interleaved runs)")
        for col in ("runtime", "precision", "p50 ms"):
            lat.add_column(col)
        for c in rep["latency"]:
            lat.add_row(c["runtime"], c["precision"], c["error"] or f"{c['p50_ms']:.3f}")
        console.print(lat)
        sp = rep["speedup"]
        console.print("int8 vs fp32: " + ", ".join(f"{k} {v:.2f}x" for k, v in sp.items() if k != "best"))
        if "best" in sp:
            b = sp["best"]
            console.print(f"fastest: {b['runtime']} {b['precision']} ({b['vs_best_fp32']:.2f}x the best fp32)")
    if rep.get("float_layers"):
        console.print(f"kept in float: {', '.join(rep['float_layers'])}")
    console.print(f"accuracy drop {rep['accuracy_drop']:.2f} points; report {rep['report']}")
