"""OFA supernet: elastic kernels, channel sorting, extraction and export agree with the supernet."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hwopt.errors import HwoptError
from hwopt.nas.ofa import (
    OFAMobileNetV3,
    OFASpec,
    TrainSchedule,
    extract_subnet,
    largest_config,
    random_config,
    smallest_config,
    train_supernet,
    validate_config,
)
from hwopt.nas.ofa_space import OFASearchSpace, export_subnet

TINY = OFASpec(stem_width=8, widths=(8, 16), strides=(2, 2), acts=("relu", "hswish"), se=(False, True),
               final_width=32, mix_width=32, resolutions=(16, 24))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = OFAMobileNetV3(TINY)
    with torch.no_grad():  # non-trivial BN statistics and kernel transforms
        for m in n.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        for name, p in n.named_parameters():
            if "transforms" in name:
                p.add_(0.05 * torch.randn_like(p))
    return n.eval()


def test_fresh_kernel_transform_is_centre_crop():
    n = OFAMobileNetV3(TINY)
    dw = n.stages[0][1].dw
    assert torch.equal(dw.kernel(5, 4), dw.weight[:4, :, 1:6, 1:6])
    assert torch.allclose(dw.kernel(3, 4), dw.weight[:4, :, 2:5, 2:5])


@pytest.mark.parametrize("which", ["largest", "smallest", "random"])
def test_extracted_subnet_matches_supernet(net, which):
    cfg = {"largest": largest_config, "smallest": smallest_config}.get(which, lambda s: random_config(s, np.random.default_rng(1)))(TINY)
    x = torch.randn(3, 3, cfg["resolution"], cfg["resolution"])
    with torch.no_grad():
        assert torch.allclose(net(x, cfg), extract_subnet(net, cfg)(x), atol=1e-5)


def test_channel_sorting_keeps_the_largest_subnet_function(net):
    cfg = largest_config(TINY)
    x = torch.randn(2, 3, 24, 24)
    other = OFAMobileNetV3(TINY)
    other.load_state_dict(net.state_dict())
    other.eval().sort_channels()
    with torch.no_grad():
        assert torch.allclose(net(x, cfg), other(x, cfg), atol=1e-5)
    w = other.stages[1][1].project_conv.weight.abs().sum((0, 2, 3))
    assert bool((w[:-1] >= w[1:]).all())  # most important expanded channels first


def test_onnx_export_runs_like_torch(net, tmp_path):
    cfg = random_config(TINY, np.random.default_rng(2))
    sub = extract_subnet(net, cfg)
    export_subnet(sub, cfg["resolution"], tmp_path / "s.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, cfg["resolution"], cfg["resolution"])).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"input": x})[0], sub(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_space_encoding_roundtrip_and_features():
    space = OFASearchSpace(TINY)
    rng = np.random.default_rng(0)
    for _ in range(20):
        cfg = random_config(TINY, rng)
        row = space.encode(cfg)
        assert space.decode(row) == validate_config(TINY, cfg)
    pop = space.canonical(np.stack([space.encode(smallest_config(TINY)), space.encode(largest_config(TINY))]))
    f = space.features(pop)
    # smallest: 2 of 4 blocks active per stage -> 2 stages x 2 blocks x (1 kernel + 1 expand) ones
    # + resolution + one depth per stage
    assert f[0].sum() == 2 * 2 * 2 + 1 + 2 and f[1].sum() == 2 * 4 * 2 + 1 + 2
    depth_cols = f[:, len(space.res) : len(space.res) + 2 * len(space.depths)]
    assert depth_cols[0].tolist() == [1, 0, 0, 1, 0, 0] and depth_cols[1].tolist() == [0, 0, 1, 0, 0, 1]


@pytest.mark.parametrize("bad, msg", [
    ({"resolution": 20, "stages": [{"kernel": [3, 3], "expand": [3, 3]}] * 2}, "resolution 20"),
    ({"resolution": 16, "stages": [{"kernel": [9, 3], "expand": [3, 3]}] * 2}, "kernels must be"),
    ({"resolution": 16, "stages": [{"kernel": [3], "expand": [3]}] * 2}, "length in"),
    ({"resolution": 16}, "bad subnet config"),
])
def test_bad_configs_are_clear_errors(bad, msg):
    with pytest.raises(HwoptError, match=msg):
        validate_config(TINY, bad)


def test_progressive_shrinking_learns(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3, 24, 24)).astype(np.float32)
    y = (x[:, 0, :12].mean((1, 2)) > x[:, 0, 12:].mean((1, 2))).astype(np.int64)  # learnable: top vs bottom half
    sched = TrainSchedule(full=6, kernel=1, depth=1, expand=1, batch_size=32, subnets_per_step=1)
    logs = []
    net = train_supernet(TINY, x, y, schedule=sched, log=logs.append)
    assert len(logs) == 9 and all(p in " ".join(logs) for p in ("full", "kernel", "depth", "expand"))
    first, last_full = float(logs[0].split()[-1]), float(logs[5].split()[-1])
    assert last_full < first
