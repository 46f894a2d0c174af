"""Concrete input shapes: dynamic batch means 1; other dynamic dims need --shape and are named when missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

from hwopt.errors import HwoptError
from hwopt.graph.shapes import (
    infer_shapes, parse_shape_options, probe_shapes, random_inputs, resolve_input_shapes, value_shapes,
)

_spec = importlib.util.spec_from_file_location("paddle_like", Path(__file__).with_name("paddle_like.py"))
paddle_like = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paddle_like)


def test_dynamic_batch_defaults_to_one(make_conv_model) -> None:
    assert resolve_input_shapes(make_conv_model()) == {"x": (1, 3, 8, 8)}


def test_dynamic_height_width_without_shape_names_the_dims(make_conv_model) -> None:
    model = make_conv_model(("N", 3, "height", "width"))
    with pytest.raises(HwoptError) as info:
        resolve_input_shapes(model)
    msg = str(info.value)
    assert "x[2] (height)" in msg and "x[3] (width)" in msg and "x[0]" not in msg
    assert "--shape" in msg


def test_given_shape_fixes_dynamic_dims_and_inference_follows(make_conv_model) -> None:
    model = make_conv_model(("N", 3, "height", "width"))
    shapes = resolve_input_shapes(model, parse_shape_options(["x=2x3x48x320"]))
    assert shapes == {"x": (2, 3, 48, 320)}
    inferred = value_shapes(infer_shapes(model, shapes))
    assert inferred["c"] == (2, 4, 48, 320) and inferred["y"] == (2, 4)
    feeds = random_inputs(model, shapes)
    assert feeds["x"].shape == (2, 3, 48, 320) and feeds["x"].dtype == np.float32


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["x=1x3x0x8"], "positive integers"),
        (["x1x3x8x8"], "NAME=DxDxD"),
        (["x=1xax8"], "NAME=DxDxD"),
        (["img=1x3x8x8"], "unknown input"),
        (["x=1x3x8"], "rank 3"),
        (["x=1x4x8x8"], "dim 1 is fixed to 3"),
    ],
)
def test_bad_shape_options_are_clear_errors(make_conv_model, options, message) -> None:
    with pytest.raises(HwoptError, match=message):
        resolve_input_shapes(make_conv_model(), parse_shape_options(options))


def test_data_samples_fix_dynamic_dims_at_batch_one(make_conv_model) -> None:
    model = make_conv_model(("N", 3, "height", "width"))
    data = {"x": np.zeros((5, 3, 48, 192), np.float32)}
    assert resolve_input_shapes(model, data=data) == {"x": (1, 3, 48, 192)}
    # an explicit --shape wins over the data
    assert resolve_input_shapes(model, {"x": (1, 3, 32, 64)}, data=data) == {"x": (1, 3, 32, 64)}
    with pytest.raises(HwoptError, match="data x: dim 1 is fixed to 3"):
        resolve_input_shapes(model, data={"x": np.zeros((5, 4, 48, 192), np.float32)})


@pytest.mark.parametrize(
    ("dims", "suggestion"),
    [(("N", 3, "height", "width"), "--shape x=1x3x224x224"), (("N", 3, 48, "width"), "--shape x=1x3x48x224")],
)
def test_missing_dims_error_suggests_a_complete_shape(make_conv_model, dims, suggestion) -> None:
    with pytest.raises(HwoptError) as info:
        resolve_input_shapes(make_conv_model(dims))
    msg = str(info.value)
    assert suggestion in msg and "N" not in msg.split("pass e.g.")[1].split("(")[0]
    # the suggestion is usable as it stands
    shape = suggestion.split()[1]
    assert resolve_input_shapes(make_conv_model(dims), parse_shape_options([shape]))["x"][1:] == (3, 48 if 48 in dims else 224, 224)


def test_declared_minus_one_dims_never_become_shapes() -> None:
    """paddle2onnx declares unknown dims as -1; inference must find the real size, never keep -1."""
    model = paddle_like.paddle_like_model()
    shapes = value_shapes(infer_shapes(model, {"x": (1, 3, 16, 16)}))
    assert all(d > 0 for shp in shapes.values() for d in shp)
    assert shapes.get("save_infer_model/scale_0.tmp_0", (1, 4)) == (1, 4)


def test_probe_shapes_reads_sizes_static_inference_cannot(make_conv_model) -> None:
    model = make_conv_model(("N", 3, "h", "w"))
    assert probe_shapes(model, {"x": (2, 3, 5, 7)}, ["c", "y"]) == {"c": (2, 4, 5, 7), "y": (2, 4)}


def test_random_inputs_cover_integer_and_bool_inputs() -> None:
    model = paddle_like.multi_input_model()
    feeds = random_inputs(model, resolve_input_shapes(model, {"ids": (1, 6), "mask": (1, 6)}))
    assert feeds["image"].dtype == np.uint8 and feeds["ids"].dtype == np.int64 and feeds["mask"].dtype == np.bool_
    assert feeds["ids"].shape == (1, 6) and feeds["ids"].min() >= 0

