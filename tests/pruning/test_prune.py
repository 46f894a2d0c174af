"""prune_model end to end: 30% on every zoo model (onnxruntime + OpenVINO), OBSPA, rounding, bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from hwopt.cli import app
from hwopt.data import Dataset
from hwopt.devices import load_device
from hwopt.models.zoo import ZOO
from hwopt.pruning import apply_pruning, build_groups, prepare_model, prune_model
from hwopt.pruning import obspa
from hwopt.runtimes import get_runtime


@pytest.mark.parametrize("name", sorted(ZOO))
def test_thirty_percent_runs_on_onnxruntime_and_openvino(zoo_model, name, run_model):
    """(b) 30% pruning validates (checker + ORT inside prune_model) and OpenVINO agrees with ORT."""
    _, proto, shape = zoo_model(name)
    result = prune_model(proto, 0.3)
    s = result.summary
    assert s["groups_pruned"] > 0 and s["macs_after"] < s["macs_before"] and s["params_after"] < s["params_before"]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ort_out = run_model(result.model, x)
    ov = get_runtime("openvino")
    if not ov.available():
        pytest.skip("OpenVINO not installed")
    sess = ov.session(result.model, threads=1, precision="fp32")
    np.testing.assert_allclose(sess.run({sess.input_names[0]: x})[0], ort_out, rtol=1e-3, atol=1e-3)


def _calib(shape, n=16):
    return Dataset({"input": np.random.default_rng(1).standard_normal((n, *shape[1:])).astype(np.float32)})


def test_obs_removing_zero_channels_changes_nothing(zoo_model, run_model, zero):
    """Channels whose consumer columns are zero cost nothing and need no compensation."""
    _, proto, shape = zoo_model("resnet_basic")
    model = prepare_model(proto)
    groups = build_groups(model, prepared=True)
    g = next(g for g in groups if g.prunable and g.channels >= 16)
    drop = np.array([1, 5, 9])
    zeroed = zero(model, g, drop, roles=("in", "out", "bias"))
    cons = obspa.consumers(zeroed, groups)
    hinv = obspa.inverses(obspa.collect_hessians(zeroed, cons, _calib(shape)))
    scores = obspa.obs_scores(zeroed, groups, cons, hinv)[g.id]
    assert np.allclose(scores[drop], 0) and (np.delete(scores, drop) > 0).all()
    keep = {g.id: np.setdiff1d(np.arange(g.channels), drop)}
    weights = obspa.obs_updates(zeroed, cons, hinv, keep, {g.id: g.channels})
    pruned = apply_pruning(zeroed, keep, groups, weights=weights)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(run_model(pruned, x), run_model(zeroed, x), atol=1e-5)


def test_obs_compensation_beats_plain_removal(zoo_model, run_model):
    """OBSPA's weight update lowers the output error of the same removal on calibration-like data."""
    _, proto, shape = zoo_model("resnet_basic")
    calib = _calib(shape, 32)
    x = calib.inputs["input"][:8]
    ref = run_model(proto, x)
    obs = prune_model(proto, 0.5, criterion="obs", calib=calib).model
    plain = prune_model(proto, 0.5, criterion="l2").model
    err = lambda m: float(np.mean((run_model(m, x) - ref) ** 2))  # noqa: E731
    assert err(obs) < err(plain)


def test_data_free_obs_and_global_ranking(zoo_model):
    _, proto, _ = zoo_model("mobilenet_v2")
    res = prune_model(proto, 0.4, criterion="obs", global_ranking=True)
    kept = {g["id"]: g["kept"] / g["channels"] for g in res.summary["per_group"]}
    assert len(set(np.round(list(kept.values()), 2))) > 1  # global ranking: unequal per-group ratios
    assert not res.summary["calibrated"]


def test_target_rounds_kept_channels(zoo_model):
    _, proto, _ = zoo_model("resnet18")
    multiple = load_device("x86-avx512").channel_multiple
    res = prune_model(proto, 0.3, target="x86-avx512")
    assert all(g["kept"] % multiple == 0 or g["kept"] == g["channels"] for g in res.summary["per_group"])


def test_exclude_keeps_node_whole(zoo_model):
    _, proto, _ = zoo_model("resnet_basic")
    stem = "/stem/stem.0/Conv" if any(n.name == "/stem/stem.0/Conv" for n in proto.graph.node) else proto.graph.node[0].name
    res = prune_model(proto, 0.3, exclude=[stem])
    assert all(stem not in g["members"] for g in res.summary["per_group"])


runner = CliRunner()


def test_cli_prune_json(zoo_model, tmp_path):
    import json

    path, _, _ = zoo_model("resnet_basic")
    out = tmp_path / "p.onnx"
    r = runner.invoke(app, ["prune", str(path), "--ratio", "0.3", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["macs_after"] < s["macs_before"] and s["latency_ms_after"] > 0
    onnx.checker.check_model(onnx.load(out), full_check=True)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ratio", "1.0"], "ratio"),
        (["--ratio", "-0.1"], "ratio"),
        (["--ratio", "0.3", "--exclude", "no_such_node"], "no_such_node"),
        (["--ratio", "0.3", "--criterion", "magic"], "criterion"),
        (["--ratio", "0.3", "--calib", "BAD"], "data"),
        (["--latency-ms", "1"], "target"),
        ([], "--ratio"),
    ],
)
def test_cli_bad_input_exit_2_input_untouched(zoo_model, tmp_path, args, message):
    path, _, _ = zoo_model("resnet_basic")
    before = path.read_bytes()
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((4, 3, 16, 16), np.float32))
    args = [str(bad) if a == "BAD" else a for a in args]
    r = runner.invoke(app, ["prune", str(path), "-o", str(tmp_path / "o.onnx"), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert path.read_bytes() == before and not (tmp_path / "o.onnx").exists()


def test_no_prunable_group_is_a_clear_error(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    from hwopt.errors import HwoptError

    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [w],
    )
    with pytest.raises(HwoptError, match="no prunable"):
        prune_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), 0.3)


def test_kd_finetune_moves_pruned_model_toward_teacher(zoo_model, run_model):
    _, proto, shape = zoo_model("resnet_basic")
    calib = _calib(shape, 32)
    x = calib.inputs["input"][:16]
    ref = run_model(proto, x)
    plain = prune_model(proto, 0.5).model
    tuned = prune_model(proto, 0.5, calib=calib, finetune_epochs=3).model
    err = lambda m: float(np.mean((run_model(m, x) - ref) ** 2))  # noqa: E731
    assert err(tuned) < err(plain)
    assert [i.name for i in tuned.graph.input] == [i.name for i in proto.graph.input]


def test_latency_budget_bisects_on_a_present_target(zoo_model):
    from hwopt.devices import list_devices
    from hwopt.pruning.prune import measure_latency_ms

    here = [d for d in list_devices().values() if d.present_here]
    if not here:
        pytest.skip("no device profile is present on this machine")
    _, proto, _ = zoo_model("resnet_basic")
    budget = 5 * measure_latency_ms(proto)  # generous: shared machines are noisy
    res = prune_model(proto, None, latency_ms=budget, target=here[0])
    assert 0.0 <= res.summary["ratio"] <= 0.9 and res.summary["macs_after"] <= res.summary["macs_before"]
