"""`hwopt inspect|bench` on inputs real models have: non-float and multiple inputs, dynamic dims
fixed by --shape or by --data, and an error whose suggested --shape can be pasted as it is."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from hwopt.cli import app
from hwopt.graph.load import save_model

_spec = importlib.util.spec_from_file_location("paddle_like", Path(__file__).parents[1] / "graph" / "paddle_like.py")
paddle_like = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paddle_like)

FAST = ["--warmup", "1", "--runs", "3"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "160"})


def test_uint8_int64_and_bool_inputs_inspect_and_bench(tmp_path) -> None:
    path = save_model(paddle_like.multi_input_model(), tmp_path / "multi.onnx")
    shape = ["--shape", "ids=1x6", "--shape", "mask=1x6"]
    r = invoke("inspect", path, *shape, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["inputs"] == {"image": [1, 3, 8, 8], "ids": [1, 6], "mask": [1, 6]}
    r = invoke("bench", path, *shape, "--runtime", "onnxruntime,openvino", *FAST, "--json")
    assert r.exit_code == 0, r.stderr
    assert [d["runtime"] for d in json.loads(r.stdout)] == ["onnxruntime", "openvino"]


def test_missing_dims_error_gives_a_shape_that_works(tmp_path) -> None:
    path = save_model(paddle_like.paddle_like_model(), tmp_path / "dyn.onnx")
    r = invoke("bench", path, *FAST)
    assert r.exit_code == 2 and "x[2]" in r.stderr and "x[3]" in r.stderr
    suggested = r.stderr.split("pass e.g. --shape ")[1].split()[0]
    assert suggested == "x=1x3x224x224"
    r = invoke("inspect", path, "--shape", suggested, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["macs"] == paddle_like.paddle_like_macs(224, 224)


def test_bench_takes_dynamic_dims_from_data(tmp_path) -> None:
    path = save_model(paddle_like.paddle_like_model(), tmp_path / "dyn.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((2, 3, 32, 48), dtype=np.float32))
    r = invoke("bench", path, "--data", tmp_path / "d.npz", *FAST, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["p50_ms"] > 0


def test_whole_network_inside_an_if_inspects_benches_and_refuses_prune(tmp_path) -> None:
    """silero-vad's layout (paddle_like.branchy_model): bench used to refuse ("onnxruntime cannot
    load the model"), inspect said 0 params, prune refused without saying why."""
    path = save_model(paddle_like.branchy_model(), tmp_path / "branchy.onnx")
    r = invoke("inspect", path, "--shape", "input=1x512", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["params"] == paddle_like.BRANCHY_PARAMS and "If_0" in r.stderr
    r = invoke("bench", path, "--shape", "input=1x512", "--runtime", "onnxruntime", *FAST, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["p50_ms"] > 0
    r = invoke("prune", path, "--ratio", "0.3", "--shape", "input=1x512", "-o", tmp_path / "p.onnx")
    assert r.exit_code == 2 and "control-flow subgraphs (If_0)" in r.stderr
    assert not (tmp_path / "p.onnx").exists()
