"""Per-kernel roofline model with per-op-family efficiency and thread scaling, and their fitting.

For a device without hardware here, a kernel's time is the larger of its compute time (FLOPs at
a fraction of one core's peak, the fraction depending on the op family: dense 3x3 convs reach
far more of peak than depthwise ones) and its memory time (bytes at a fraction of the memory
bandwidth), plus a per-kernel dispatch cost. With more threads, compute speeds up by
`1 + (T - 1) * parallel[family]` (a Pi 4 runs MobileNet only 2.2x faster on 4 cores than on 1:
small layers do not split well), memory bandwidth by `1 + (T - 1) * memory_parallel` (one shared
bus), and every kernel pays `sync_ms` per extra thread (the fork/join of the thread pool). The
factors are fitted to real measurements (published Raspberry Pi 4 / Pixel 3 sets, or this
machine's profiled kernels), so the model is "calibrated analytical", and the fit quality is
reported with the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from hwopt.devices import DeviceProfile
from hwopt.latency.kernels import FAMILIES, Kernel

#: starting guesses (fraction of one core's peak compute) before calibration; also used uncalibrated.
#: Pools and elementwise ops get one too, so a fit can price them apart from the one shared memory
#: efficiency (NAS-Bench-201 cells are full of them; on the rpi4 sets this lowered the cross-validated error).
DEFAULT_EFFICIENCY = {"conv": 0.45, "pwconv": 0.4, "dwconv": 0.08, "gemm": 0.3, "pool": 0.05, "eltwise": 0.05}
#: dense kxk convs may beat their direct-convolution FLOPs (Winograd: 2.25x fewer multiplies for 3x3)
MAX_EFFICIENCY = {"conv": 3.0}
#: measured tables may fit an effective bandwidth above the device's DRAM figure: a model run over and
#: over reads most of its weights and activations from L2/L3 (here a 1x1 conv on a 2x2 map with 0.8 MB of
#: weights streams them at ~42 GB/s, twice the profile's 20 GB/s). Published calibration sets keep 1.
CACHED_MEMORY_EFFICIENCY = 8.0
#: families whose thread scaling is fitted apart (the others scale like memory traffic)
PARALLEL_FAMILIES = ("conv", "pwconv", "dwconv", "gemm")
#: families that may get a dispatch cost of their own on top of the shared one: standalone activations,
#: pools and adds are cheap in bytes but each is a separate interpreter op in LiteRT
OVERHEAD_FAMILIES = ("pool", "eltwise", "act", "gpool", "norm", "concat", "move")


@dataclass
class Roofline:
    """Fitted factors; `efficiency` is per op family, the rest are shared by all kernels.

    Efficiencies are fractions of one core's peak on a CPU whose table has a thread count (of the
    whole device's peak otherwise, and on GPUs). Defaults of the thread terms reproduce tables
    written before they existed: perfect compute scaling, thread-independent memory, no sync cost.
    """

    efficiency: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EFFICIENCY))
    memory_efficiency: float = 0.5
    kernel_overhead_ms: float = 0.01
    model_overhead_ms: float = 0.05
    # narrow layers do not fill the vector units / register tiles: dense-family efficiency is scaled
    # by c / (c + channel_half), c = min(input channels per group, output channels)
    channel_half: float = 0.0
    # the same for dense kxk convs when fitted apart (None: channel_half): small 3x3 convs run far
    # below peak and large ones (Winograd, big register tiles) far above, unlike 1x1 convs
    conv_channel_half: float | None = None
    threads: int | None = None  # the thread count predictions use unless the caller names one
    source_scales: list[float] = field(default_factory=lambda: [1.0])  # speed of each calibration source vs the table
    parallel: dict[str, float] = field(default_factory=dict)  # per family, fraction of each extra thread used (1.0)
    memory_parallel: float = 0.0  # bandwidth gained per extra thread, as a fraction of the 1-thread bandwidth
    sync_ms: float = 0.0  # per kernel and extra thread
    family_overhead_ms: dict[str, float] = field(default_factory=dict)  # per family, on top of kernel_overhead_ms

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Roofline:
        return cls(**d)


@dataclass
class Terms:
    """Per kernel: ideal compute ms on one core (all cores when `threads` is None), ideal memory ms
    at full bandwidth, family index, the channel width that limits a dense kernel's vectorization
    (inf for other families) and the thread count it runs at (1 when None)."""

    comp: np.ndarray
    mem: np.ndarray
    fam: np.ndarray
    chan: np.ndarray
    threads: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[Terms]) -> Terms:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("comp", "mem", "fam", "chan", "threads")))


def _peaks(device: DeviceProfile, dtype: str, threads: int | None) -> tuple[float, float]:
    """(ops per ms of one core, or of the device when `threads` is None or on a GPU; bytes per ms)."""
    peak = device.peak.fp32_gops
    if dtype == "int8" and device.peak.int8_gops:
        peak = device.peak.int8_gops
    elif dtype == "fp16" and device.peak.fp16_gops:
        peak = device.peak.fp16_gops
    share = 1 / device.cpu.cores if threads and device.kind == "cpu" else 1.0
    return peak * 1e6 * share, device.memory.bandwidth_gbs * 1e6


def kernel_terms(kernels: Sequence[Kernel], device: DeviceProfile, threads: int | None) -> Terms:
    """The roofline's inputs for `kernels` run with `threads` (capped at the device's cores)."""
    comp = np.empty(len(kernels))
    mem = np.empty(len(kernels))
    fam = np.empty(len(kernels), dtype=np.int64)
    chan = np.full(len(kernels), np.inf)
    for i, k in enumerate(kernels):
        ops_ms, bytes_ms = _peaks(device, k.dtype, threads)
        comp[i] = k.flops / ops_ms
        mem[i] = k.bytes_moved / bytes_ms
        fam[i] = FAMILIES.index(k.family)
        if k.family in ("conv", "pwconv", "gemm") and k.weight is not None:
            chan[i] = min(k.weight[0], k.weight[1]) if len(k.weight) >= 2 else k.weight[0]
    t = min(threads, device.cpu.cores) if threads and device.kind == "cpu" else 1
    return Terms(comp, mem, fam, chan, np.full(len(kernels), float(t)))


def _per_family(values: dict[str, float], default: float) -> np.ndarray:
    return np.array([values.get(f, default) for f in FAMILIES])


def roofline_ms(terms: Terms, r: Roofline) -> np.ndarray:
    """Per-kernel milliseconds from precomputed terms (vectorized: the search calls this a lot)."""
    fam, extra = terms.fam, terms.threads - 1
    eff = _per_family(r.efficiency, 1.0)[fam]
    if r.channel_half > 0 or r.conv_channel_half:
        dense = np.isfinite(terms.chan)
        c = np.where(dense, terms.chan, 1.0)
        half = np.full(len(fam), r.channel_half)
        if r.conv_channel_half is not None:
            half[fam == FAMILIES.index("conv")] = r.conv_channel_half
        eff = np.where(dense, eff * c / (c + half), eff)
    comp = terms.comp / (eff * (1 + extra * _per_family(r.parallel, 1.0)[fam]))
    mem = terms.mem / (r.memory_efficiency * (1 + extra * r.memory_parallel))
    overhead = r.kernel_overhead_ms + _per_family(r.family_overhead_ms, 0.0)[fam] + extra * r.sync_ms
    return np.maximum(comp, mem) + overhead


def kernels_ms(kernels: Sequence[Kernel], device: DeviceProfile, r: Roofline, threads: int | None = None) -> np.ndarray:
    """Per-kernel ms at `threads` (default: the table's own thread count)."""
    return roofline_ms(kernel_terms(kernels, device, threads or r.threads), r)


def model_totals(terms: Terms, owner: np.ndarray, n_models: int, r: Roofline) -> np.ndarray:
    """Whole-model ms: kernel sums per `owner` index plus the per-model overhead."""
    return np.bincount(owner, weights=roofline_ms(terms, r), minlength=n_models) + r.model_overhead_ms


def fit_roofline(
    models: Sequence[Sequence[Kernel]],
    measured_ms: Sequence[float],
    device: DeviceProfile,
    *,
    threads: int | None = None,
    per_kernel: bool = False,
    sources: Sequence[int] | None = None,
    conv_half: bool = False,
    max_memory_efficiency: float = 1.0,
) -> Roofline:
    """Fit a roofline to whole-model (or, with `per_kernel`, single-kernel) measurements at one
    thread count; see `fit_terms` for the fit itself."""
    terms = kernel_terms([k for m in models for k in m], device, threads)
    owner = np.repeat(np.arange(len(models)), [len(m) for m in models])
    r = fit_terms(terms, owner, measured_ms, sources=sources, conv_half=conv_half, per_kernel=per_kernel,
                  max_memory_efficiency=max_memory_efficiency)
    r.threads = threads
    return r


def fit_terms(
    terms: Terms,
    owner: np.ndarray,
    measured_ms: Sequence[float],
    *,
    sources: Sequence[int] | None = None,
    conv_half: bool = False,
    per_kernel: bool = False,
    family_overheads: bool = False,
    model_of_row: np.ndarray | None = None,
    weights: Sequence[float] | None = None,
    max_memory_efficiency: float = 1.0,
) -> Roofline:
    """Fit efficiencies, overheads and thread scaling so that predicted totals match measured ones
    in log space.

    `owner` maps each kernel of `terms` to its model (kernels may run at different thread counts
    and clocks: `terms` carries them); `model_of_row` maps each measurement to its model when
    several measurements share one (NAS-Bench-201 has about 500 distinct networks in 7800 archs,
    so the fit prices each once). `weights` (per measurement) let a few rows of one kind count as
    much as many of another. Relative (log) error is minimized because latencies
    span orders of magnitude and ranking is what a search needs. `sources` (an index per model,
    0 = the reference) lets data measured under other, unknown settings (runtime, version, board)
    share the per-family shape of the model while getting their own overall speed factor, returned
    in `Roofline.source_scales`. `conv_half` fits the dense kxk convs' channel saturation apart
    from the 1x1 convs' and GEMMs'; `family_overheads` gives pools, activations, adds, ... a
    dispatch cost of their own. Thread terms are fitted only when the data has more than one thread
    count. A family whose FLOPs barely vary across the models cannot be told apart from the
    overheads and keeps its default. `max_memory_efficiency` bounds the effective bandwidth as a
    multiple of the device's DRAM figure (above 1 only for kernels timed in models that repeat
    from cache, see `CACHED_MEMORY_EFFICIENCY`).
    """
    from scipy.optimize import least_squares

    y = np.log(np.asarray(measured_ms, dtype=float))
    rows = np.arange(len(y)) if model_of_row is None else np.asarray(model_of_row)
    n_models = int(rows.max()) + 1
    w = np.ones(len(y)) if weights is None else np.sqrt(np.asarray(weights, dtype=float))
    src = np.zeros(len(y), dtype=np.int64) if sources is None else np.asarray(sources, dtype=np.int64)
    base = Roofline()

    def varies(values: np.ndarray) -> bool:
        per_model = np.bincount(owner, weights=values, minlength=n_models)[rows]
        return bool(per_model.mean() > 0 and per_model.std() / per_model.mean() > 0.05)

    fams = [f for f in DEFAULT_EFFICIENCY if varies(terms.comp * (terms.fam == FAMILIES.index(f)))]
    multi = len(np.unique(terms.threads)) > 1
    par = [f for f in PARALLEL_FAMILIES if multi and varies(terms.comp * (terms.fam == FAMILIES.index(f))
                                                                       * (terms.threads > 1))]
    fo = [f for f in OVERHEAD_FAMILIES if family_overheads and varies((terms.fam == FAMILIES.index(f)) * 1.0)]
    # parameter layout: [log eff per fam][log mem_eff, log kernel_overhead][log model_overhead]?
    # [log source scales 1..][log conv_half]?[log channel_half][parallel per fam][memory_parallel, log sync]?
    # [log family overheads]
    layout = [("eff", len(fams)), ("core", 2), ("mo", 0 if per_kernel else 1), ("src", int(src.max())),
              ("conv", 1 if conv_half else 0), ("half", 1), ("par", len(par)), ("thr", 2 if multi else 0),
              ("fo", len(fo))]
    cuts = np.cumsum([0] + [n for _, n in layout])
    part = {name: slice(cuts[i], cuts[i + 1]) for i, (name, _) in enumerate(layout)}

    def unpack(p: np.ndarray) -> Roofline:
        r = Roofline.from_dict(base.to_dict())
        r.efficiency.update({f: float(np.exp(v)) for f, v in zip(fams, p[part["eff"]])})
        r.memory_efficiency, r.kernel_overhead_ms = (float(np.exp(v)) for v in p[part["core"]])
        r.model_overhead_ms = float(np.exp(p[part["mo"]][0])) if not per_kernel else 0.0
        r.source_scales = [1.0] + [float(np.exp(v)) for v in p[part["src"]]]
        r.conv_channel_half = float(np.exp(p[part["conv"]][0])) if conv_half else base.conv_channel_half
        r.channel_half = float(np.exp(p[part["half"]][0]))
        r.parallel = {**base.parallel, **{f: float(v) for f, v in zip(par, p[part["par"]])}}
        if multi:
            r.memory_parallel, r.sync_ms = float(p[part["thr"]][0]), float(np.exp(p[part["thr"]][1]))
        r.family_overhead_ms = {**base.family_overhead_ms, **{f: float(np.exp(v)) for f, v in zip(fo, p[part["fo"]])}}
        return r

    def residual(p: np.ndarray) -> np.ndarray:
        r = unpack(p)
        return (np.log(model_totals(terms, owner, n_models, r)[rows] * np.asarray(r.source_scales)[src]) - y) * w

    def clip(v: float, lo: float, hi: float) -> float:
        return min(max(v, lo * 1.001), hi * 0.999)

    spec = (  # (start, low, high, log-scaled) per parameter, in layout order
        [(clip(base.efficiency.get(f, DEFAULT_EFFICIENCY[f]), 1e-4, MAX_EFFICIENCY.get(f, 1.0)), 1e-4,
          MAX_EFFICIENCY.get(f, 1.0), True) for f in fams]
        + [(clip(base.memory_efficiency, 1e-3, max_memory_efficiency), 1e-3, max_memory_efficiency, True),
           (clip(base.kernel_overhead_ms, 1e-6, 10.0), 1e-6, 10.0, True)]
        + [(clip(base.model_overhead_ms, 1e-6, 100.0), 1e-6, 100.0, True)] * (0 if per_kernel else 1)
        + [(1.0, 1e-2, 1e2, True)] * int(src.max())
        + [(clip(base.conv_channel_half or 64.0, 1e-2, 1e5), 1e-2, 1e5, True)] * (1 if conv_half else 0)
        + [(clip(base.channel_half or 8.0, 1e-2, 1e4), 1e-2, 1e4, True)]
        + [(clip(base.parallel.get(f, 0.6), 0.0, 1.0), 0.0, 1.0, False) for f in par]
        + ([(0.3, 0.0, 1.0, False), (1e-3, 1e-6, 1.0, True)] if multi else [])
        + [(clip(base.family_overhead_ms.get(f, 1e-3), 1e-6, 1.0), 1e-6, 1.0, True) for f in fo]
    )
    p0, lo, hi = (np.array([np.log(s[i]) if s[3] else s[i] for s in spec]) for i in (0, 1, 2))
    sol = least_squares(residual, np.clip(p0, lo + 1e-9, hi - 1e-9), bounds=(lo, hi), loss="soft_l1", f_scale=0.2)
    return unpack(sol.x)
