"""A search problem: a gene space plus how to measure, time and export one of its subnets.

Two kinds exist: a registered OFA supernet (subnets share trained weights) and an ONNX model's
elastic space (subnets are pruned / block-skipped / resized copies of the model). The search API
only talks to this interface.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

from hwopt.devices import DeviceProfile
from hwopt.nas.genes import AdditiveLatency, SearchSpace


class SubnetProblem(Protocol):
    space: SearchSpace
    source: str  # what is searched: a supernet name or a model path
    metric: str  # what `accuracy` returns, e.g. "top1" or "top1_agreement"
    cache_tag: str  # changes whenever the weights or the eval data change

    def accuracy(self, config: dict) -> float: ...

    def export(self, config: dict, path: Path) -> Path: ...

    def latency_model(self, device: DeviceProfile, runtime: str, timer) -> AdditiveLatency: ...


class SupernetProblem:
    """Subnets of a registered OFA supernet, judged on its held-out split."""

    metric = "top1"

    def __init__(self, name: str, seed: int = 0):
        from hwopt.nas.ofa_space import OFASearchSpace
        from hwopt.nas.supernets import load_supernet

        self.loaded = load_supernet(name)
        self.space = OFASearchSpace(self.loaded.spec)
        self.source = name
        digest = hashlib.sha1(self.loaded.entry.weights.read_bytes()).hexdigest()[:12]
        self.cache_tag = f"{name}-{digest}"

    def accuracy(self, config: dict) -> float:
        return self.loaded.accuracy(config)

    def export(self, config: dict, path: Path) -> Path:
        from hwopt.nas.ofa_space import export_subnet

        export_subnet(self.loaded.subnet(config), config["resolution"], path)
        return Path(path)

    def latency_model(self, device: DeviceProfile, runtime: str, timer) -> AdditiveLatency:
        return self.space.latency_model(self.loaded.net, timer, timer.overhead_ms(), target=device.name, runtime=runtime,
                                        provenance=timer.provenance())


def problem_for(*, model: str | os.PathLike | None, supernet: str | None, eval_data=None, shapes=None, seed: int = 0) -> SubnetProblem:
    if supernet is not None:
        return SupernetProblem(supernet, seed)
    from hwopt.nas.space import OnnxProblem

    return OnnxProblem(model, eval_data=eval_data, shapes=shapes, seed=seed)
