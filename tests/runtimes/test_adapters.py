"""Runtime adapters: same outputs across runtimes, honest precision reports, clear 'not available'."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from hwopt.errors import HwoptError, NotAvailableError
from hwopt.graph.load import load_model
from hwopt.graph.shapes import random_inputs, resolve_input_shapes
from hwopt.runtimes import RUNTIMES, Session, get_runtime, summarize, time_rounds, time_session, timing_clock

openvino = pytest.importorskip("openvino")


def _feeds(path: Path, batch: int = 4) -> dict[str, np.ndarray]:
    model = load_model(path)
    shapes = {k: (batch, *v[1:]) for k, v in resolve_input_shapes(model).items()}
    return random_inputs(model, shapes, seed=3)


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def test_onnxruntime_and_openvino_agree_on_tiny_model(tiny_model_path) -> None:
    feeds = _feeds(tiny_model_path)
    ort_out = get_runtime("onnxruntime").session(tiny_model_path).run(feeds)
    ov_out = get_runtime("openvino").session(tiny_model_path, precision="fp32").run(feeds)
    assert len(ort_out) == len(ov_out) == 1
    np.testing.assert_allclose(ov_out[0], ort_out[0], atol=1e-4, rtol=1e-4)


def test_onnxruntime_and_openvino_agree_on_examples(example_model) -> None:
    feeds = _feeds(example_model)
    ort_sess = get_runtime("onnxruntime").session(example_model)
    ov_sess = get_runtime("openvino").session(load_model(example_model), precision="fp32")  # proto input too
    assert ort_sess.input_names == ov_sess.input_names == ["input"]
    assert ort_sess.output_names == ov_sess.output_names == ["logits"]
    a, b = ort_sess.run(feeds)[0], ov_sess.run(feeds)[0]
    assert a.shape == (4, 10)
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)


def test_openvino_reports_the_precision_that_ran(tiny_model_path) -> None:
    rt = get_runtime("openvino")
    assert rt.session(tiny_model_path, precision="fp32").precision == "fp32"
    bf16 = rt.session(tiny_model_path, precision="bf16")
    if _cpu_has_bf16():
        assert bf16.precision == "bf16"
    else:  # OpenVINO falls back to f32 where the CPU has no bf16, and says so
        assert bf16.precision == "fp32"
    with pytest.raises(HwoptError, match="precision"):
        rt.session(tiny_model_path, precision="fp8")


@pytest.mark.skipif(not _cpu_has_bf16(), reason="CPU without bf16")
def test_openvino_bf16_really_changes_the_numbers(example_model) -> None:
    """bf16 is OpenVINO's silent default on this CPU; fp32 must be bit-closer to onnxruntime than bf16."""
    feeds = _feeds(example_model, batch=8)
    ref = get_runtime("onnxruntime").session(example_model).run(feeds)[0]
    f32 = get_runtime("openvino").session(example_model, precision="fp32").run(feeds)[0]
    bf16 = get_runtime("openvino").session(example_model, precision="bf16").run(feeds)[0]
    assert np.abs(f32 - ref).max() < np.abs(bf16 - ref).max()
    assert (bf16.argmax(1) == ref.argmax(1)).mean() >= 0.75


def test_tensorrt_is_not_available_here(tiny_model_path) -> None:
    rt = get_runtime("tensorrt")
    if rt.available():
        pytest.skip("TensorRT is installed on this machine")
    with pytest.raises(NotAvailableError, match="not available"):
        rt.session(tiny_model_path)


def test_unknown_runtime_lists_known_ones() -> None:
    with pytest.raises(HwoptError) as info:
        get_runtime("tvm")
    assert all(name in str(info.value) for name in RUNTIMES)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_runtimes_refuse_foreign_files(name, tmp_path) -> None:
    other = tmp_path / "model.tflite"
    other.write_bytes(b"x")
    with pytest.raises(HwoptError, match="runs"):
        get_runtime(name).session(other)


