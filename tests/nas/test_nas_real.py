"""`hwopt search` on a real Paddle model (PP-OCR's direction classifier, opset 11, Constant weights).

The first real-model runs broke here: the ONNX space offered a 32x144 input that onnxruntime runs
(its final 2x2 MaxPool overhangs a 1-pixel-high map) but OpenVINO, x86's preferred runtime,
refuses to load, so building the latency table died on a raw OpenVINO error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from hwopt.cli import app
from hwopt.graph.load import load_model
from hwopt.graph.shapes import fix_input_shapes
from hwopt.nas.space import OnnxSpace, windows_fit

MODEL = Path(__file__).resolve().parents[1] / "data" / "ppocr_cls.onnx"
SHAPE = (1, 3, 48, 192)
runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    np.savez(root / "eval.npz", x=np.random.default_rng(0).random((8, *SHAPE[1:]), dtype=np.float32))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HWOPT_CACHE_DIR", str(root / "cache"))
        yield root


def _search(root, out, *extra):
    return runner.invoke(app, ["search", str(MODEL), "--target", "x86-avx512", "--latency-source", "predicted",
                               "--eval", str(root / "eval.npz"), "--shape", "x=1x3x48x192", "--subnets", "12",
                               "--generations", "20", "--refine-top", "2", "-o", str(out), *extra])


def test_windows_fit_rejects_an_overhanging_pool():
    model = load_model(MODEL)
    assert windows_fit(fix_input_shapes(model, {"x": SHAPE}))
    assert not windows_fit(fix_input_shapes(model, {"x": (1, 3, 32, 144)}))  # 2x2 MaxPool over a 1-high map


def test_space_offers_only_resolutions_every_runtime_loads():
    space = OnnxSpace(load_model(MODEL), {"x": SHAPE})
    assert space.res == [(40, 168), (48, 192)]
    assert len(space.groups) > 10 and len(space.blocks) > 3


def test_search_on_real_classifier_end_to_end(setup):
    root = setup
    probe = _search(root, root / "probe", "--latency-ms", "1000")
    assert probe.exit_code == 2 and "achievable range is" in probe.output and "Traceback" not in probe.output
    lo, hi = (float(v) for v in probe.output.split("achievable range is")[1].split("ms")[0].split(".."))
    budget = round(lo + 0.6 * (hi - lo), 4)
    out = root / "out"
    r = _search(root, out, "--latency-ms", str(budget), "--json")
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)["results"]
    assert res["runtime"] == "openvino" and res["latency_ms"] <= budget + 1e-9
    assert 0 <= res["accuracy"] <= 100 and 2 <= len(res["candidates"]) <= 2 * 3  # --refine-top 2, up to 3 rounds
    assert res["accuracy"] == max(c["accuracy"] for c in res["candidates"])  # predicted latency: all fit
    sub = onnx.load(out / res["onnx"])
    onnx.checker.check_model(sub, full_check=True)
    h, w = res["config"]["resolution"]
    x = np.random.default_rng(1).random((1, 3, h, w), dtype=np.float32)
    (y,) = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert y.shape == (1, 2)
