"""Where hwopt's bundled data lives, in a source checkout and after a non-editable install."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the bundled folder `name` (devices, latency_tables, exporters).

    Installed wheels carry it as hwopt/_data/<name>; a source checkout keeps it at the top level.
    """
    installed = _PKG / "_data" / name
    if installed.is_dir():
        return installed
    return _PKG.parent / name
