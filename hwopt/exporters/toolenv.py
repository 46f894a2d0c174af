"""Isolated Python environments for converters that cannot live in hwopt's process.

TensorFlow (needed by the TFLite converter) and torch pin incompatible libraries, so each such
converter gets its own venv built from a pinned `exporters/<tool>/requirements.txt` the first
time it is needed. The venv is reused while its requirements file is unchanged (a hash marker
records which one built it); creation holds a file lock so two runs do not build it at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from hwopt.errors import NotAvailableError
from hwopt.graph.load import atomic_write_text
from hwopt.paths import data_dir

#: pip download + install of TensorFlow takes minutes on a slow link; a stuck install must end
CREATE_TIMEOUT_S = 1800
_MARKER = ".hwopt-requirements.sha256"


def tool_dir(tool: str) -> Path:
    """The bundled folder with `requirements.txt` and the worker script of `tool`."""
    return data_dir("exporters") / tool


def venv_path(tool: str) -> Path:
    """$HWOPT_<TOOL>_VENV, else ~/.cache/hwopt/venvs/<tool>."""
    override = os.environ.get(f"HWOPT_{tool.upper()}_VENV")
    if override:
        return Path(override)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "hwopt" / "venvs" / tool


def requirements_hash(tool: str) -> str:
    """sha256 of the pinned requirements `tool`'s venv is built from (a new pin means new outputs)."""
    return hashlib.sha256((tool_dir(tool) / "requirements.txt").read_bytes()).hexdigest()


def tool_python(tool: str, *, log=None) -> Path:
    """Python of the ready venv for `tool`, creating it if allowed ($HWOPT_TOOL_INSTALL != 0).

    Raises NotAvailableError ("export tool missing") when it is absent and may not or cannot be built.
    """
    venv = venv_path(tool)
    python = venv / "bin" / "python"
    want = requirements_hash(tool)
    if _ready(venv, want):
        return python
    if os.environ.get("HWOPT_TOOL_INSTALL", "1") == "0":
        raise NotAvailableError(
            f"export tool missing: the {tool} converter environment is not at {venv} and HWOPT_TOOL_INSTALL=0 "
            f"forbids creating it (unset it, or point HWOPT_{tool.upper()}_VENV at a ready venv)"
        )
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _ready(venv, want):  # another process may have built it while we waited
            _create(tool, venv, want, log)
    return python


def _ready(venv: Path, want: str) -> bool:
    marker = venv / _MARKER
    return (venv / "bin" / "python").exists() and marker.is_file() and marker.read_text().strip() == want


def _create(tool: str, venv: Path, want: str, log) -> None:
    if log:
        log(f"creating the {tool} converter environment at {venv} (one-time download from PyPI, a few minutes)")
    shutil.rmtree(venv, ignore_errors=True)
    reqs = tool_dir(tool) / "requirements.txt"
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(reqs)],
    ]
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CREATE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            shutil.rmtree(venv, ignore_errors=True)
            raise NotAvailableError(f"export tool missing: creating the {tool} environment timed out") from None
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            errs = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")] or proc.stderr.strip().splitlines()[-1:]
            raise NotAvailableError(
                f"export tool missing: could not create the {tool} environment ({errs[0] if errs else 'unknown error'})"
            )
    atomic_write_text(want + "\n", venv / _MARKER)  # written last: its presence means a complete venv
