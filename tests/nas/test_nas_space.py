"""Elastic space of an ONNX model: widths as importance prefixes, skippable blocks, resolutions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hwopt.errors import HwoptError
from hwopt.models.export import export_onnx
from hwopt.models.zoo import resnet_basic
from hwopt.nas.space import OnnxProblem, OnnxSpace
from hwopt.runtimes import get_runtime


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "resnet.onnx"
    return path, export_onnx(resnet_basic(width=0.5).eval(), path, (1, 3, 32, 32))


@pytest.fixture(scope="module")
def space(resnet):
    return OnnxSpace(resnet[1])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return get_runtime("onnxruntime").session(model).run({model.graph.input[0].name: x})[0]


def _full(space) -> dict:
    return space.decode(np.array([g.n - 1 for g in space.genes]))


def test_space_has_widths_blocks_and_resolutions(space):
    assert len(space.groups) >= 3 and len(space.blocks) >= 3
    assert len(space.res) >= 2 and space.res[-1] == (32, 32)
    assert space.genes[0].name == "resolution"


def test_full_config_is_the_original_model(space, resnet):
    cfg = _full(space)
    assert cfg["widths"] == {} and cfg["skip"] == []
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(_run(space.extract(cfg), x), _run(resnet[1], x), atol=1e-5)


def test_widths_are_importance_prefixes(space):
    for i in range(len(space.groups)):
        small, mid = set(space.kept(i, 0.5)), set(space.kept(i, 0.75))
        assert small < mid or small == mid


def test_smallest_subnet_is_valid_smaller_and_runs(space, resnet):
    row = np.zeros(len(space.genes), dtype=np.int64)
    cfg = space.decode(row)
    assert cfg["skip"] and cfg["widths"]
    sub = space.extract(cfg)
    onnx.checker.check_model(sub, full_check=True)
    size = lambda m: sum(int(np.prod(t.dims)) for t in m.graph.initializer)  # noqa: E731
    assert size(sub) < 0.5 * size(resnet[1]) and len(sub.graph.node) < len(resnet[1].graph.node)
    h, w = space.res[0]
    out = _run(sub, np.zeros((1, 3, h, w), np.float32))
    assert out.shape == (1, 10)


def test_encode_decode_roundtrip_and_bad_config(space):
    rng = np.random.default_rng(0)
    for _ in range(10):
        row = np.array([rng.integers(g.n) for g in space.genes])
        assert np.array_equal(space.encode(space.decode(row)), row)
    with pytest.raises(HwoptError, match="does not fit"):
        space.encode({"resolution": [31, 31]})


def test_fixed_size_classifier_gets_no_resolution_choice(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 4)).eval()
    proto = export_onnx(net, tmp_path / "flat.onnx", (1, 3, 16, 16))
    assert OnnxSpace(proto).res == [(16, 16)]


def test_problem_measures_agreement_without_labels(resnet, tmp_path):
    x = np.random.default_rng(1).standard_normal((12, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", input=x)
    prob = OnnxProblem(resnet[0], eval_data=tmp_path / "eval.npz")
    assert prob.metric == "top1_agreement"
    assert prob.accuracy(_full(prob.space)) == 100.0
    with pytest.raises(HwoptError, match="--eval"):
        OnnxProblem(resnet[0])
