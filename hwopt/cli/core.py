"""Foundation commands: devices, inspect, bench."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hwopt import api
from hwopt.cli.common import (
    DEVICES_DIR_OPTION, JSON_OPTION, SHAPE_OPTION, command, console, emit_json, err_console, split_list,
)
from hwopt.errors import HwoptError
from hwopt.graph.load import custom_ops, load_model
from hwopt.graph.shapes import parse_shape_options
from hwopt.runtimes import BenchResult, get_runtime


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


@command("devices")
def devices_cmd(devices_dir: Path = DEVICES_DIR_OPTION, json_out: bool = JSON_OPTION) -> None:
    """List the target device profiles (bundled ones plus --devices-dir / $HWOPT_DEVICES_DIR)."""
    devs = api.list_devices(devices_dir)
    if json_out:
        emit_json([d.model_dump() for d in devs.values()])
        return
    table = Table(title="hwopt targets")
    for col in ("name", "cpu / gpu", "runtimes (preferred first)", "fast precisions", "sparse", "here"):
        table.add_column(col)
    for d in devs.values():
        rts = [d.preferred_runtime] + [r for r in d.runtimes if r != d.preferred_runtime]
        table.add_row(
            d.name,
            d.gpu or f"{d.cpu.cores}x {d.cpu.name} {d.cpu.clock_ghz} GHz",
            ", ".join(rts),
            ", ".join(d.fast_precisions),
            ", ".join(d.sparse_kernels) or "-",
            "yes" if d.present_here else "predicted",
        )
    console.print(table)


@command("inspect")
def inspect_cmd(
    model: Path = typer.Argument(..., help="ONNX model to describe."),
    shape: list[str] = SHAPE_OPTION,
    nodes: bool = typer.Option(False, "--nodes", help="Also list every node with its MACs and output shape."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Census of a model: opset, op histogram, params, MACs, bytes, and prunable channel groups."""
    proto = load_model(model)
    unknown = custom_ops(proto)
    if unknown:  # a census still helps; say once (on stderr, so --json stays clean) what will not run
        err_console.print(f"[yellow]warning:[/] custom ops no runtime here implements: {', '.join(unknown)}", soft_wrap=True)
    c = api.inspect(proto, shapes=parse_shape_options(shape))
    if c.unresolved:  # counted as 0, never guessed: say so where the number is read
        err_console.print(f"[yellow]warning:[/] MACs leave out {len(c.unresolved)} node(s) whose shapes are unknown "
                          "or that hold a control-flow body: "
                          f"{', '.join(c.unresolved[:5])}", soft_wrap=True)
    if json_out:
        emit_json(c.to_dict(with_nodes=nodes))
        return
    console.print(f"[bold]{model}[/]  opset {c.opset}  producer {c.producer or '?'}")
    console.print(f"inputs {c.inputs}  outputs {c.outputs}")
    console.print(
        f"params {_human(c.params)}  MACs {_human(c.macs)}  weights {_human(c.weight_bytes, 'B')}  "
        f"activations {_human(c.activation_bytes, 'B')}"
    )
    ops = Table(title="ops")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, n in c.ops.items():
        ops.add_row(op, str(n))
    console.print(ops)
    if nodes:
        t = Table(title="nodes")
        for col in ("node", "op", "MACs", "output"):
            t.add_column(col)
        for n in c.nodes:
            t.add_row(n.name, n.op, _human(n.macs), str(n.outputs[0] if n.outputs else ""))
        console.print(t)
    if c.groups:
        g = Table(title=f"channel groups ({sum(1 for x in c.groups if x['prunable'])} prunable of {len(c.groups)})")
        for col in ("id", "channels", "members", "prunable", "why not"):
            g.add_column(col)
        for grp in c.groups:
            members = ", ".join(grp["members"][:4]) + (f" +{len(grp['members']) - 4}" if len(grp["members"]) > 4 else "")
            g.add_row(str(grp["id"]), str(grp["size"]), members, "yes" if grp["prunable"] else "no", grp.get("reason") or "")
        console.print(g)


@command("bench")
def bench_cmd(
    model: Path = typer.Argument(..., help="Model file (.onnx; .xml for OpenVINO; .tflite for LiteRT)."),
    runtime: str = typer.Option("onnxruntime", "--runtime", "-r", help="Runtime(s), comma-separated: onnxruntime,openvino,litert,tensorrt."),
    threads: int = typer.Option(1, "--threads", help="Intra-op threads (1 gives the steadiest numbers on shared machines)."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed runs first."),
    runs: int = typer.Option(50, "--runs", help="Timed runs."),
    precision: str = typer.Option("fp32", "--precision", help="Inference precision to request (OpenVINO: fp32, bf16, fp16)."),
    shape: list[str] = SHAPE_OPTION,
    data: Path = typer.Option(None, "--data", help="Take the input from this .npz (first sample) instead of random."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Measure latency on runtimes present here; several runtimes are printed side by side.

    A runtime that cannot run the model is reported with its reason and the others still run;
    the command fails (exit 2) only when none of them could."""
    runtimes = split_list(runtime)
    shapes = parse_shape_options(shape)
    for rt in runtimes:  # a runtime asked for but absent is a bad option, not a model it cannot run
        if not get_runtime(rt).available():
            raise HwoptError(f"runtime {rt} is not available here")
    results: list[BenchResult] = []
    failed: dict[str, str] = {}
    for rt in runtimes:
        try:
            results.append(api.bench(model, rt, threads=threads, warmup=warmup, runs=runs, precision=precision,
                                     shapes=shapes, data=data))
        except HwoptError as exc:
            failed[rt] = str(exc)
    if not results:  # one reason for all (a bad --shape, say) is said once
        reasons = set(failed.values())
        raise HwoptError(reasons.pop() if len(reasons) == 1 else
                         "no runtime could run the model: " + "; ".join(f"{rt}: {why}" for rt, why in failed.items()))
    if json_out:
        rows = [r.to_dict() for r in results] + [{"runtime": rt, "error": why} for rt, why in failed.items()]
        emit_json(rows[0] if len(runtimes) == 1 else rows)
        return
    table = Table(title=f"{model.name} on {results[0].device}, {threads} thread(s), {runs} runs")
    for col in ("runtime", "version", "precision", "p50 ms", "p90 ms", "p99 ms", "mean ms", "vs first"):
        table.add_column(col, justify="right" if "ms" in col or col == "vs first" else "left")
    base = results[0].p50_ms
    for r in results:
        table.add_row(
            # OpenVINO's version ends in a long build id; the table shows the release only
            r.runtime, r.version.split("-")[0], r.precision, f"{r.p50_ms:.3f}", f"{r.p90_ms:.3f}", f"{r.p99_ms:.3f}",
            f"{r.mean_ms:.3f}", f"{base / r.p50_ms:.2f}x",
        )
    for rt in failed:
        table.add_row(rt, "-", "-", "failed", "-", "-", "-", "-")
    console.print(table)
    for rt, why in failed.items():  # the reason in full, below the table (a cell would wrap it)
        err_console.print(f"[yellow]{rt} failed:[/] {why}", soft_wrap=True)
