"""Content-addressed cache of stage results, so a re-run or a run after a crash resumes.

A stage result is keyed by sha256 of (stage name, input artifact bytes, data set bytes, stage
options, hwopt version): change any of them and the stage runs again; change none and its stored
result is reused. An entry is a folder `<stage>-<key>/` holding the stage's files and a
`result.json` written last. The stage writes into a private staging folder that is renamed into
place only when complete, so a process killed mid-stage leaves no entry that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from hwopt.graph.load import atomic_write_text

RESULT = "result.json"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hwopt")
    except PackageNotFoundError:
        return "unknown"


def cache_key(stage: str, inputs: list[str], options: dict) -> str:
    """Stable key of one stage run: digests of everything it reads, its options, hwopt's version."""
    blob = json.dumps({"stage": stage, "inputs": inputs, "options": options, "hwopt": _version()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class StageCache:
    """Stage results under `root` (normally OUTDIR/.cache)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def entry(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key}"

    def get_or_run(self, stage: str, key: str, run: Callable[[Path], dict]) -> tuple[dict, Path]:
        """The stored result of (stage, key), or `run(staging_dir)`'s result stored under it.

        `run` writes its files into the folder it is given and returns a JSON-able dict whose
        paths are relative to that folder. Returns (result, entry folder).
        """
        final = self.entry(stage, key)
        done = final / RESULT
        if done.is_file():
            try:
                self.hits += 1
                return json.loads(done.read_text()), final
            except json.JSONDecodeError:  # a torn write cannot happen with atomic writes, but be safe
                self.hits -= 1
                shutil.rmtree(final, ignore_errors=True)
        self.misses += 1
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{stage}-{key}.", dir=self.root))
        try:
            result = run(staging)
            atomic_write_text(json.dumps(result, indent=2, default=str), staging / RESULT)
            if final.exists():  # a concurrent run finished first; keep its entry
                shutil.rmtree(staging)
            else:
                os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return json.loads((final / RESULT).read_text()), final
