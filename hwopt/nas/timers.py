"""Where block latencies come from: the target's latency predictor, or measurement on this machine.

Both return a block's time *without* the per-inference overhead (session call, input/output
copies), which is added once per subnet; summing whole-model timings of isolated blocks would
count that overhead once per block and overshoot small models badly.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
from onnx import TensorProto, helper

from hwopt.devices import DeviceProfile
from hwopt.errors import HwoptError
from hwopt.graph.shapes import random_inputs, resolve_input_shapes
from hwopt.runtimes import get_runtime, time_session


class PredictedTimer:
    """Block ms from hwopt.latency (the device's table, learned predictor or calibrated roofline)."""

    source = "predicted"

    def __init__(self, device: DeviceProfile, runtime: str):
        self.device, self.runtime = device, runtime
        self._probe: dict | None = None

    def _predict(self, model: onnx.ModelProto):
        from hwopt.latency.predict import predict_latency

        return predict_latency(model, self.device, self.runtime)

    def __call__(self, model: onnx.ModelProto) -> float:
        pred = self._predict(model)
        if self._probe is None:
            self._probe = dict(pred.provenance)
            self._probe["overhead_ms"] = pred.latency_ms - sum(layer.latency_ms for layer in pred.layers)
        return float(sum(layer.latency_ms for layer in pred.layers))

    def overhead_ms(self) -> float:
        if self._probe is None:
            self(_identity_model())
        return float(self._probe["overhead_ms"])

    def provenance(self) -> dict:
        self.overhead_ms()
        return {"latency_source": self.source, **{k: v for k, v in (self._probe or {}).items() if k != "overhead_ms"}}

    def cache_key(self) -> dict:
        """What predicted block times depend on: the device's latency table (name, method, date, the
        runtime version it was measured with), not this machine."""
        prov = self.provenance()
        return {"source": self.source, "predictor": {k: v for k, v in prov.items() if k not in ("latency_source", "sources")}}


class MeasuredTimer:
    """Block ms measured here on `runtime` (1 thread, median of `runs`), minus the empty-model time."""

    source = "measured"

    def __init__(self, device: DeviceProfile, runtime: str, runs: int = 100, warmup: int = 10):
        if not device.present_here:
            raise HwoptError(f"target {device.name} is not this machine; its latency can only be predicted")
        self.device, self.runtime, self.runs, self.warmup = device, runtime, runs, warmup
        self.rt = get_runtime(runtime)
        if not self.rt.available():
            raise HwoptError(f"runtime {runtime} is not available here")
        self._overhead: float | None = None

    def model_ms(self, model: onnx.ModelProto, bursts: int = 5) -> float:
        """Whole-model ms (overhead included): the fastest of `bursts` burst medians.

        On a shared machine other processes only ever slow a run down, so the noise is one-sided;
        a single median taken while a neighbour is busy inflates some table cells and not others,
        and the search then picks exactly the blocks that happened to be timed fast (winner's
        curse) and lands over budget. The minimum over short bursts spread in time estimates the
        uncontended time. At most `runs` calls in all, fewer for slow models (about 0.2 s of
        timing, at least 3 per burst): a 50 ms real model needs no 100 calls.
        """
        session = self.rt.session(model, threads=1)
        feeds = random_inputs(model, resolve_input_shapes(model))
        probe = float(np.median(time_session(session, feeds, warmup=2, runs=3)))
        runs = int(min(self.runs, max(3 * bursts, 200.0 / max(probe, 1e-3))))
        per = max(3, runs // bursts)
        time_session(session, feeds, warmup=self.warmup, runs=1)
        medians = []
        for _ in range(bursts):
            medians.append(float(np.median(time_session(session, feeds, warmup=0, runs=per))))
            time.sleep(0.01)  # spread the bursts over more than one scheduler slice of a busy neighbour
        return min(medians)

    def overhead_ms(self) -> float:
        if self._overhead is None:
            self._overhead = self.model_ms(_identity_model())
        return self._overhead

    def __call__(self, model: onnx.ModelProto) -> float:
        return max(self.model_ms(model) - self.overhead_ms(), 0.0)

    def provenance(self) -> dict:
        return {"latency_source": self.source, **{k: v for k, v in self.cache_key().items() if k != "source"}}

    def cache_key(self) -> dict:
        """What measured block times depend on: this CPU, the runtime's version, threads and runs."""
        from hwopt.runtimes.base import host_device

        return {"source": self.source, "measured_on": host_device(), "runtime_version": self.rt.version(), "threads": 1,
                "runs": self.runs}


def _identity_model() -> onnx.ModelProto:
    """The smallest runnable model: what one inference costs when it computes nothing."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "one"], ["y"])], "empty", [x], [y], [one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def make_timer(device: DeviceProfile, runtime: str, source: str = "auto"):
    """`predicted` (hwopt.latency), `measured` (targets present here), or `auto`: measured when the
    target is this machine (real numbers beat any table), predicted otherwise."""
    if source not in ("predicted", "measured", "auto"):
        raise HwoptError(f"latency source must be auto, predicted or measured, not {source!r}")
    if source == "measured" or (source == "auto" and device.present_here):
        return MeasuredTimer(device, runtime)
    return PredictedTimer(device, runtime)
