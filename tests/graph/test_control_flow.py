"""Models whose network sits inside control flow (silero-vad: one If on an int64 scalar `sr`).

Before: `inspect` said 0 parameters (the weights are Constant nodes inside the branches),
`bench` refused with "onnxruntime cannot load the model" (fixing the input dims made the branch
not taken ill-typed), and generated inputs fed sr=0/1, which runs the wrong branch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort

from hwopt.graph.census import census, nested_nodes
from hwopt.graph.shapes import fix_input_shapes, random_inputs

_spec = importlib.util.spec_from_file_location("paddle_like", Path(__file__).with_name("paddle_like.py"))
paddle_like = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paddle_like)

SHAPES = {"input": (1, 512), "sr": ()}


def test_census_counts_branch_weights_and_flags_the_if() -> None:
    model = paddle_like.branchy_model()
    c = census(model, {"input": (1, 512)})
    assert c.params == paddle_like.BRANCHY_PARAMS
    assert c.weight_bytes == 4 * paddle_like.BRANCHY_PARAMS
    assert c.unresolved == ["If_0"]  # MACs depend on the branch taken: not counted, and said so
    assert next(n for n in c.nodes if n.op == "If").params == paddle_like.BRANCHY_PARAMS
    assert [n.op_type for n in nested_nodes(model.graph.node[2]) if n.op_type == "MatMul"] == ["MatMul", "MatMul"]


def test_generated_inputs_take_the_branch_the_graph_tests_for() -> None:
    model = paddle_like.branchy_model()
    feeds = random_inputs(model, SHAPES)
    assert feeds["sr"].shape == () and int(feeds["sr"]) == 16000
    assert feeds["sr"].dtype == np.int64


def test_fixed_shapes_leave_a_control_flow_model_loadable() -> None:
    model = paddle_like.branchy_model()
    fixed = fix_input_shapes(model, SHAPES)
    sess = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, random_inputs(model, SHAPES))
    assert y.shape == (1, 4) and np.isfinite(y).all()
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [0, 0]  # kept dynamic


def test_fixed_shapes_still_fix_a_plain_model() -> None:
    fixed = fix_input_shapes(paddle_like.paddle_like_model(), {"x": (1, 3, 48, 192)})
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 48, 192]
