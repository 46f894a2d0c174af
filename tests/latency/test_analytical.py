"""Roofline fitting recovers known efficiencies; the calibration graphs build and cut correctly."""

from __future__ import annotations

import numpy as np
import pytest

from hwopt.devices import load_device
from hwopt.latency import extract_kernels
from hwopt.latency.analytical import CACHED_MEMORY_EFFICIENCY, Roofline, fit_roofline, kernels_ms
from hwopt.latency.kernels import Kernel
from hwopt.latency.archs import fbnet, mobilenet_v2, nb201


def test_fit_recovers_the_efficiencies_that_generated_the_data(make_net):
    dev = load_device("rpi4")
    truth = Roofline({"conv": 0.3, "pwconv": 0.2, "dwconv": 0.05, "gemm": 0.1}, 0.4, 0.02, 0.3)
    models = [extract_kernels(make_net(res=r), "litert") for r in (8, 12, 16, 24, 32, 48, 64)]
    models += [extract_kernels(nb201(c), "litert") for c in ("333333", "222222", "444444", "310320", "123412")]
    y = [kernels_ms(m, dev, truth).sum() + truth.model_overhead_ms for m in models]
    fit = fit_roofline(models, y, dev)
    pred = [kernels_ms(m, dev, fit).sum() + fit.model_overhead_ms for m in models]
    np.testing.assert_allclose(pred, y, rtol=0.03)
    assert fit.efficiency["conv"] == pytest.approx(0.3, rel=0.15)


def test_a_measured_fit_may_find_cache_bandwidth_above_the_dram_figure():
    """1x1 convs on 2x2 maps are weight streams: timed in a model that repeats from cache they run
    at 2.5x the device's DRAM bandwidth. Capped at the DRAM figure (published sets) the fit cannot
    follow; with the cached ceiling the profiler uses, it finds the bandwidth and prices them."""
    dev = load_device("x86-avx512")
    truth = Roofline({"pwconv": 0.6}, memory_efficiency=2.5, kernel_overhead_ms=0.002)
    kernels = [[Kernel("Conv", ((1, c_in, hw, hw),), (1, c_out, hw, hw), (c_out, c_in, 1, 1), (1, 1))]
               for c_in, c_out in ((80, 480), (160, 1280), (480, 160), (288, 80), (64, 512), (1024, 256))
               for hw in (1, 2)]
    kernels += [[Kernel("Conv", ((1, c, hw, hw),), (1, c, hw, hw), (c, c, 1, 1), (1, 1))]
                for c in (64, 128, 256) for hw in (16, 28, 32)]  # compute-bound: they pin the efficiency
    y = [kernels_ms(k, dev, truth).sum() for k in kernels]
    capped = fit_roofline(kernels, y, dev, per_kernel=True)
    cached = fit_roofline(kernels, y, dev, per_kernel=True, max_memory_efficiency=CACHED_MEMORY_EFFICIENCY)
    assert capped.memory_efficiency <= 1.0
    assert cached.memory_efficiency == pytest.approx(2.5, rel=0.1)
    err = [abs(kernels_ms(k, dev, cached).sum() / t - 1) for k, t in zip(kernels, y)]
    assert max(err) < 0.05
    assert max(abs(kernels_ms(k, dev, capped).sum() / t - 1) for k, t in zip(kernels, y)) > 0.3


def test_nb201_cells_drop_dead_edges_and_degenerate_archs():
    assert nb201("000000") is None  # every edge is `none`: the output is zeros
    full = extract_kernels(nb201("333333"), "litert")
    # 6 conv3x3 edges per cell, 15 cells, + stem + 2x(2 convs + 1x1 shortcut)
    assert sum(k.op == "Conv" for k in full) == 6 * 15 + 1 + 2 * 3
    # node 1 reaches nothing (2<-1, 3<-1 are none) and node 2 gets nothing: only the 3<-0 conv is real
    cut = extract_kernels(nb201("300303"), "litert")
    assert sum(k.op == "Conv" for k in cut) == 15 + 1 + 2 * 3


def test_reference_networks_have_their_published_macs():
    macs = sum(k.macs for k in extract_kernels(mobilenet_v2(), "litert") if k.op in ("Conv", "Gemm"))
    assert macs == pytest.approx(300e6, rel=0.03)  # MobileNetV2 1.0 at 224: ~300M MACs
    assert len(extract_kernels(fbnet([8] * 22), "litert")) > 5
