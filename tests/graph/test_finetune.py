"""kd_finetune recovers a damaged student towards its teacher, deterministically."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from hwopt.data import Dataset
from hwopt.errors import HwoptError
from hwopt.graph.finetune import distillation_loss, kd_finetune
from hwopt.graph.normalize import normalize_model

torch.set_num_threads(1)


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = ((d.images / 16.0 - 0.3) / 0.4).astype(np.float32)[:, None]
    return x, d.target.astype(np.int64)


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(256, 10))


def to_onnx(net: nn.Module, path) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return normalize_model(onnx.load(str(path)))


def predict(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    x, y = digits()
    torch.manual_seed(0)
    net = small_cnn()
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    xt, yt = torch.from_numpy(x[:1200]), torch.from_numpy(y[:1200])
    for _ in range(8):
        for i in range(0, 1200, 100):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[i : i + 100]), yt[i : i + 100]).backward()
            opt.step()
    teacher = to_onnx(net, tmp_path_factory.mktemp("t") / "t.onnx")
    # damage the student (as aggressive pruning or quantization would): noise on every weight matrix
    rng = np.random.default_rng(0)
    student = onnx.ModelProto()
    student.CopyFrom(teacher)
    for t in student.graph.initializer:
        w = numpy_helper.to_array(t)
        if w.ndim > 1:
            t.CopyFrom(numpy_helper.from_array(w + rng.standard_normal(w.shape).astype(np.float32) * w.std(), t.name))
    train = Dataset({"x": x[:600]}, y[:600], "train")
    test = (x[1200:], y[1200:])
    return teacher, student, train, test


def accuracy(model: onnx.ModelProto, test) -> float:
    return float((predict(model, test[0]).argmax(1) == test[1]).mean() * 100)


def test_kd_with_labels_recovers_accuracy(setup) -> None:
    teacher, student, train, test = setup
    before = accuracy(student, test)
    tuned = kd_finetune(student, teacher, train, epochs=4, lr=3e-3, quiet=True)
    after = accuracy(tuned, test)
    assert accuracy(teacher, test) > 85
    assert after > before + 10 and after > accuracy(teacher, test) - 5, (before, after)
    # only weights changed: same graph, same initializer names and dtypes
    assert [n.op_type for n in tuned.graph.node] == [n.op_type for n in student.graph.node]
    assert {(t.name, t.data_type) for t in tuned.graph.initializer} == {(t.name, t.data_type) for t in student.graph.initializer}


def test_pure_kd_without_labels_is_deterministic(setup) -> None:
    teacher, student, train, test = setup
    unlabeled = Dataset(train.inputs, None, "unlabeled")
    a = kd_finetune(student, teacher, unlabeled, epochs=2, lr=3e-3, seed=1, quiet=True)
    b = kd_finetune(student, teacher, unlabeled, epochs=2, lr=3e-3, seed=1, quiet=True)
    for ta, tb in zip(a.graph.initializer, b.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(ta), numpy_helper.to_array(tb))
    agree_before = (predict(student, test[0]).argmax(1) == predict(teacher, test[0]).argmax(1)).mean()
    agree_after = (predict(a, test[0]).argmax(1) == predict(teacher, test[0]).argmax(1)).mean()
    assert agree_after > agree_before


def test_loss_terms() -> None:
    s = torch.tensor([[2.0, 0.0, -1.0]])
    assert float(distillation_loss([s], [s.clone()], None, temperature=2.0, kd_weight=0.5, ce_weight=0.5)) == pytest.approx(0, abs=1e-6)
    t = torch.tensor([[0.0, 2.0, -1.0]])
    kd = float(distillation_loss([s], [t], None, temperature=2.0, kd_weight=0.5, ce_weight=0.5))
    p, q = torch.softmax(t / 2, 1), torch.softmax(s / 2, 1)
    assert kd == pytest.approx(float((p * (p.log() - q.log())).sum() * 4), rel=1e-5)
    labels = torch.tensor([1])
    both = float(distillation_loss([s], [t], labels, temperature=2.0, kd_weight=0.5, ce_weight=0.5))
    assert both == pytest.approx(0.5 * kd + 0.5 * float(nn.functional.cross_entropy(s, labels)), rel=1e-5)
    feat = torch.randn(2, 3, 4)
    assert float(distillation_loss([feat], [feat + 1], None, temperature=2.0, kd_weight=1, ce_weight=0)) == pytest.approx(1.0)


def test_bad_options(setup) -> None:
    teacher, student, train, _ = setup
    for kwargs, msg in (({"lr": 0}, "learning rate"), ({"temperature": -1}, "temperature"), ({"batch_size": 0}, "batch size"),
                        ({"alpha": 2.0}, "loss weights")):
        with pytest.raises(HwoptError, match=msg):
            kd_finetune(student, teacher, train, quiet=True, **kwargs)
    with pytest.raises(HwoptError, match="lacks model input"):
        kd_finetune(student, teacher, Dataset({"z": train.inputs["x"]}, None, "bad"), quiet=True)
