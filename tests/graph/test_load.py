"""load_model turns every kind of broken or unsafe file into one HwoptError, and saves atomically."""

from __future__ import annotations

import os
import stat

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from hwopt.errors import HwoptError
from hwopt.graph.load import custom_ops, load_model, save_model


def test_valid_model_loads(tiny_model_path) -> None:
    model = load_model(tiny_model_path)
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu", "GlobalAveragePool", "Flatten"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        (b"", "empty"),
        (np.random.default_rng(0).bytes(4096), "not a valid ONNX model"),
        (b"hello, this is text and not a protobuf\n" * 10, "not a valid ONNX model"),
    ],
    ids=["missing", "empty", "random-bytes", "text"],
)
def test_bad_files_give_one_clear_error(tmp_path, content, message) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(HwoptError, match=message):
        load_model(path)


def test_folder_is_refused(tmp_path) -> None:
    with pytest.raises(HwoptError, match="folder"):
        load_model(tmp_path)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.97])
def test_truncated_model_is_refused(tiny_model_path, tmp_path, fraction) -> None:
    data = tiny_model_path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(HwoptError, match="model"):
        load_model(cut)


def _model_with_external_weights(folder, make_conv_model):
    """Save the tiny model with its weights in weights.bin next to it."""
    model = make_conv_model()
    path = folder / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return path


def test_external_data_inside_folder_loads(tmp_path, make_conv_model) -> None:
    path = _model_with_external_weights(tmp_path, make_conv_model)
    model = load_model(path)
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w"))
    np.testing.assert_array_equal(w, numpy_helper.to_array(make_conv_model().graph.initializer[0]))


def _point_external_data(path, location: str) -> None:
    model = onnx.load_model(str(path), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize("location", ["../weights.bin", "/etc/passwd", "sub/../../weights.bin"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, make_conv_model, location) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = _model_with_external_weights(folder, make_conv_model)
    os.replace(folder / "weights.bin", tmp_path / "weights.bin")  # the escaping path would really resolve
    _point_external_data(path, location)
    with pytest.raises(HwoptError, match="outside the model folder"):
        load_model(path)


def test_missing_external_file_is_refused(tmp_path, make_conv_model) -> None:
    path = _model_with_external_weights(tmp_path, make_conv_model)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(HwoptError, match="external data file 'weights.bin'.*missing"):
        load_model(path)


def test_checker_failure_is_one_line(tmp_path, make_conv_model) -> None:
    model = make_conv_model()
    model.graph.node[1].input[0] = "nonexistent"  # Relu reads a tensor nobody produces
    path = tmp_path / "broken.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(HwoptError, match="invalid ONNX model") as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_custom_ops_lists_unknown_domains_only(make_conv_model) -> None:
    model = make_conv_model()
    model.graph.node.append(helper.make_node("FancyOp", ["y"], ["z"], domain="com.acme"))
    model.graph.node.append(helper.make_node("Gelu", ["y"], ["g"], domain="com.microsoft"))
    model.opset_import.append(helper.make_opsetid("com.acme", 1))
    assert custom_ops(model) == ["com.acme::FancyOp"]


def test_save_model_is_atomic_and_readable(tmp_path, make_conv_model) -> None:
    path = save_model(make_conv_model(), tmp_path / "out" / "m.onnx")
    assert load_model(path).graph.node
    assert os.listdir(path.parent) == ["m.onnx"]  # no temporary file left behind
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o044 == 0o044 & ~_umask(), "saved files get normal (umask) permissions, not mkstemp's 0600"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

