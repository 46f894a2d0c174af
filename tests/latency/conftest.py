"""Shared fixtures: small graphs built with the latency builder, one thread everywhere."""

from __future__ import annotations

import pytest

from hwopt.latency.builders import GraphBuilder


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


def residual_net(int8: bool = False, res: int = 16):
    """Conv+BN+Relu, residual Conv+Add+Relu, depthwise + HardSwish, Swish, SE-style Mul, pool, Gemm."""
    g = GraphBuilder((1, 8, res, res), int8=int8)
    x = g.conv(g.input, 16, 3, bn=not int8, act="Relu")
    y = g.conv(x, 16, 3, bn=not int8, act="Relu", residual=x)
    y = g.conv(y, 16, 3, 2, g=16, act="HardSwish")
    y = g.act(y, "Swish")
    y = g.mul(y, g.global_pool(y))
    return g.build([g.gemm(g.flatten(g.global_pool(y)), 10)])


@pytest.fixture
def make_net():
    return residual_net


@pytest.fixture
def net():
    return residual_net()


@pytest.fixture
def net_int8():
    return residual_net(int8=True)
