"""The value that flows between pipeline stages: a model file plus what is known about it.

Stages never hand each other in-memory graphs. Each returns an `Artifact` whose files live in the
stage's cache entry, so any stage's output can be reloaded after a crash, hashed for the next
stage's cache key, and copied into the output folder unchanged.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import onnx

from hwopt.graph.load import load_model


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (models are hashed by content, never by name or time)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_digest(*paths: str | os.PathLike | None) -> str:
    """One digest for the data files a run reads (None for an absent one), for stage cache keys."""
    return hashlib.sha256("|".join(file_digest(Path(p)) if p else "-" for p in paths).encode()).hexdigest()


@dataclass
class Artifact:
    """A model file (`path`) with `files` that belong to it and `meta` the stages recorded.

    `onnx_path` is the ONNX form of the same model (the file itself for ONNX artifacts, the
    source model for exported formats): latency prediction and census read it.
    """

    path: Path
    runtime: str = "onnx"
    precision: str = "fp32"
    files: list[Path] = field(default_factory=list)
    onnx_path: Path | None = None
    meta: dict = field(default_factory=dict)

    @cached_property
    def digest(self) -> str:
        return file_digest(self.path) if not self.files else hashlib.sha256(
            "".join(file_digest(f) for f in sorted(self.files)).encode()
        ).hexdigest()

    def load_onnx(self) -> onnx.ModelProto:
        return load_model(self.onnx_path or self.path)

    def to_dict(self, root: Path) -> dict:
        rel = lambda p: os.path.relpath(p, root) if p else None  # noqa: E731
        return {"path": rel(self.path), "runtime": self.runtime, "precision": self.precision,
                "files": [rel(f) for f in self.files], "onnx_path": rel(self.onnx_path), "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict, root: Path) -> Artifact:
        ab = lambda p: Path(os.path.normpath(root / p)) if p else None  # noqa: E731
        return cls(ab(d["path"]), d["runtime"], d["precision"], [ab(f) for f in d["files"]], ab(d["onnx_path"]), d["meta"])
