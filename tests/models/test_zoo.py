"""Every zoo model exports at opsets 13 and 17 and onnxruntime reproduces torch's outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from hwopt.errors import HwoptError  # noqa: E402
from hwopt.models import ZOO, build, export_onnx  # noqa: E402
from hwopt.models.zoo import resnet18, scaled  # noqa: E402


def randomize_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so a wrong BN folding in the exporter shows in the outputs."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def ort_run(path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_exports_and_matches_torch(name: str, opset: int, tmp_path) -> None:
    model, shape = build(name)
    randomize_batchnorm(model)
    path = tmp_path / f"{name}.onnx"
    proto = export_onnx(model, path, shape, opset=opset)

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert proto.opset_import[0].version == opset
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(0).standard_normal((2, *shape[1:])).astype(np.float32)  # batch 2: dynamic batch works
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = ort_run(path, x)
    assert got.shape == expected.shape
    assert np.abs(expected).max() > 1e-3, "outputs too small to compare meaningfully"
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


def test_export_leaves_module_in_training_mode_untouched(tmp_path) -> None:
    model, shape = build("resnet_basic")
    model.train()
    export_onnx(model, tmp_path / "m.onnx", shape, dynamic_batch=False)
    assert model.training
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}  # folded in eval mode


def test_width_scales_channels_and_full_resnet18_has_reference_size() -> None:
    params = sum(p.numel() for p in resnet18(num_classes=1000, width=1.0).parameters())
    assert params == 11_689_512  # torchvision's resnet18 parameter count
    assert scaled(64, 0.25) == 16 and scaled(24, 0.5) == 16 and scaled(3, 0.1) == 8


def test_build_is_deterministic_and_rejects_unknown_names() -> None:
    a, _ = build("mobilenet_v3")
    b, _ = build("mobilenet_v3")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(HwoptError, match="unknown zoo model"):
        build("vgg")