def test_broken_model_is_hwopt_error_on_both(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    for name in ("onnxruntime", "openvino"):
        with pytest.raises(HwoptError, match="cannot load"):
            get_runtime(name).session(bad)


def test_timing_and_summary(tiny_model_path) -> None:
    sess = get_runtime("onnxruntime").session(tiny_model_path, threads=1)
    times = time_session(sess, _feeds(tiny_model_path, batch=1), warmup=2, runs=20)
    assert times.shape == (20,) and (times > 0).all()
    res = summarize(times, sess, warmup=2, version="v")
    assert res.runs == 20 and res.threads == 1 and res.runtime == "onnxruntime"
    assert res.min_ms <= res.p50_ms <= res.p90_ms <= res.p99_ms
    assert res.p50_ms == pytest.approx(float(np.median(times)))


class _FakeSession(Session):
    """A session whose call either sleeps (waits like a throttled process) or spins (works)."""

    runtime, precision, input_names, output_names = "fake", "fp32", [], []

    def __init__(self, threads: int = 1, spin: bool = False, on_host_cpu: bool = True):
        self.threads, self.spin, self.on_host_cpu = threads, spin, on_host_cpu

    def run(self, feeds):
        end = time.perf_counter() + 0.004
        if not self.spin:
            time.sleep(0.004)
        while self.spin and time.perf_counter() < end:
            pass
        return []


def test_cpu_clock_leaves_out_waiting_and_keeps_work():
    sleeper, spinner = _FakeSession(), _FakeSession(spin=True)
    assert np.median(time_session(sleeper, {}, warmup=0, runs=5, clock="wall")) >= 3.9
    assert np.median(time_session(sleeper, {}, warmup=0, runs=5, clock="cpu")) < 1.0  # waiting is not our latency
    assert np.median(time_session(spinner, {}, warmup=0, runs=5, clock="cpu")) > 2.0  # spinning is
    assert np.median(time_session(sleeper, {}, warmup=0, runs=5, clock="auto")) < 1.0  # 1 thread on this CPU: cpu
    with pytest.raises(ValueError, match="clock"):
        time_session(sleeper, {}, runs=1, clock="gpu")


def test_time_rounds_times_everyone_every_round_in_a_new_order_and_can_stop_early():
    order: list[str] = []

    class Logged(_FakeSession):
        def __init__(self, name):
            super().__init__(spin=True)
            self.name = name

        def run(self, feeds):
            order.append(self.name)
            return super().run(feeds)

    sessions = {n: Logged(n) for n in "abcd"}
    per = time_rounds(sessions, {}, rounds=6, runs=2, warmup=1)
    assert set(per) == set("abcd") and all(len(v) == 6 and v[0].shape == (2,) for v in per.values())
    rounds = [order[i:i + 12] for i in range(0, len(order), 12)]  # 4 sessions x (1 warm-up + 2 runs)
    firsts = [r[0] for r in rounds]
    assert all(sorted(set(r)) == list("abcd") for r in rounds) and len(set(firsts)) > 1  # shuffled, not fixed
    stopped = time_rounds(sessions, {}, rounds=6, runs=1, keep_going=lambda done, seconds: done < 2)
    assert all(len(v) == 2 for v in stopped.values())


def test_timing_clock_is_cpu_only_for_one_host_thread(tiny_model_path):
    assert timing_clock(_FakeSession()) == "cpu"
    assert timing_clock(_FakeSession(threads=2)) == "wall"  # CPU time adds up across threads
    assert timing_clock(_FakeSession(on_host_cpu=False)) == "wall"  # a GPU's work is not CPU time
    ort = get_runtime("onnxruntime")
    assert timing_clock(ort.session(tiny_model_path)) == "cpu"
    assert timing_clock(ort.session(tiny_model_path, threads=2)) == "wall"


def test_openvino_load_error_names_the_failing_ops(tiny_model_path, monkeypatch) -> None:
    """OpenVINO's message starts with a C++ source location; the user needs the summary naming the ops."""
    text = ("Exception from src/inference/src/cpp/core.cpp:92:\nCheck 'false' failed at src/frontends/onnx/frontend/"
            "src/frontend.cpp:165:\nFrontEnd API failed with GeneralFailure:\n-- Conv-16: The input data tensor's "
            "rank has to be known (static)\nConversion is failed for: Conv-16, ReduceMean-16\n")

    class FailingCore:
        def read_model(self, *args):
            raise RuntimeError(text)

    monkeypatch.setattr(openvino, "Core", FailingCore)
    with pytest.raises(HwoptError) as err:
        get_runtime("openvino").session(tiny_model_path)
    assert str(err.value).startswith("OpenVINO cannot load the model: Conversion is failed for: Conv-16, ReduceMean-16")
    assert "src/" not in str(err.value) and "\n" not in str(err.value)
