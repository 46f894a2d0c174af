"""Per-kernel roofline model with per-op-family efficiency factors, and their fitting.

For a device without hardware here, a kernel's time is the larger of its compute time (FLOPs at
a fraction of the device's peak, the fraction depending on the op family: dense 3x3 convs reach
far more of peak than depthwise ones) and its memory time (bytes at a fraction of the memory
bandwidth), plus a fixed per-kernel dispatch cost. The fractions are fitted to real
measurements (published Raspberry Pi 4 / Pixel 3 sets, or this machine's profiled kernels), so
the model is "calibrated analytical", and the fit quality is reported with the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from hwopt.devices import DeviceProfile
from hwopt.latency.kernels import FAMILIES, Kernel

#: starting guesses (fraction of peak compute) before calibration; also used uncalibrated. Pools and
#: elementwise ops get one too, so a fit can price them apart from the one shared memory efficiency
#: (NAS-Bench-201 cells are full of them; on the rpi4 sets this lowered the cross-validated error).
DEFAULT_EFFICIENCY = {"conv": 0.45, "pwconv": 0.4, "dwconv": 0.08, "gemm": 0.3, "pool": 0.05, "eltwise": 0.05}


@dataclass
class Roofline:
    """Fitted factors; `efficiency` is per op family, the rest are shared by all kernels."""

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
    threads: int | None = None  # None: efficiencies are relative to the whole device's peak
    source_scales: list[float] = field(default_factory=lambda: [1.0])  # speed of each calibration source vs the table

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Roofline:
        return cls(**d)


def _peaks(device: DeviceProfile, dtype: str, threads: int | None) -> tuple[float, float]:
    """(ops per ms, bytes per ms) available to one inference at `threads`."""
    peak = device.peak.fp32_gops
    if dtype == "int8" and device.peak.int8_gops:
        peak = device.peak.int8_gops
    elif dtype == "fp16" and device.peak.fp16_gops:
        peak = device.peak.fp16_gops
    share = min(threads, device.cpu.cores) / device.cpu.cores if threads and device.kind == "cpu" else 1.0
    return peak * 1e6 * share, device.memory.bandwidth_gbs * 1e6


def kernel_terms(kernels: Sequence[Kernel], device: DeviceProfile, threads: int | None) -> tuple[np.ndarray, ...]:
    """Per kernel: ideal compute ms at 100% of peak, ideal memory ms at full bandwidth, family index,
    and the channel width that limits a dense kernel's vectorization (inf for other families)."""
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
    return comp, mem, fam, chan


def roofline_ms(terms: tuple[np.ndarray, ...], r: Roofline) -> np.ndarray:
    """Per-kernel milliseconds from precomputed terms (vectorized: the search calls this a lot)."""
    comp, mem, fam, chan = terms
    eff = np.array([r.efficiency.get(f, 1.0) for f in FAMILIES])[fam]
    if r.channel_half > 0 or r.conv_channel_half:
        dense = np.isfinite(chan)
        c = np.where(dense, chan, 1.0)
        half = np.full(len(fam), r.channel_half)
        if r.conv_channel_half is not None:
            half[fam == FAMILIES.index("conv")] = r.conv_channel_half
        eff = np.where(dense, eff * c / (c + half), eff)
    return np.maximum(comp / eff, mem / r.memory_efficiency) + r.kernel_overhead_ms


def kernels_ms(kernels: Sequence[Kernel], device: DeviceProfile, r: Roofline) -> np.ndarray:
    return roofline_ms(kernel_terms(kernels, device, r.threads), r)


def fit_roofline(
    models: Sequence[Sequence[Kernel]],
    measured_ms: Sequence[float],
    device: DeviceProfile,
    *,
    threads: int | None = None,
    per_kernel: bool = False,
    sources: Sequence[int] | None = None,
    conv_half: bool = False,
) -> Roofline:
    """Fit efficiencies and overheads so that predicted totals match measured ones in log space.

    `models` are kernel lists (one per measured network, or one kernel each with `per_kernel`,
    where the model overhead is not part of the measurement). Relative (log) error is minimized
    because latencies span orders of magnitude and ranking is what a search needs. `sources`
    (an index per model, 0 = the reference) lets data measured under other, unknown settings
    (thread count, runtime version) share the per-family shape of the model while getting their
    own overall speed factor, returned in `Roofline.source_scales`. `conv_half` fits the dense
    kxk convs' channel saturation apart from the 1x1 convs' and GEMMs'. A family whose FLOPs barely
    vary across the models cannot be told apart from the overheads and keeps its default.
    """
    from scipy.optimize import least_squares

    flat = [k for m in models for k in m]
    terms = kernel_terms(flat, device, threads)
    owner = np.repeat(np.arange(len(models)), [len(m) for m in models])
    y = np.log(np.asarray(measured_ms, dtype=float))
    src = np.zeros(len(models), dtype=np.int64) if sources is None else np.asarray(sources, dtype=np.int64)
    n_src = int(src.max()) + 1
    fams = []
    for f in DEFAULT_EFFICIENCY:
        per_model = np.bincount(owner, weights=terms[0] * (terms[2] == FAMILIES.index(f)), minlength=len(models))
        if per_model.mean() > 0 and per_model.std() / per_model.mean() > 0.05:
            fams.append(f)
    n_f = len(fams)
    n_mo = 0 if per_kernel else 1
    n_s = n_src - 1
    n_c = 1 if conv_half else 0

    def unpack(p: np.ndarray) -> Roofline:
        eff = dict(DEFAULT_EFFICIENCY)
        eff.update({f: float(np.exp(v)) for f, v in zip(fams, p[:n_f])})
        mo = float(np.exp(p[n_f + 2])) if n_mo else 0.0
        scales = [1.0] + [float(np.exp(v)) for v in p[n_f + 2 + n_mo:n_f + 2 + n_mo + n_s]]
        conv = float(np.exp(p[-2])) if n_c else None
        return Roofline(eff, float(np.exp(p[n_f])), float(np.exp(p[n_f + 1])), mo, float(np.exp(p[-1])), conv,
                        threads, scales)

    def residual(p: np.ndarray) -> np.ndarray:
        r = unpack(p)
        per = roofline_ms(terms, r)
        total = np.bincount(owner, weights=per, minlength=len(models)) + r.model_overhead_ms
        return np.log(total * np.asarray(r.source_scales)[src]) - y

    p0 = np.log([DEFAULT_EFFICIENCY[f] for f in fams] + [0.5, 0.01] + [0.05] * n_mo + [1.0] * n_s + [64.0] * n_c
                + [8.0])
    lo = np.log([1e-4] * n_f + [1e-3, 1e-6] + [1e-6] * n_mo + [1e-2] * n_s + [1e-2] * n_c + [1e-2])
    hi = np.log([1.0] * n_f + [1.0, 10.0] + [100.0] * n_mo + [1e2] * n_s + [1e5] * n_c + [1e4])
    sol = least_squares(residual, np.clip(p0, lo + 1e-9, hi - 1e-9), bounds=(lo, hi), loss="soft_l1", f_scale=0.2)
    return unpack(sol.x)
