"""The `hwopt` command line. Each module in this package registers its commands on one app."""

from __future__ import annotations

import importlib
import pkgutil

from hwopt.cli.common import app


def _load_commands() -> None:
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if mod != "common":
            importlib.import_module(f"{__name__}.{mod}")


_load_commands()


def main() -> None:
    app()


__all__ = ["app", "main"]
