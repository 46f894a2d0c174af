"""Load ONNX models with clear errors, and write them atomically.

Real models arrive truncated, as random bytes, with external weight files, or with paths in
those external-data references that point outside the model's folder. Each of these gets one
readable `HwoptError` rather than a protobuf traceback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from hwopt.errors import HwoptError

ONNX_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}


def _check_external_data(model: onnx.ModelProto, folder: Path) -> None:
    """Refuse external-data locations that escape the model's folder or do not exist."""
    root = folder.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):  # noqa: SLF001 - public in practice
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (root / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(root):
            raise HwoptError(
                f"external data path {location!r} of tensor {tensor.name!r} points outside the model folder {root}"
            )
        if not target.is_file():
            raise HwoptError(f"external data file {location!r} of tensor {tensor.name!r} is missing")


def load_model(path: str | os.PathLike, *, check: bool = True) -> onnx.ModelProto:
    """Read an ONNX model (weights included) and validate it.

    Raises HwoptError for a missing, empty, non-ONNX or truncated file, unsafe external data,
    or a graph that fails onnx.checker.
    """
    p = Path(path)
    if not p.exists():
        raise HwoptError(f"model file not found: {p}")
    if p.is_dir():
        raise HwoptError(f"expected an .onnx file, got a folder: {p}")
    if p.stat().st_size == 0:
        raise HwoptError(f"model file is empty: {p}")
    try:
        model = onnx.load_model(str(p), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as exc:
        raise HwoptError(f"not a valid ONNX model (truncated or not ONNX): {p}") from exc
    if not model.graph.node and not model.graph.output:
        raise HwoptError(f"not a valid ONNX model (no graph found; truncated or not ONNX): {p}")
    _check_external_data(model, p.parent)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(p.parent))
    except (OSError, ValueError) as exc:
        raise HwoptError(f"cannot read external data of {p}: {exc}") from exc
    if check:
        check_model(model, name=str(p))
    return model


def check_model(model: onnx.ModelProto, *, name: str = "model", full: bool = False) -> None:
    """onnx.checker with a one-line error; `full` also runs strict shape inference."""
    try:
        if model.ByteSize() > 2_000_000_000:
            return  # the checker refuses >2GB protos in memory; loading already validated structure
        onnx.checker.check_model(model, full_check=full)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HwoptError(f"invalid ONNX model {name}: {first}") from exc


def custom_ops(model: onnx.ModelProto) -> list[str]:
    """Op types from domains no standard runtime knows (e.g. a framework's custom op)."""
    local = {f.name for f in model.functions}
    return sorted(
        {f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ONNX_DOMAINS and n.op_type not in local}
    )


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write bytes to `path` through a temporary file in the same folder and an atomic rename."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _umask() -> int:
    """The process umask (reading it means setting it; restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return atomic_write_bytes(text.encode("utf-8"), path)


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Save a model atomically (weights inline; models >2 GB are out of scope for now)."""
    return atomic_write_bytes(model.SerializeToString(), path)
