"""Device profiles: what a target has, what runs fast on it, and which latency table describes it.

Profiles are YAML files (devices/*.yaml, one per target) validated with pydantic on load. Users add
their own with `--devices-dir DIR` or the HWOPT_DEVICES_DIR environment variable; a file there
overrides a bundled profile of the same name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwopt.errors import HwoptError
from hwopt.paths import data_dir

Runtime = Literal["onnxruntime", "openvino", "litert", "tensorrt", "lce"]
Precision = Literal["fp32", "fp16", "bf16", "int8", "int4", "binary"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CPU(_Strict):
    name: str
    cores: int = Field(gt=0)
    clock_ghz: float = Field(gt=0)
    isa: list[str] = Field(description="ISA features, e.g. neon, dotprod, avx512_vnni, avx512_bf16, amx")


class Memory(_Strict):
    bandwidth_gbs: float = Field(gt=0)
    l1_kb: int | None = None
    l2_kb: int | None = None
    l3_kb: int | None = None
    ram_gb: float | None = None


class Peak(_Strict):
    """Peak throughput in GOP/s (one MAC = 2 ops) per precision."""

    fp32_gops: float = Field(gt=0)
    fp16_gops: float | None = None
    bf16_gops: float | None = None
    int8_gops: float | None = None


class QDQRules(_Strict):
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    per_channel_axis: int = 0
    activation_dtype: Literal["int8", "uint8"] = "int8"


class DeviceProfile(_Strict):
    name: str
    description: str
    kind: Literal["cpu", "gpu"]
    cpu: CPU
    gpu: str | None = None
    memory: Memory
    peak: Peak
    runtimes: list[Runtime]
    preferred_runtime: Runtime
    fast_precisions: list[Precision] = Field(description="precisions that really run faster than fp32 here")
    qdq: QDQRules = QDQRules()
    sparse_kernels: list[Literal["xnnpack_1x1", "2:4"]] = []
    binary_kernels: list[Literal["lce"]] = []
    channel_multiple: int = Field(1, ge=1, description="channel counts the kernels like (pruning rounds to it)")
    latency_tables: dict[str, str] = Field({}, description="runtime -> table file in latency_tables/")
    present_here: bool = Field(False, description="True when this machine can run the target's runtime natively")
    sources: list[str] = []


def devices_dirs(extra: str | os.PathLike | None = None) -> list[Path]:
    """Search order: an explicit dir, then $HWOPT_DEVICES_DIR, then the bundled profiles."""
    dirs = []
    if extra:
        dirs.append(Path(extra))
    if os.environ.get("HWOPT_DEVICES_DIR"):
        dirs.append(Path(os.environ["HWOPT_DEVICES_DIR"]))
    dirs.append(data_dir("devices"))
    return dirs


def _load_file(path: Path) -> DeviceProfile:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HwoptError(f"device profile {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(raw, dict):
        raise HwoptError(f"device profile {path} must be a YAML mapping")
    try:
        prof = DeviceProfile(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise HwoptError(f"device profile {path}: {loc}: {err['msg']}") from exc
    if prof.preferred_runtime not in prof.runtimes:
        raise HwoptError(f"device profile {path}: preferred_runtime {prof.preferred_runtime} is not in runtimes")
    if prof.name != path.stem:
        raise HwoptError(f"device profile {path}: name {prof.name!r} must match the file name {path.stem!r}")
    return prof


def list_devices(devices_dir: str | os.PathLike | None = None) -> dict[str, DeviceProfile]:
    """All profiles by name; earlier search dirs override later ones."""
    found: dict[str, DeviceProfile] = {}
    for d in reversed(devices_dirs(devices_dir)):
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")):
                found[f.stem] = _load_file(f)
    return dict(sorted(found.items()))


def load_device(name: str, devices_dir: str | os.PathLike | None = None) -> DeviceProfile:
    """The profile called `name`; an unknown name lists the valid ones."""
    for d in devices_dirs(devices_dir):
        f = d / f"{name}.yaml"
        if f.is_file():
            return _load_file(f)
    known = ", ".join(list_devices(devices_dir)) or "none"
    raise HwoptError(f"unknown target {name!r}; known targets: {known}")
