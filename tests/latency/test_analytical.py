"""Roofline fitting recovers known efficiencies; the calibration graphs build and cut correctly."""

from __future__ import annotations

import numpy as np
import pytest

from hwopt.devices import load_device
from hwopt.latency import extract_kernels
from hwopt.latency.analytical import Roofline, fit_roofline, kernels_ms
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
