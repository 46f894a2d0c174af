"""`hwopt prune`: structured channel pruning of an ONNX model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hwopt.cli.common import JSON_OPTION, SHAPE_OPTION, command, console, emit_json
from hwopt.errors import HwoptError
from hwopt.graph.load import save_model
from hwopt.graph.shapes import parse_shape_options


@command("prune")
def prune_cmd(
    model: Path = typer.Argument(..., help="ONNX model to prune (never modified)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the pruned .onnx."),
    ratio: float = typer.Option(None, "--ratio", help="Fraction of each prunable group's channels to remove, in [0, 1)."),
    latency_ms: float = typer.Option(None, "--latency-ms", help="Search the ratio until the model runs this fast on --target."),
    criterion: str = typer.Option("l1", "--criterion", help="l1, l2, bn (BatchNorm scale) or obs (OBSPA)."),
    calib: Path = typer.Option(None, "--calib", help="Calibration .npz for obs (without it obs is data-free)."),
    target: str = typer.Option(None, "--target", help="Device profile: rounds channel counts to its preferred multiple."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Node name whose channels must not be pruned (repeatable)."),
    multiple: int = typer.Option(None, "--multiple", help="Round kept channels to this multiple (default: the target's, else 8)."),
    global_ranking: bool = typer.Option(False, "--global", help="Rank channels across groups instead of a uniform ratio."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="Distill the original into the pruned model on --calib for N epochs."),
    shape: list[str] = SHAPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Remove whole channels (and attention head dims) and write a smaller, validated ONNX model."""
    from hwopt.pruning import prune_model

    if (ratio is None) == (latency_ms is None):
        raise HwoptError("give exactly one of --ratio F or --latency-ms T (with --target)")
    if output.resolve() == model.resolve():
        raise HwoptError("-o must differ from the input model (the input is never overwritten)")
    result = prune_model(
        model,
        ratio,
        criterion=criterion,
        calib=calib,
        target=target,
        exclude=exclude or (),
        global_ranking=global_ranking,
        multiple=multiple,
        shapes=parse_shape_options(shape),
        latency_ms=latency_ms,
        measure=True,
        finetune_epochs=finetune_epochs,
    )
    save_model(result.model, output)
    s = dict(result.summary, output=str(output))
    if json_out:
        emit_json(s)
        return
    t = Table(title=f"{model.name} -> {output.name} ({s['criterion']}, ratio {s['ratio']:.3g})")
    for col in ("", "before", "after", "change"):
        t.add_column(col, justify="right")
    for key, label in (("params", "params"), ("macs", "MACs"), ("latency_ms", "onnxruntime ms (1 thread)")):
        b, a = s[f"{key}_before"], s[f"{key}_after"]
        t.add_row(label, f"{b:,.3f}" if key == "latency_ms" else f"{b:,}", f"{a:,.3f}" if key == "latency_ms" else f"{a:,}",
                  f"{b / a:.2f}x" if a else "-")
    console.print(t)
    console.print(f"groups pruned {s['groups_pruned']} of {s['groups_prunable']} prunable ({s['groups']} in all); written {output}")
