"""`hwopt search`: Once-for-All-style subnet selection under a latency budget."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hwopt.cli.common import JSON_OPTION, SHAPE_OPTION, command, console, emit_json, err_console, split_list
from hwopt.errors import HwoptError
from hwopt.graph.shapes import parse_shape_options


def _floats(value: str | None) -> list[float]:
    try:
        return [float(v) for v in split_list(value)]
    except ValueError:
        raise HwoptError(f"--budgets must be comma-separated milliseconds, got {value!r}") from None


@command("search")
def search_cmd(
    model: Path = typer.Argument(None, help="ONNX model whose elastic space (widths, skippable blocks, resolution) is searched."),
    supernet: str = typer.Option(None, "--supernet", help="Search a registered trained supernet instead, e.g. ofa-mbv3-digits."),
    target: str = typer.Option(None, "--target", "-t", help="Device profile (see `hwopt devices`)."),
    latency_ms: float = typer.Option(None, "--latency-ms", help="Latency budget in ms on the target."),
    targets: str = typer.Option(None, "--targets", help="More targets, comma-separated (one search per target)."),
    budgets: str = typer.Option(None, "--budgets", help="Pareto mode: several budgets in ms, comma-separated."),
    runtime: str = typer.Option(None, "--runtime", "-r", help="Runtime (default: each target's preferred one)."),
    eval_data: Path = typer.Option(None, "--eval", help="Evaluation .npz for an ONNX model (labels optional)."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and evolution (same seed, same result)."),
    subnets: int = typer.Option(120, "--subnets", help="Subnets measured to fit the accuracy predictor."),
    population: int = typer.Option(100, "--population", help="Evolution population."),
    generations: int = typer.Option(500, "--generations", help="Evolution generations."),
    latency_source: str = typer.Option("auto", "--latency-source", help="auto | predicted | measured (targets present here)."),
    predictor: str = typer.Option("mlp", "--predictor", help="Accuracy predictor: mlp | gbt."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="Weight-sharing fine-tune of the ONNX space first (sandwich rule + KD)."),
    finetune_data: Path = typer.Option(None, "--finetune-data", help="Training .npz for --finetune-epochs (keep it apart from --eval)."),
    finetune_lr: float = typer.Option(1e-3, "--finetune-lr", help="Adam learning rate of the fine-tune."),
    refine_top: int = typer.Option(5, "--refine-top", help="Measure this many top candidates per budget (accuracy, and latency "
                                   "when the target is this machine) and keep the best that meets the budget; 0: no refinement."),
    shape: list[str] = SHAPE_OPTION,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: subnet configs, ONNX models, pareto.png, search.json."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Pick the most accurate subnet that meets a latency budget on each target (Once-for-All style)."""
    from hwopt.nas.api import search
    from hwopt.nas.evolution import EvolutionSettings

    report = search(
        model, supernet=supernet, target=target, latency_ms=latency_ms, targets=split_list(targets),
        budgets=_floats(budgets), runtime=runtime, eval_data=eval_data, out_dir=out, seed=seed,
        settings=EvolutionSettings(population=population, generations=generations, seed=seed), n_subnets=subnets,
        predictor=predictor, latency_source=latency_source, shapes=parse_shape_options(shape),
        finetune_epochs=finetune_epochs, finetune_data=finetune_data, finetune_lr=finetune_lr,
        refine_top=refine_top, progress=None if json_out else (lambda msg: err_console.print(f"[dim]{msg}[/]")),
    )
    if json_out:
        emit_json(report.to_dict())
        return
    q = report.predictor
    console.print(f"[bold]{report.source}[/]: accuracy predictor ({q.kind}, {q.n_train} subnets) held-out "
                  f"Spearman {q.spearman:.3f}, RMSE {q.rmse:.2f} points")
    table = Table(title=f"searched subnets ({report.metric})")
    for col in ("target", "runtime", "budget ms", "latency ms", "source", "measured ms", "predicted %", "measured %", "search s", "model"):
        table.add_column(col, justify="right" if col not in ("target", "runtime", "source", "model") else "left")
    for r in report.results:
        meas = "-" if r.measured_latency_ms is None else f"{r.measured_latency_ms:.3f}"
        table.add_row(r.target, r.runtime, f"{r.budget_ms:g}", f"{r.latency_ms:.3f}", r.latency_source, meas, f"{r.predicted_accuracy:.2f}",
                      f"{r.accuracy:.2f}", f"{r.search_seconds:.1f}", r.onnx)
    console.print(table)
    console.print(f"wrote {', '.join(report.artifacts)} to {out}")
