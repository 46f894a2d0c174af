"""One interface over every inference runtime: open a session, run it, time it.

Adapters differ only in how they build a session; running and benchmarking are shared. Each
adapter says whether it is available here, so callers can skip a runtime with a clear reason
instead of crashing on an import.
"""

from __future__ import annotations

import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx

ModelLike = str | Path | onnx.ModelProto


class Session(ABC):
    """A loaded model ready to run on one runtime with fixed settings."""

    runtime: str
    precision: str  # the precision that actually runs (e.g. what OpenVINO reports), not only what was asked
    threads: int
    input_names: list[str]
    output_names: list[str]
    #: the inference runs on this process's CPU threads (False for a GPU: its CPU time says nothing)
    on_host_cpu: bool = True

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; outputs in `output_names` order."""


class Runtime(ABC):
    name: str
    #: file suffixes this runtime loads directly
    suffixes: tuple[str, ...] = (".onnx",)

    @abstractmethod
    def available(self) -> bool: ...

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def session(self, model: ModelLike, *, threads: int = 1, precision: str = "fp32") -> Session:
        """Build a session; raise HwoptError/NotAvailableError for input it cannot take."""


@dataclass
class BenchResult:
    runtime: str
    device: str
    threads: int
    runs: int
    warmup: int
    precision: str
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    version: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def host_device() -> str:
    """A short description of the machine the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({platform.machine()})"


K = TypeVar("K")

#: timing clocks: wall time, this process's CPU time, or CPU time where it is the latency (see `timing_clock`)
CLOCKS = ("wall", "cpu", "auto")


def timing_clock(session: Session) -> str:
    """The clock a session's latency is read from: "cpu" for 1 thread on this CPU, else "wall".

    With one intra-op thread an inference is one thread's work, so its process CPU time is what it
    would take on an idle core. On this shared, CPU-quota'd machine wall time also counts the time
    other people's jobs hold the core (a 1-thread YOLOv8n: 70 ms wall, 24 ms CPU), which is noise
    for choosing between candidates. Several threads overlap (CPU time adds up across them), and a
    GPU's work is not CPU time at all, so those keep the wall clock. Checked on an idle machine:
    onnxruntime and OpenVINO at 1 thread burn no helper-thread CPU (CPU <= wall, see docs/compress.md).
    """
    return "cpu" if session.threads == 1 and session.on_host_cpu else "wall"


def time_session(session: Session, feeds: dict[str, np.ndarray], *, warmup: int = 5, runs: int = 50,
                 clock: str = "wall") -> np.ndarray:
    """Milliseconds of each of `runs` timed calls after `warmup` untimed ones.

    `clock`: "wall" (elapsed time), "cpu" (this process's CPU time per call) or "auto"
    (`timing_clock(session)`: CPU time for 1-thread host sessions, wall time otherwise).
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    if clock == "auto":
        clock = timing_clock(session)
    now = time.process_time_ns if clock == "cpu" else time.perf_counter_ns
    for _ in range(warmup):
        session.run(feeds)
    times = np.empty(runs)
    for i in range(runs):
        t0 = now()
        session.run(feeds)
        times[i] = (now() - t0) / 1e6
    return times


def time_rounds(sessions: Mapping[K, Session], feeds: dict[str, np.ndarray], *, rounds: int, runs: int,
                warmup: int = 0, clock: str = "auto", seed: int = 0,
                keep_going: Callable[[int, float], bool] | None = None) -> dict[K, list[np.ndarray]]:
    """Each session's `time_session` times for every round, all sessions timed in every round.

    Interleaving makes a load change land on every session alike; the order is shuffled every
    round (seeded), because a session timed right after a big model starts with cold caches and a
    fixed order would hand that handicap to the same one each time. `keep_going(rounds_done,
    last_round_seconds)` may stop early (a wall-time budget).
    """
    names = list(sessions)
    per: dict[K, list[np.ndarray]] = {n: [] for n in names}
    rng = np.random.default_rng(seed)
    for done in range(rounds):
        t0 = time.perf_counter()
        for i in rng.permutation(len(names)):
            per[names[i]].append(time_session(sessions[names[i]], feeds, warmup=warmup, runs=runs, clock=clock))
        if keep_going is not None and not keep_going(done + 1, time.perf_counter() - t0):
            break
    return per


def summarize(times: np.ndarray, session: Session, *, warmup: int, version: str) -> BenchResult:
    return BenchResult(
        runtime=session.runtime,
        device=host_device(),
        threads=session.threads,
        runs=len(times),
        warmup=warmup,
        precision=session.precision,
        p50_ms=float(np.percentile(times, 50)),
        p90_ms=float(np.percentile(times, 90)),
        p99_ms=float(np.percentile(times, 99)),
        mean_ms=float(times.mean()),
        min_ms=float(times.min()),
        version=version,
    )
