"""Weight-sharing fine-tune of an ONNX model's space (sandwich rule + KD) on the example digits data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hwopt.errors import HwoptError
from hwopt.nas.finetune import SharedWeights
from hwopt.nas.genes import sizes
from hwopt.nas.space import OnnxProblem

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODEL, CALIB, EVAL = EXAMPLES / "mobilenet_digits.onnx", EXAMPLES / "calib.npz", EXAMPLES / "eval.npz"

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="example models not built")


def test_shared_subnet_reproduces_extracted_subnet():
    """Gathered shared weights give exactly the extracted subnet's outputs (the index trick is right)."""
    torch.set_num_threads(1)
    problem = OnnxProblem(MODEL, eval_data=EVAL, limit=8)
    space = problem.space
    n = sizes(space.genes)
    cfg = space.decode(np.array([min(1, k - 1) for k in n]))  # mid widths, blocks kept, a smaller resolution
    shared = SharedWeights(space)
    x = problem._inputs_at(tuple(cfg["resolution"]))[space.input]
    with torch.no_grad():
        got = shared.subnet(cfg)(shared.tensors, torch.from_numpy(x))[0].numpy()
    want = problem._run(space.extract(cfg), {space.input: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_finetune_lifts_a_shrunk_subnet_and_keeps_the_full_model():
    """Trained on calib.npz, measured on eval.npz: a 0.75-width subnet gains real accuracy."""
    torch.set_num_threads(1)
    problem = OnnxProblem(MODEL, eval_data=EVAL)
    n = sizes(problem.space.genes)
    mid, full = problem.space.decode(n // 2), problem.space.decode(n - 1)
    before_mid, before_full = problem.accuracy(mid), problem.accuracy(full)
    tag = problem.cache_tag
    stats = problem.finetune(CALIB, epochs=2, lr=1e-3, seed=0)
    after_mid, after_full = problem.accuracy(mid), problem.accuracy(full)
    assert problem.cache_tag != tag  # measurements of the old weights must not be reused
    assert stats["loss_last"] < stats["loss_first"]
    assert after_mid >= before_mid + 5.0, (before_mid, after_mid)
    assert after_full >= before_full - 3.0, (before_full, after_full)


def test_finetune_options_are_checked():
    from hwopt.nas.api import search

    with pytest.raises(HwoptError, match="--finetune-data"):
        search(MODEL, target="x86-avx512", latency_ms=1.0, eval_data=EVAL, out_dir="unused", finetune_epochs=1)
    with pytest.raises(HwoptError, match="supernets are already trained"):
        search(supernet="ofa-mbv3-digits", target="x86-avx512", latency_ms=1.0, out_dir="unused", finetune_epochs=1)
