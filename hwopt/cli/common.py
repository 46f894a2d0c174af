"""Shared CLI plumbing: the app, error handling (one line + exit 2), JSON and rich output.

Every command module in hwopt/cli/ registers its commands with `@command()`; hwopt.cli imports
them all. Human output goes to stdout through `console`; progress bars go to stderr so that
`--json` leaves exactly one JSON document on stdout.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from hwopt.errors import HwoptError

app = typer.Typer(
    name="hwopt",
    help="Hardware-aware model compression: prune, quantize, predict latency, export and verify for a target device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout and nothing else there.")
SHAPE_OPTION = typer.Option(
    None, "--shape", help="Fix a dynamic input dim: NAME=1x3x48x320 (repeatable). A dynamic batch dim defaults to 1."
)
DEVICES_DIR_OPTION = typer.Option(
    None, "--devices-dir", envvar="HWOPT_DEVICES_DIR", help="Extra folder of device profile YAML files."
)


def fail(message: str) -> typer.Exit:
    """Print one clear line on stderr and return the exit-2 exception to raise."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(2)


def command(*args: Any, **kwargs: Any) -> Callable:
    """`app.command` that turns HwoptError (bad input) into one stderr line and exit code 2."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return fn(*a, **kw)
            except HwoptError as exc:
                raise fail(str(exc)) from None
            except KeyboardInterrupt:
                err_console.print("interrupted")
                raise typer.Exit(130) from None

        return app.command(*args, **kwargs)(wrapper)

    return decorate


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj


def emit_json(obj: Any) -> None:
    """Write one JSON document to stdout (NaN becomes null, inf becomes "inf")."""
    sys.stdout.write(json.dumps(_jsonable(obj), indent=2) + "\n")
    sys.stdout.flush()


def split_list(value: str | None) -> list[str]:
    """'a,b , c' -> ['a', 'b', 'c']"""
    return [v.strip() for v in (value or "").split(",") if v.strip()]
