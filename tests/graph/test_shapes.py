"""Concrete input shapes: dynamic batch means 1; other dynamic dims need --shape and are named when missing."""

from __future__ import annotations

import numpy as np
import pytest

from hwopt.errors import HwoptError
from hwopt.graph.shapes import infer_shapes, parse_shape_options, random_inputs, resolve_input_shapes, value_shapes


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
