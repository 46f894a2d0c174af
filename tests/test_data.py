"""Image-folder data sets: preprocessing, labels from subfolders, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwopt.data import Preprocess, accuracy_metrics, load_dataset
from hwopt.errors import HwoptError

PIL = pytest.importorskip("PIL.Image")


def _model(dims: list, name: str = "x") -> onnx.ModelProto:
    """Identity model with one float input of `dims` (ints or symbols)."""
    g = helper.make_graph([helper.make_node("Identity", [name], ["y"])], "g",
                          [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _png(path, rgb: tuple[int, int, int], size: tuple[int, int] = (10, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.new("RGB", size, rgb).save(path)


def test_folder_nchw_rgb_mean_std_from_yaml(tmp_path):
    _png(tmp_path / "a.png", (255, 0, 51))
    _png(tmp_path / "b.jpg", (0, 255, 0))
    (tmp_path / "preprocess.yaml").write_text("mean: [0.5, 0.5, 0.5]\nstd: [0.5, 0.5, 0.5]\n")
    ds = load_dataset(tmp_path, _model(["N", 3, 4, 5]))
    x = ds.inputs["x"]
    assert x.shape == (2, 3, 4, 5) and x.dtype == np.float32 and ds.labels is None
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, -1.0, -0.6], atol=1e-6)  # (p/255 - .5) / .5, RGB order
    assert abs(x[1, 1].mean() - 1.0) < 0.05  # JPEG: green channel near full scale


def test_bgr_nhwc_options_override_file(tmp_path):
    _png(tmp_path / "a.png", (255, 0, 51))
    (tmp_path / "preprocess.json").write_text(json.dumps({"channels": "RGB", "scale": 1.0}))
    ds = load_dataset(tmp_path, _model([1, 6, 8, 3]), preprocess={"channels": "BGR"})
    x = ds.inputs["x"]
    assert x.shape == (1, 6, 8, 3)
    np.testing.assert_allclose(x[0, 0, 0], [51.0, 0.0, 255.0])  # BGR, scale 1 from the file


def test_labels_from_class_subfolders_and_grayscale(tmp_path):
    for cls, k in (("cat", 2), ("dog", 3)):
        for i in range(k):
            _png(tmp_path / cls / f"{i}.png", (i * 40, 0, 0))
    ds = load_dataset(tmp_path, _model(["N", 1, 8, 8]))
    assert ds.inputs["x"].shape == (5, 1, 8, 8)
    assert ds.labels.tolist() == [0, 0, 1, 1, 1]


def test_limit_spreads_over_classes(tmp_path):
    for cls in ("a", "b"):
        for i in range(4):
            _png(tmp_path / cls / f"{i}.png", (i, i, i))
    ds = load_dataset(tmp_path, _model(["N", 3, 4, 4]), preprocess=Preprocess(limit=2))
    assert len(ds) == 2 and sorted(ds.labels.tolist()) == [0, 1]


def test_dynamic_hw_needs_size(tmp_path):
    _png(tmp_path / "a.png", (1, 2, 3))
    with pytest.raises(HwoptError, match="give preprocess size"):
        load_dataset(tmp_path, _model(["N", 3, "H", "W"]))
    ds = load_dataset(tmp_path, _model(["N", 3, "H", "W"]), preprocess={"size": "48x96"})
    assert ds.inputs["x"].shape == (1, 3, 48, 96)


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "no images"),
    (lambda d: (d / "bad.png").write_bytes(b"not an image"), "cannot read image"),
    (lambda d: (_png(d / "a.png", (0, 0, 0)), (d / "preprocess.yaml").write_text("size: 9x9\n")), "does not match the model input height"),
    (lambda d: (_png(d / "a.png", (0, 0, 0)), (d / "preprocess.yaml").write_text("colour: RGB\n")), "unknown preprocess key"),
    (lambda d: (_png(d / "a.png", (0, 0, 0)), (d / "preprocess.yaml").write_text("channels: L\n")), "give 1 channel"),
    (lambda d: (_png(d / "a.png", (0, 0, 0)), _png(d / "c" / "b.png", (0, 0, 0))), "both at the top and in subfolders"),
])
def test_clear_errors(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(HwoptError, match=message):
        load_dataset(tmp_path, _model(["N", 3, 4, 4]))


def test_preprocess_options_refused_for_npz(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(HwoptError, match="image folders"):
        load_dataset(tmp_path / "d.npz", _model(["N", 3, 4, 4]), preprocess={"size": "4x4"})


def test_scalar_arrays_and_scalar_model_inputs_are_refused(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, input=np.zeros((4, 8), np.float32), sr=np.array(16000))
    with pytest.raises(HwoptError, match=r"\['sr'\] are scalars"):
        load_dataset(f)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x, sr], [y]))
    g = tmp_path / "g.npz"
    np.savez(g, x=np.zeros((4, 8), np.float32), sr=np.full(4, 16000))
    with pytest.raises(HwoptError, match="'sr' is a scalar"):
        load_dataset(g, model)


def test_unlabeled_multi_output_models_are_judged_on_every_output_not_the_first_argmax():
    rng = np.random.default_rng(0)
    boxes, probs = rng.normal(size=(50, 4)), rng.normal(size=(50, 2))
    nudged = boxes + rng.normal(scale=0.05, size=boxes.shape)  # tiny regression error, argmax flips often
    single = accuracy_metrics([nudged], None, [boxes])
    multi = accuracy_metrics([nudged, probs], None, [boxes, probs])
    assert single["metric"] == "top1_agreement"
    assert multi["metric"] == "cosine_x100" and multi["accuracy"] > 99.0 > single["accuracy"]
